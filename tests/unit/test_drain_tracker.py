"""The drained verdict: nothing new to copy, nothing in flight, an empty source seen, for the whole quiet period."""

from __future__ import annotations

from bridge.cutover.drain import DrainTracker, RouteView


def view(backlog: int = 0, in_flight: int = 0, received: int = 100, up: bool = True, paused: bool = False) -> RouteView:
    return RouteView(backlog=backlog, in_flight=in_flight, received=received, source_up=up, paused=paused)


def test_drained_only_after_the_quiet_period_with_an_empty_source() -> None:
    tracker = DrainTracker(quiet_for=10)
    assert not tracker.observe(0, [view(backlog=5, in_flight=5)])
    assert not tracker.observe(1, [view()])
    assert tracker.remaining(6) == 5
    assert not tracker.observe(10.9, [view()])
    assert tracker.observe(11, [view()])


def test_new_messages_in_flight_paused_or_an_unknown_backlog_restart_the_quiet_period() -> None:
    tracker = DrainTracker(quiet_for=5)
    tracker.observe(0, [view(received=1)])
    assert not tracker.observe(4, [view(received=2)])  # a producer still publishes to the legacy broker
    assert tracker.new_messages
    assert not tracker.observe(8, [view(received=2, in_flight=1)])
    assert not tracker.observe(9, [view(received=2, up=False)])
    assert not tracker.observe(9.5, [view(received=2, paused=True)])
    assert not tracker.observe(10, [view(received=2)])
    assert not tracker.new_messages
    assert tracker.observe(15, [view(received=2)])


def test_a_source_never_seen_empty_is_not_drained_but_one_empty_look_is_enough() -> None:
    # Reverse-route traffic into the legacy broker keeps the backlog above zero at most looks.
    tracker = DrainTracker(quiet_for=3)
    for second in range(10):
        assert not tracker.observe(second, [view(backlog=2)])
    assert tracker.observe(10, [view(backlog=0)])  # quiet since 0, and now an empty look
    assert tracker.observe(11, [view(backlog=3)])
    tracker.observe(12, [view(backlog=0, in_flight=1)])  # busy: the quiet period starts again
    assert not tracker.observe(13, [view(backlog=2)])
    assert not tracker.observe(20, [view(backlog=2)])  # quiet long enough, but never seen empty since
    assert tracker.observe(21, [view(backlog=0)])


def test_every_route_counts_and_a_service_without_running_routes_is_not_drained() -> None:
    tracker = DrainTracker(quiet_for=1)
    assert not tracker.observe(0, [])
    tracker.observe(1, [view(), view(in_flight=1)])
    assert not tracker.observe(3, [view(), view(in_flight=1)])
    tracker.observe(4, [view(), view()])
    assert tracker.observe(5, [view(), view()])
