"""A route's running totals: what metrics, /status and the health monitor read of a pipeline.

Plain counters in their own module, so everything that bumps them (lanes, rejections, the
loop) and everything that reads them imports a value type, not the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.latency import LatencyHistogram


@dataclass(slots=True)
class RouteStats:
    """Running totals for one route; metrics and /status read these, nothing on the hot path
    does more than add to them."""

    received: int = 0
    published: int = 0  # stored in their stream (duplicates included)
    duplicates: int = 0
    skipped: int = 0  # filtered at the source or skipped by `on_error: skip`
    filtered: int = 0
    already_stored: int = 0
    reread: int = 0  # positions a source handed over again within one assignment (dropped)
    recopied: int = 0  # positions settled at the source but missing from JetStream, read again
    retries: int = 0
    reordered: int = 0  # records JetStream stored after a later record of their lane
    last_reorder: str = ""
    failures: int = 0
    failures_by_kind: dict[str, int] = field(default_factory=dict)
    dead_lettered: dict[str, int] = field(default_factory=dict)
    last_error: str = ""
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    @property
    def settled(self) -> int:
        """Messages done with, however: progress is this number going up."""
        return self.published + self.skipped + self.already_stored + sum(self.dead_lettered.values())
