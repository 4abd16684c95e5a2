"""What is settled and checkpointed, and when: the only place the source hears "done up to here".

A lane's watermark moves as its PubAcks arrive (bridge.pipeline.lanes); the `Settler` collects
the lanes that moved and, every `settle_interval` (or after the source's own batch size), writes
their checkpoints and then settles the source by their watermarks — in the background, so
publishing never waits for a commit. `checkpoint` says what a lane's checkpoint vouches for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from nats.errors import Error as NatsError

from bridge.jetstream.publisher import JetStreamPublisher
from bridge.pipeline.lanes import LaneState
from bridge.pipeline.settings import Checkpointer
from bridge.sources.base import Lane, Source
from bridge.stored import Checkpoint

log = logging.getLogger(__name__)


def checkpoint(lane: LaneState, highest_seq: dict[str, int]) -> Checkpoint | None:
    """`lane`'s checkpoint: its watermark, and per stream the lowest sequence at which a message
    of the lane past the watermark could already be stored (`highest_seq`: the publisher's last
    sequence per stream)."""
    if lane.watermark is None:
        return None
    floors: dict[str, int] = {}
    if lane.seq:
        floors[lane.stream] = lane.seq
    for entry in lane.entries:
        if entry.settled:
            if entry.seq:
                floors[entry.stream] = min(entry.seq, floors.get(entry.stream, entry.seq))
        elif entry.floor and entry.floor_stream:
            # Not acknowledged yet, but it may be stored: above the stream's highest
            # sequence known when it was first sent (a resent watermark message can be
            # stored after it, so the watermark's own sequence is no floor for it).
            stream = entry.floor_stream
            floors[stream] = min(entry.floor + 1, floors.get(stream, entry.floor + 1))
    scan_from = dict(lane.scan_from)
    if lane.watermark >= lane.known_through:
        scan_from.update(floors)  # everything known before this run is at or below the watermark
        if not any(entry.attempts and not entry.settled for entry in lane.entries):
            # Nothing past the watermark was ever sent, so no message of the lane past it is
            # stored anywhere: streams the lane left no floor in (the dead-letter stream, one
            # it stopped publishing to) move on to their last known sequence, or a new owner
            # would rescan them from where the lane was first seen.
            for stream, start in scan_from.items():
                if stream not in floors:
                    end = max(highest_seq.get(stream, 0), lane.seen_end.get(stream, 0))
                    scan_from[stream] = max(start, end + 1)
    else:
        # Messages found stored after the loaded checkpoint may still lie above the
        # watermark: keep looking from where that checkpoint said, or lower.
        for stream, seq in floors.items():
            scan_from[stream] = min(seq, scan_from.get(stream, seq))
    return Checkpoint(max(lane.watermark, lane.loaded_through), scan_from)


class Settler:
    """Settles one route's source by its lanes' watermarks, checkpoints first, one settle at a time."""

    def __init__(
        self,
        route_key: str,
        source: Source,
        publisher: JetStreamPublisher,
        checkpoints: Checkpointer | None,
        *,
        interval: float,
        wake: Callable[[], None],
    ) -> None:
        self._route_key = route_key
        self._source = source
        self._publisher = publisher
        self.checkpoints = checkpoints
        self._interval = interval
        self._wake = wake
        self._settle_after = source.settle_after
        self._settled_since = 0
        self._last_settle = 0.0
        self._settling: asyncio.Task[None] | None = None
        self._progress = asyncio.Event()
        self._progressed: set[LaneState] = set()

    @property
    def scope(self) -> str:
        """Whose positions the checkpoints record: the route, and the source's own identity
        (a consumer group, a vhost's queue) — a new group or another vhost starts afresh."""
        return f"{self._route_key}|{self._source.checkpoint_scope}"

    def progressed(self, lane: LaneState, count: int = 1) -> None:
        """`lane`'s watermark moved over `count` messages (a LaneHost call, from a PubAck)."""
        self._progressed.add(lane)
        self._progress.set()
        self._settled_since += count
        if self._settle_after is not None and self._settled_since >= self._settle_after:
            self._wake()

    async def wait_for_progress(self, seconds: float) -> bool:
        """Wait until some lane settles more, up to `seconds`; False when the time is up."""
        if seconds <= 0:
            return False
        self._progress.clear()
        try:
            await asyncio.wait_for(self._progress.wait(), seconds)
        except TimeoutError:
            return False
        return True

    @property
    def due(self) -> bool:
        """Lanes moved, and the interval is over or the source asked for a settle by now."""
        return bool(self._progressed) and (
            time.monotonic() - self._last_settle >= self._interval
            or (self._settle_after is not None and self._settled_since >= self._settle_after)
        )

    def include(self, lanes: Iterable[LaneState]) -> None:
        """Settle these lanes next time whether or not they moved (the final settle)."""
        self._progressed.update(lanes)

    def forget(self, lane: LaneState) -> None:
        """A revoked lane: its new owner settles it from now on."""
        self._progressed.discard(lane)

    def in_background(self) -> None:
        """Settle without holding up publishing: checkpoint writes and commits take milliseconds."""
        if self._settling is not None and not self._settling.done():
            return  # one settle at a time; the next one carries the later watermarks
        checkpoints, watermarks = self._snapshot()
        if watermarks:
            self._settling = asyncio.create_task(self._apply(checkpoints, watermarks), name="settle")

    async def settle(self) -> None:
        """Settle now, after any settle already under way (shutdown and revocation use this)."""
        if self._settling is not None:
            await self._settling
        checkpoints, watermarks = self._snapshot()
        if watermarks:
            await self._apply(checkpoints, watermarks)

    def _snapshot(self) -> tuple[dict[Lane, Checkpoint], dict[Lane, int]]:
        """Watermarks and checkpoints of the lanes that moved, taken together at one instant."""
        lanes = [lane for lane in self._progressed if lane.watermark is not None]
        self._progressed.clear()
        self._last_settle = time.monotonic()
        self._settled_since = 0
        checkpoints: dict[Lane, Checkpoint] = {}
        if self._checkpointing:  # computing one walks the lane's entries: not for nothing
            highest = self._publisher.highest_seq
            checkpoints = {lane.key: cp for lane in lanes if (cp := checkpoint(lane, highest)) is not None}
        watermarks = {lane.key: lane.watermark for lane in lanes if lane.watermark is not None}
        return checkpoints, watermarks

    @property
    def _checkpointing(self) -> bool:
        return self.checkpoints is not None and self._source.stable_positions

    async def _apply(self, checkpoints: dict[Lane, Checkpoint], watermarks: dict[Lane, int]) -> None:
        # The checkpoint is written before the source is settled: a crash in between only
        # means a restart scans a little more.
        await self._save(checkpoints)
        await self._source.settle(watermarks)

    async def checkpoint_lanes(self, lanes: list[LaneState]) -> None:
        """Write these lanes' checkpoints now (revoked lanes: the source settles them itself)."""
        if not self._checkpointing:
            return
        highest = self._publisher.highest_seq
        await self._save({lane.key: cp for lane in lanes if (cp := checkpoint(lane, highest)) is not None})

    async def _save(self, checkpoints: dict[Lane, Checkpoint]) -> None:
        if self.checkpoints is None or not checkpoints or not self._checkpointing:
            return
        try:
            await self.checkpoints.save(self.scope, checkpoints)
        except (NatsError, TimeoutError) as error:
            # Settling the source anyway is safe: a restart scans from the older checkpoint,
            # which only means a longer scan. Losing the route to a KV hiccup is not.
            log.warning("route %s: checkpoint not saved (%s); the next settle retries", self._route_key, error)
