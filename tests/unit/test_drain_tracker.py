"""The drained verdict: empty, nothing in flight, nothing new, for the whole quiet period."""

from __future__ import annotations

from bridge.cutover.drain import DrainTracker, RouteView


def view(backlog: int = 0, in_flight: int = 0, received: int = 100, up: bool = True) -> RouteView:
    return RouteView(backlog=backlog, in_flight=in_flight, received=received, source_up=up)


def test_drained_only_after_the_quiet_period_of_an_empty_source() -> None:
    tracker = DrainTracker(quiet_for=10)
    assert not tracker.observe(0, [view(backlog=5)])
    assert not tracker.observe(1, [view()])
    assert tracker.remaining(6) == 5
    assert not tracker.observe(10.9, [view()])
    assert tracker.observe(11, [view()])


def test_new_messages_in_flight_or_an_unknown_backlog_restart_the_quiet_period() -> None:
    tracker = DrainTracker(quiet_for=5)
    tracker.observe(0, [view(received=1)])
    assert not tracker.observe(4, [view(received=2)])  # a producer still publishes to the legacy broker
    assert tracker.new_messages
    assert not tracker.observe(8, [view(received=2, in_flight=1)])
    assert not tracker.observe(9, [view(received=2, up=False)])
    assert not tracker.observe(10, [view(received=2)])
    assert tracker.observe(15, [view(received=2)])


def test_every_route_counts_and_a_service_without_running_routes_is_not_drained() -> None:
    tracker = DrainTracker(quiet_for=1)
    assert not tracker.observe(0, [])
    tracker.observe(1, [view(), view(backlog=1)])
    assert not tracker.observe(3, [view(), view(backlog=1)])
    tracker.observe(4, [view(), view()])
    assert tracker.observe(5, [view(), view()])
