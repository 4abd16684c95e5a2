"""An in-memory source that really implements the Source contract.

Used by tests (and later dry-runs) to drive the pipeline without a legacy broker: lanes are
lists of messages, `settle` records watermarks the way a broker would record acks, and a
"restart" is a new MemorySource re-reading from the settled watermarks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from bridge.message import SourceMessage
from bridge.sources.base import Lane, LaneOwner, Received, lane_label


class MemorySource:
    """Lanes of messages, fetched in order; positions are list indexes."""

    stable_positions = True
    settle_after: int | None = None
    checkpoint_scope = "memory"
    unread: int | None = None

    def __init__(
        self,
        lanes: Mapping[Lane, Sequence[SourceMessage | None]],
        *,
        settled: Mapping[Lane, int] | None = None,
        name: str = "memory",
    ) -> None:
        self.name = name
        self.lanes = {lane: list(messages) for lane, messages in lanes.items()}
        self.settled: dict[Lane, int] = dict(settled or {})
        self.paused = False
        self.closed = False
        self.pauses = 0
        self._next = {lane: self.settled.get(lane, -1) + 1 for lane in self.lanes}
        self._owner: LaneOwner | None = None

    async def start(self, owner: LaneOwner) -> None:
        self._owner = owner
        await owner.lanes_assigned(list(self.lanes))

    async def fetch(self, max_messages: int, wait: float) -> Sequence[Received]:
        if self.paused:
            await asyncio.sleep(wait)
            return []
        batch: list[Received] = []
        for lane, messages in self.lanes.items():
            start = self._next[lane]
            end = min(len(messages), start + max_messages - len(batch))
            batch.extend(Received(lane, position, messages[position]) for position in range(start, end))
            self._next[lane] = end
            if len(batch) >= max_messages:
                break
        if not batch:
            await asyncio.sleep(wait)
        return batch

    async def settle(self, watermarks: Mapping[Lane, int]) -> None:
        for lane, position in watermarks.items():
            if position < self.settled.get(lane, -1):
                raise AssertionError(f"watermark of {lane} moved back from {self.settled[lane]} to {position}")
            self.settled[lane] = position

    def pause(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume(self) -> None:
        self.paused = False

    async def close(self) -> None:
        self.closed = True

    async def backlog(self) -> dict[str, int]:
        """Per lane, messages not yet settled (as Kafka lag counts from the committed offset)."""
        return {
            lane_label(lane): len(messages) - 1 - self.settled.get(lane, -1) for lane, messages in self.lanes.items()
        }

    reconnects = 0

    def exhausted(self) -> bool:
        """Every message read and settled."""
        return all(self.settled.get(lane, -1) == len(messages) - 1 for lane, messages in self.lanes.items())
