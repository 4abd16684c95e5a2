"""Sending: which queued messages of which lanes go to the publisher now, and how.

Three orderings, one rule each (see bridge.pipeline): `pipelined` sends a lane's queue in
order within the publisher's window, `strict` keeps one publish in flight per lane, and
`batched` one atomic batch per lane (stored whole or not at all). After a failure a lane
resends its head alone (`probing`), then the rest once it is stored. A lane backing off is
resent here when its back-off is over; a stream that refuses atomic batches is remembered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence

from bridge.config.streams import StreamConfig
from bridge.jetstream.publisher import JetStreamPublisher
from bridge.pipeline.entries import SKIPPED, LaneEntry
from bridge.pipeline.lanes import LaneState
from bridge.pipeline.settings import PipelineSettings
from bridge.pipeline.stats import RouteStats
from bridge.streams import streams_capturing

log = logging.getLogger(__name__)

# An atomic batch is staged whole on the server before it is stored: a few MiB at most, so a lane of
# large messages sends smaller batches rather than one of 500 x max_payload.
ATOMIC_BATCH_BYTES = 4 << 20


class Sender:
    """Hands one route's queued messages to the shared publisher, lane by lane, in lane order.

    `has_work` holds the lanes with something queued; `settings` may change once, when a stream
    refuses atomic batches and the route falls back to pipelined (`atomic_refused`).
    """

    def __init__(
        self,
        route_key: str,
        publisher: JetStreamPublisher,
        settings: PipelineSettings,
        stats: RouteStats,
        streams: Sequence[StreamConfig],
        stopped: asyncio.Event,
    ) -> None:
        self._route_key = route_key
        self._publisher = publisher
        self.settings = settings
        self._stats = stats
        self._streams = list(streams)  # the file's streams: which one a subject goes to (atomic batches)
        self._stream_keys: dict[str, str] = {}
        self._unbatchable: set[str] = set()  # stream keys whose stream refused an atomic batch
        self._stopped = stopped  # set when the route stops: ends the publisher's waits for it
        self.has_work: set[LaneState] = set()

    def queue(self, lane: LaneState) -> None:
        """`lane` has messages queued for sending (`has_work` is replaced after each pump: add here)."""
        self.has_work.add(lane)

    @property
    def ordering(self) -> str:
        """The ordering this route runs with now (a default-batched route may have fallen back)."""
        if self.settings.atomic_batch:
            return "batched"
        return "strict" if self.settings.max_in_flight_per_lane == 1 else "pipelined"

    async def pump(self) -> None:
        """Send what lanes have queued, in lane order, within each lane's in-flight limit."""
        if not self.has_work:
            return
        if self.settings.atomic_batch:
            await self._pump_batches(self.settings.atomic_batch)
            return
        limit = self.settings.max_in_flight_per_lane or (1 << 62)
        batch: list[LaneEntry] = []
        for lane in self.has_work:
            unsent = lane.unsent
            stream = lane.stream
            highest = self._publisher.highest_seq.get(stream, 0) if stream else 0
            lane_limit = 1 if lane.probing else limit
            while unsent and not lane.retrying and lane.in_flight < lane_limit:
                entry = unsent.popleft()
                if entry.outbound is SKIPPED:
                    continue  # its fate is being decided (dead letter or stop); it is queued again then
                if not entry.floor and highest:
                    entry.floor_stream = stream
                    entry.floor = highest
                batch.append(entry)
                lane.in_flight += 1
        self.has_work = {lane for lane in self.has_work if lane.unsent and not lane.retrying}
        if batch:
            self._requeue(await self._publisher.publish(batch, abandon=self._stopped))

    def _requeue(self, returned: list[LaneEntry]) -> None:
        """Once stopping, the publisher waits for neither NATS nor window space: what it did not
        hand over goes back to the front of its lane, unsent (the drain may still send it, and
        the watermark stops short of it otherwise)."""
        for entry in reversed(returned):
            owner = entry.owner
            if isinstance(owner, LaneState) and not owner.revoked:
                owner.in_flight -= 1
                owner.unsent.appendleft(entry)
                self.has_work.add(owner)

    async def _pump_batches(self, size: int) -> None:
        """ordering: batched — from each lane with nothing in flight, its next messages for one
        stream as one atomic batch (up to `size`), or after a failure its next message alone.
        One batch in flight per lane keeps the lane's order through any fault: the server stores
        a batch whole or not at all, so no later message is stored before an earlier one."""
        singles: list[LaneEntry] = []
        groups: list[list[LaneEntry]] = []
        for lane in self.has_work:
            if lane.retrying or lane.in_flight:
                continue
            unsent = lane.unsent
            highest = self._publisher.highest_seq.get(lane.stream, 0) if lane.stream else 0
            group: list[LaneEntry] = []
            key = ""
            payload = 0
            while unsent and len(group) < size:
                entry = unsent[0]
                if entry.outbound is SKIPPED:
                    unsent.popleft()  # its fate is being decided (dead letter or stop); queued again then
                    continue
                entry_key = self._stream_key(entry.outbound.subject)
                payload += len(entry.outbound.payload)
                alone = (
                    entry.position <= lane.singles_through or bool(entry.dead_letter) or entry_key in self._unbatchable
                )
                if group and (entry_key != key or alone or payload > ATOMIC_BATCH_BYTES):
                    break
                key = entry_key
                unsent.popleft()
                if not entry.floor and highest:
                    entry.floor_stream = lane.stream
                    entry.floor = highest
                group.append(entry)
                if alone:
                    # After a failed batch; a dead letter, which a person may republish with its
                    # headers (a batch's stored Nats-Batch-Id would make that a broken batch);
                    # a stream without allow_atomic.
                    break
            lane.in_flight += len(group)
            if len(group) == 1:
                singles.extend(group)  # one message in flight cannot be overtaken: a plain publish
            elif group:
                groups.append(group)
        self.has_work = {lane for lane in self.has_work if lane.unsent and not lane.retrying}
        if singles:
            self._requeue(await self._publisher.publish(singles, abandon=self._stopped))
        if groups:
            self._requeue(await self._publisher.publish_atomic(groups, abandon=self._stopped))

    def atomic_refused(self, subject: str) -> None:
        """The stream capturing `subject` refuses atomic batches (not declared by this file, so
        without allow_atomic). A route that asked for `ordering: batched` sends there one message
        at a time, as `ordering: strict` does; a route left to the default goes pipelined."""
        if not self.settings.atomic_batch:
            return
        if not self.settings.atomic_required:
            self.settings = dataclasses.replace(self.settings, atomic_batch=0)
            log.warning(
                "route %s: the stream capturing '%s' does not allow atomic batch publishes (allow_atomic); "
                "the route publishes pipelined from now on, and a stream leader stopping without lame duck "
                "mode can reorder its records. Declare the stream in the mapping file (or set allow_atomic "
                "on it) to keep the order, or give the route `ordering: strict`",
                self._route_key,
                subject,
            )
            return
        key = self._stream_key(subject)
        if key not in self._unbatchable:
            self._unbatchable.add(key)
            log.warning(
                "route %s: the stream capturing '%s' does not allow atomic batch publishes (allow_atomic); "
                "its messages are sent one at a time (as with ordering: strict)",
                self._route_key,
                subject,
            )

    def _stream_key(self, subject: str) -> str:
        """What an atomic batch may hold together: the one file stream that captures `subject`,
        else the subject itself (a stream the file does not declare, or an overlap)."""
        key = self._stream_keys.get(subject)
        if key is None:
            found = streams_capturing(subject, self._streams)
            key = f"stream:{found[0].name}" if len(found) == 1 else f"subject:{subject}"
            if len(self._stream_keys) < 10_000:
                self._stream_keys[subject] = key
        return key

    def retry_due(self, lanes: Iterable[LaneState]) -> None:
        """Queue again every unsettled message of each lane whose back-off is over (while connected)."""
        now = time.monotonic()
        for lane in lanes:
            if not lane.retrying or lane.retry_at > now or not self._publisher.connected:
                continue
            self._publisher.forget(lane.rewind())
            self._stats.retries += 1
            self.has_work.add(lane)
