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
"""

from __future__ import annotations

from dataclasses import dataclass


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
