"""A publish-latency histogram cheap enough to update once per message.

prometheus-client's Histogram takes a lock and walks its buckets per observation; at tens
of thousands of messages a second that is measurable. This one is a bisect and two adds on
the event loop's thread, turned into a Prometheus histogram only when scraped.
"""

from __future__ import annotations

from bisect import bisect_left

# Seconds: sub-millisecond PubAcks on a quiet local server up to multi-second stalls.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LatencyHistogram:
    """Counts per bucket (non-cumulative; the last slot is +Inf) and the running sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, cumulative count) pairs as Prometheus exposes them, ending with +Inf."""
        pairs: list[tuple[str, int]] = []
        total = 0
        for bound, count in zip((*(f"{b:g}" for b in BUCKETS), "+Inf"), self.counts, strict=True):
            total += count
            pairs.append((bound, total))
        return pairs

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding quantile `q` (None without observations)."""
        total = self.count
        if not total:
            return None
        rank = q * total
        seen = 0
        for bound, count in zip((*BUCKETS, float("inf")), self.counts, strict=True):
            seen += count
            if seen >= rank:
                return bound
        return float("inf")
