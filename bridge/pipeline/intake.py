"""What a route reads: each message decided (bridge.decide) and queued on its lane, or settled at once.

A new lane is first prepared: the route's checkpoints say what of it is already stored, and
those positions are settled without a publish. A lane's positions only grow while it is
assigned, so one handed over again is dropped. Positions the source had settled and JetStream
has lost (a restored NATS store) are copied again, marked as such.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol

from nats.errors import Error as NatsError

from bridge.deadletters import DeadLetterReason
from bridge.decide import DecideContext, Fate, decide
from bridge.errors import RouteStoppedError
from bridge.jetstream.publisher import JetStreamPublisher
from bridge.mapping import CompiledRoute
from bridge.pipeline.entries import SKIPPED, LaneEntry, mark_recopied
from bridge.pipeline.lanes import LaneHost, LaneState
from bridge.pipeline.rejections import Rejections
from bridge.pipeline.sending import Sender
from bridge.pipeline.settings import Checkpointer
from bridge.pipeline.stats import RouteStats
from bridge.sources.base import Lane, Received, Source, lane_label
from bridge.stored import StoredIndex

log = logging.getLogger(__name__)


class CheckpointScope(Protocol):
    """Who knows whose positions the checkpoints record (the Settler)."""

    @property
    def scope(self) -> str:
        """Whose positions the checkpoints record (bridge.pipeline.settling)."""


class Intake:
    """Takes fetched batches into one route's lanes; knows what of each lane is already stored."""

    def __init__(
        self,
        route: CompiledRoute,
        host: LaneHost,
        source: Source,
        publisher: JetStreamPublisher,
        stats: RouteStats,
        lanes: dict[Lane, LaneState],
        sender: Sender,
        rejections: Rejections,
        *,
        checkpoints: Checkpointer | None,
        scope: CheckpointScope,
        fail: Callable[[RouteStoppedError], None],
    ) -> None:
        self._route = route
        self._host = host
        self._source = source
        self._publisher = publisher
        self._stats = stats
        self._lanes = lanes
        self._sender = sender
        self._rejections = rejections
        self._checkpoints = checkpoints
        self._scope = scope
        self._fail = fail
        self.stored = StoredIndex()
        # Per lane, the ranges being copied again because JetStream lost them (missing_before).
        self._recopying: dict[Lane, list[tuple[int, int]]] = {}
        self._preparing: set[Lane] = set()
        self._prepared = asyncio.Event()
        self._prepared.set()
        self._stopping = False

    async def prepare(self, lanes: Collection[Lane]) -> Mapping[Lane, int]:
        """The LaneOwner call `lanes_assigned`: read what of these lanes is already stored."""
        checkpoints = self._checkpoints
        if checkpoints is None or not lanes or not self._source.stable_positions:
            return {}
        # aiokafka may already fetch from new partitions while this runs: the reader holds
        # back their messages until it is known what of them is already stored.
        self._preparing.update(lanes)
        self._prepared.clear()
        settings = self._host.settings
        deadline = time.monotonic() + settings.prepare_timeout
        backoff = settings.retry_backoff_initial
        while True:
            try:
                index = await checkpoints.stored(self._scope.scope, lanes, self._route)
                break
            except (NatsError, TimeoutError) as error:
                if time.monotonic() + backoff > deadline:
                    # Reading on without knowing what is stored could store messages twice:
                    # stop the route instead (nothing is settled; a restart tries again).
                    self._fail(
                        RouteStoppedError(
                            f"route {self._route.key}: cannot read checkpoints from NATS ({error}); stopping"
                        )
                    )
                    return {}
                log.warning("route %s: reading checkpoints failed (%s); retrying", self._route.key, error)
                await asyncio.sleep(backoff)
                backoff = min(settings.retry_backoff_max, backoff * 2)
        self.stored.update(index)
        self._preparing.difference_update(lanes)
        if not self._preparing:
            self._prepared.set()
        return {lane: index.through[lane] for lane in lanes if lane in index.through}

    async def prepared(self, batch: Sequence[Received]) -> bool:
        """Wait until the lanes of `batch` are prepared; False when the route stops first."""
        while self._preparing and any(received.lane in self._preparing for received in batch):
            await self._prepared.wait()
            if self._stopping:
                return False
        return True

    def stop(self) -> None:
        """The route stops: a reader holding back unprepared lanes returns without them."""
        self._stopping = True
        self._prepared.set()

    def missing_before(self, lane: Lane, position: int) -> list[tuple[int, int]]:
        """The LaneOwner call: positions below `position` the source settled and no stream holds."""
        stored = self.stored
        through = stored.through.get(lane)
        if through is None or through < 0 or position <= through + 1:
            return []
        found = sorted(p for p in stored.positions.get(lane, ()) if through < p < position)
        ranges: list[tuple[int, int]] = []
        expected = through + 1
        for present in [*found, position]:
            if present > expected:
                ranges.append((expected, present - 1))
            expected = present + 1
        if ranges:
            self._stats.recopied += sum(last - first + 1 for first, last in ranges)
            self._recopying.setdefault(lane, []).extend(ranges)
        return ranges

    def _recopied(self, lane: Lane, position: int) -> bool:
        """Is this a record copied again after JetStream lost it? It lands after later records of
        its lane, and says so (verify's order check then knows it is late on purpose)."""
        ranges = self._recopying.get(lane)
        if not ranges or not any(first <= position <= last for first, last in ranges):
            return False
        if position >= ranges[-1][1]:
            del self._recopying[lane]  # positions only grow within an assignment: done with it
        return True

    def accept(self, batch: Sequence[Received]) -> None:
        """Decide each message (`bridge.decide`) and queue it on its lane (sending happens in the Sender)."""
        route = self._route
        lanes = self._lanes
        stored = self.stored
        has_work = self._sender.has_work  # replaced only by a pump, never while this runs
        # Streams are left to the server: a running bridge may publish into one its file does not
        # declare (a subject nothing captures is found from the publish's answer).
        publisher = self._publisher
        context = DecideContext(
            max_payload=publisher.max_payload,
            subject_room=publisher.subject_room,
            max_control_line=publisher.max_control_line,
        )
        recopied = dataclasses.replace(context, mark=mark_recopied) if self._recopying else context
        self._stats.received += len(batch)
        for received in batch:
            lane = lanes.get(received.lane)
            if lane is None:
                lane = lanes[received.lane] = LaneState(received.lane, self._host, stored)
            if lane.read_through is not None and received.position <= lane.read_through:
                # A lane's positions only grow while it is assigned; one handed over again is
                # already in this lane (a client re-fetch, a stream consumer restarting at its
                # chunk's start) and publishing it twice could store it twice.
                self._reread(lane, received.position)
                continue
            lane.read_through = received.position
            message = received.message
            if message is None or stored.contains(received.lane, received.position):
                self._settle_unsent(lane, received.position, filtered=message is None)
                continue
            late = bool(self._recopying) and self._recopied(received.lane, received.position)
            verdict = decide(route, message, recopied if late else context)
            outbound = verdict.outbound
            if verdict.fate is Fate.PUBLISH and outbound is not None:
                entry = LaneEntry(outbound, lane, received.position)
                lane.entries.append(entry)
                lane.unsent.append(entry)
                has_work.add(lane)
            elif verdict.fate is Fate.FILTERED:
                self._settle_unsent(lane, received.position, filtered=True)
            elif outbound is None:
                entry = LaneEntry(SKIPPED, lane, received.position)
                lane.entries.append(entry)
                reason = verdict.reason or DeadLetterReason.UNMAPPABLE
                self._rejections.unmappable(lane, entry, message, verdict.detail, reason)
            else:
                entry = LaneEntry(outbound, lane, received.position)
                lane.entries.append(entry)
                self._rejections.refused(lane, entry, verdict.reason or DeadLetterReason.UNMAPPABLE, verdict.detail)

    def _settle_unsent(self, lane: LaneState, position: int, *, filtered: bool) -> None:
        """A message never published: filtered (a source could not hand it over, or the route does
        not copy it), or already stored by an earlier run."""
        entry = LaneEntry(SKIPPED, lane, position)
        lane.entries.append(entry)
        if filtered:
            self._stats.skipped += 1
            self._stats.filtered += 1
        else:
            self._stats.already_stored += 1
        lane.settle_now(entry)

    def _reread(self, lane: LaneState, position: int) -> None:
        if not self._stats.reread:
            log.warning(
                "route %s lane %s: the source handed over position %d again (read through %s); dropped",
                self._route.key,
                lane_label(lane.key),
                position,
                lane.read_through,
            )
        self._stats.reread += 1
