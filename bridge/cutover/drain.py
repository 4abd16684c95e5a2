"""When is a draining service drained? Pure logic, fed by the bridge's own view every second.

Drained means: for `quiet_for` seconds, none of the service's forward routes received a
message it would copy, none had one in flight or was paused, and at some look within that
period every route's source was empty (Kafka: no lag on any partition; RabbitMQ: an empty
queue). "Received nothing it would copy" is what catches a producer still publishing to the
legacy broker: its messages are copied at once, so the backlog alone could read 0 at every
look. Messages a reverse route wrote into the legacy broker are filtered by the forward route
and do not count; they do keep the backlog above zero now and then, which is why an empty
source is required at *some* look rather than at every one: everything published before that
look was read, and nothing copyable was read since.

That is one instance's view, of the partitions it owns. With several instances sharing a Kafka
group, an instance that owns no partition sees nothing waiting and would call the service drained
while another still has a backlog. So each instance reports the lanes it saw empty and quiet
(`DrainReports`, kept per instance in the phase record), and the service is drained only when
those reports together cover every lane of every route (`uncovered`): for Kafka every partition
of the route's topics, reported by the instance that owned it; for a RabbitMQ queue, whose depth
is one figure for the whole queue, one instance's report (`WHOLE`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

from bridge.cutover.phases import PhaseRecord


@dataclass(slots=True)
class RouteView:
    """One forward route as the bridge sees it now."""

    backlog: int  # waiting at the source
    in_flight: int  # read and not yet settled
    received: int  # ever received and not filtered (a counter of messages it would copy)
    source_up: bool  # the backlog figure is current
    paused: bool = False  # JetStream refuses or is away: the source is not being read


@dataclass(slots=True)
class DrainTracker:
    """Feed `observe` regularly; it says when the service has been empty and quiet long enough."""

    quiet_for: float
    quiet_since: float | None = None
    received: int | None = None
    empty_seen: bool = False  # every source was empty at a look since quiet_since
    new_messages: bool = False  # the last observation saw messages to copy arrive

    def observe(self, now: float, routes: list[RouteView]) -> bool:
        received = sum(route.received for route in routes)
        self.new_messages = self.received is not None and received != self.received
        self.received = received
        busy = (
            not routes
            or self.new_messages
            or any(not route.source_up or route.in_flight > 0 or route.paused for route in routes)
        )
        if busy:
            self.quiet_since = None
            self.empty_seen = False
            return False
        if self.quiet_since is None:
            self.quiet_since = now
        if all(route.backlog == 0 for route in routes):
            self.empty_seen = True
        return self.empty_seen and now - self.quiet_since >= self.quiet_for

    def remaining(self, now: float) -> float:
        """Seconds of quiet still needed (the whole period while busy)."""
        if self.quiet_since is None:
            return self.quiet_for
        return max(0.0, self.quiet_for - (now - self.quiet_since))


WHOLE = "*"  # the lane of a source whose backlog is one figure for everyone (a RabbitMQ queue)

# instance -> route (`service/route`) -> lanes it owned and saw empty and quiet
DrainReports = Mapping[str, Mapping[str, Collection[str]]]


def uncovered(required: Mapping[str, Collection[str]], reports: DrainReports) -> dict[str, set[str]]:
    """Per route, the lanes of `required` that no instance's report covers (empty: drained)."""
    seen: dict[str, set[str]] = {}
    for report in reports.values():
        for route, lanes in report.items():
            seen.setdefault(route, set()).update(lanes)
    missing: dict[str, set[str]] = {}
    for route, lanes in required.items():
        left = set(lanes) - seen.get(route, set())
        if left:
            missing[route] = left
    return missing


def without(reports: DrainReports, lanes: Mapping[str, Collection[str]]) -> dict[str, dict[str, list[str]]]:
    """`reports` with `lanes` (per route) taken out of every instance's report.

    The instance that owns a lane now is its authority: when it sees messages to copy there, a
    report that lane was empty — its own, or one left by an instance that owned it before a
    rebalance or that died — no longer holds.
    """
    kept: dict[str, dict[str, list[str]]] = {}
    for instance, report in reports.items():
        routes = {route: sorted(set(reported) - set(lanes.get(route, ()))) for route, reported in report.items()}
        routes = {route: left for route, left in routes.items() if left}
        if routes:
            kept[instance] = routes
    return kept


def next_drain_record(
    record: PhaseRecord,
    instance: str,
    owned: Mapping[str, Collection[str]],
    required: Mapping[str, Collection[str]] | None,
    *,
    quiet: bool,
    active: bool,
) -> tuple[PhaseRecord, dict[str, set[str]] | None]:
    """One instance's step on a draining service's record: the record as it should be now, and
    the lanes still uncovered (None while the routes' partitions are not all known).

    `owned`: per route, the lanes this instance owns; `required`: every lane of every route;
    `quiet`: its DrainTracker says its part stayed empty and quiet; `active`: it saw messages to
    copy (or some wait unread). Active, it withdraws every report of its lanes; quiet, it reports
    them, added to what it reported before (lanes it owned then were seen empty by their owner; a
    rebalance does not make that untrue, and their new owner withdraws them if it finds messages).
    An instance that owns nothing and reported nothing vouches for nothing. The verdict,
    `drained_at`, follows the coverage — but only where this instance knows every lane, so one
    that has just started (no metadata yet) never withdraws a verdict it cannot judge.
    """
    reports: dict[str, dict[str, list[str]]] = {
        name: {route: list(lanes) for route, lanes in report.items()} for name, report in record.drain_reports.items()
    }
    if active:
        reports = without(reports, owned)
    elif quiet:
        mine = {route: set(lanes) for route, lanes in reports.get(instance, {}).items()}
        for route, lanes in owned.items():
            mine.setdefault(route, set()).update(lanes)
        if any(mine.values()):
            reports[instance] = {route: sorted(lanes) for route, lanes in mine.items() if lanes}
    changed = replace(record, drain_reports=reports)
    missing = uncovered(required, reports) if required is not None else None
    if missing is not None:
        if not missing and record.drained_at is None:
            changed = changed.drained(instance)
        elif missing and record.drained_at is not None:
            changed = changed.undrained()
    return changed, missing


def lanes_text(missing: Mapping[str, Collection[str]], limit: int = 10) -> str:
    """`route: lane, lane; route: ...` for logs, at most `limit` lanes named."""
    parts = []
    named = 0
    for route, lanes in sorted(missing.items()):
        ordered = sorted(lanes)
        shown = ordered[: max(0, limit - named)]
        named += len(shown)
        more = f" and {len(ordered) - len(shown)} more" if len(shown) < len(ordered) else ""
        parts.append(f"{route}: {', '.join(shown)}{more}")
    return "; ".join(parts)
