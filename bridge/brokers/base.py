"""What every broker package offers the features, so status, cut-over, verify and the runner ask
one route's broker rather than switching on its config type.

    RouteBroker.source()    the route's source connector (its own group, its own queue)
    RouteBroker.backlog()   what waits at the source for the route, read from outside the bridge
    RouteBroker.retire()    remove what the bridge itself created for the route
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from bridge.sources.base import Source


@dataclass(slots=True)
class Backlog:
    """Per lane (`topic/partition`, or the queue) what waits at the source; `error` when unknown.
    `lanes` is empty and `note` says why for sources without a backlog figure (stream queues)."""

    lanes: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    note: str | None = None

    @property
    def total(self) -> int:
        return sum(self.lanes.values())


class RouteBroker(Protocol):
    """One route's source broker. Made by `bridge.brokers.route_broker`, the one place that looks
    at which broker a route reads."""

    def source(self) -> Source:
        """The route's source connector, not yet started."""
        ...

    async def backlog(self) -> Backlog:
        """Read-only, asked of the broker directly (an operator's command must not depend on a
        bridge answering, and with several instances no single one sees every lane); never
        raises for a broker problem: the Backlog's `error` says it."""
        ...

    async def retire(self, *, delete_offsets: bool) -> str:
        """Remove what the bridge created for the route and nothing of the legacy side's; one
        sentence saying what was done or kept. Never raises for a broker problem."""
        ...
