"""When is a draining service drained? Pure logic, fed by the bridge's own view every second.

Drained means: for `quiet_for` seconds, every one of the service's forward routes had nothing
waiting at its source (Kafka: no lag on any partition; RabbitMQ: an empty queue), nothing in
flight in the bridge, and received nothing new. "Received nothing new" is what catches a
producer still publishing to the legacy broker: its messages are copied at once, so the
backlog alone could read 0 at every look.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class RouteView:
    """One forward route as the bridge sees it now."""

    backlog: int  # waiting at the source
    in_flight: int  # read and not yet settled
    received: int  # ever received (a counter)
    source_up: bool  # the backlog figure is current


@dataclass(slots=True)
class DrainTracker:
    """Feed `observe` regularly; it says when the service has been empty and quiet long enough."""

    quiet_for: float
    quiet_since: float | None = None
    received: int | None = None
    new_messages: bool = False  # the last observation saw messages arrive

    def observe(self, now: float, routes: list[RouteView]) -> bool:
        received = sum(route.received for route in routes)
        self.new_messages = self.received is not None and received != self.received
        busy = (
            not routes
            or any(not route.source_up or route.backlog > 0 or route.in_flight > 0 for route in routes)
            or self.new_messages
        )
        self.received = received
        if busy:
            self.quiet_since = None
            return False
        if self.quiet_since is None:
            self.quiet_since = now
        return now - self.quiet_since >= self.quiet_for

    def remaining(self, now: float) -> float:
        """Seconds of quiet still needed (the whole period while busy)."""
        if self.quiet_since is None:
            return self.quiet_for
        return max(0.0, self.quiet_for - (now - self.quiet_since))
