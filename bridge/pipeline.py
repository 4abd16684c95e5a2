"""(4) SETTLE: read -> map -> publish -> settle. The only place that decides a message is done.

One `RoutePipeline` runs per route: it fetches batches from the route's source, maps each
message (a pure function), hands them to the shared publisher, and settles the source by
per-lane watermarks once JetStream has acknowledged everything below them.

Order within a lane is kept by three rules:

1. A lane's messages are published in source order.
2. When any publish of a lane fails, the lane stops sending; after a back-off it resends
   every unsettled message of the lane, in order, with the same Nats-Msg-Id (JetStream
   drops the ones it already stored). Newer messages of the lane wait behind them.
3. The source is settled only up to the first unsettled message (the watermark), so a
   crash re-reads exactly what is not known to be stored.

After a failure a lane resends its first unsettled message alone (`probing`) and the rest
only once it is stored: a whole window resent while a clustered stream elects a leader would
otherwise be refused at its head and stored from its tail. What can still reorder a pipelined
route: JetStream refusing message k's first attempt with an error reply while storing k+1 (both in
flight), or a stream leader stopping gracefully, dropping k and passing k+1 on. `ordering: batched`
(one atomic batch in flight per lane, stored whole or not at all; the default into replicated
streams) and `ordering: strict` (one publish in flight per lane) rule both out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from nats.errors import Error as NatsError

from bridge.config.routes import OnError
from bridge.config.streams import StreamConfig
from bridge.deadletters import DeadLetter, DeadLetterReason, DeadLetters, fits
from bridge.decide import DecideContext, Fate, decide
from bridge.errors import BridgeError, SourceUnreachableError
from bridge.headers import RECOPIED_HEADER
from bridge.jetstream.publisher import InFlight, JetStreamPublisher, PublishFailure
from bridge.latency import LatencyHistogram
from bridge.mapping import CompiledRoute
from bridge.message import OutboundMessage, SourceMessage
from bridge.sources.base import Lane, Received, Source, lane_label
from bridge.stored import Checkpoint, StoredIndex
from bridge.streams import streams_capturing

log = logging.getLogger(__name__)

_SKIPPED = OutboundMessage(subject="", payload=b"", msg_id="")


class RouteStoppedError(BridgeError):
    """A route met a message it must not pass over (`on_error: stop`); nothing was settled past it."""


# An atomic batch is staged whole on the server before it is stored: a few MiB at most, so a lane of
# large messages sends smaller batches rather than one of 500 x max_payload.
ATOMIC_BATCH_BYTES = 4 << 20
# nats-server's JSAtomicPublishDisabledErr: the stream has no allow_atomic.
ATOMIC_PUBLISH_DISABLED = 10174

# A source whose broker does not answer at start is tried again after 1 s, doubling to 5 s: as
# soon after its return as the RabbitMQ source's reconnects (bridge.sources.rabbitmq).
START_RETRY_INITIAL = 1.0
START_RETRY_MAX = 5.0


@dataclass(slots=True)
class PipelineSettings:
    """Tuning of one route's pipeline; the defaults suit a shared 2-core machine."""

    batch_size: int = 500
    fetch_timeout: float = 0.1
    max_unsettled: int = 20_000
    settle_interval: float = 0.5
    drain_timeout: float = 10.0
    retry_backoff_initial: float = 0.1
    retry_backoff_max: float = 5.0
    max_in_flight_per_lane: int = 0  # 0: bounded only by the publisher's window
    # ordering: batched — a lane sends up to this many messages as one JetStream atomic batch,
    # one batch in flight at a time (0: off). Consecutive messages for one stream go together.
    atomic_batch: int = 0
    # The route asked for `ordering: batched` itself: a stream refusing atomic batches gets its
    # messages one at a time (order kept). False (the default ordering): the route goes pipelined.
    atomic_required: bool = True
    prepare_timeout: float = 30.0  # how long new lanes may wait for their checkpoints


class PayloadStore(Protocol):
    """Where a dead letter's payload goes when it is too large for a NATS message (an object store)."""

    async def put(self, name: str, payload: bytes) -> None: ...


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


# Records per lane and stream remembered to name the ones a reordered record overtook: enough for
# what one failure puts out of place (about 16 per partition measured), small enough that a
# route over a thousand partitions keeps a few MB, not hundreds (the count says "at least" then).
_ORDER_MEMORY = 128


def _stored_by_this_run(entry: InFlight) -> bool:
    """Whether `entry`'s sequence tells about this run's order: stored now, or a duplicate of
    an earlier attempt of this run (sent above a known floor, stored above it). A duplicate on
    the first attempt was stored before (a restart, a redelivery): its old sequence says
    nothing about order now."""
    if not entry.duplicate:
        return True
    return entry.attempts > 1 and entry.floor > 0 and entry.seq > entry.floor and entry.stream != ""


class LaneState:
    """One lane's unsettled messages in source order, and its watermark.

    `entries` holds every message read and not yet settled, in source order; `unsent` the
    ones waiting for (re)sending. Implements the publisher's PublishOwner: outcomes come
    back here as plain method calls.
    """

    __slots__ = (
        "backoff",
        "entries",
        "in_flight",
        "key",
        "known_through",
        "loaded_through",
        "pipeline",
        "probing",
        "read_through",
        "retry_at",
        "retrying",
        "revoked",
        "scan_from",
        "seen_end",
        "seq",
        "singles_through",
        "stored_order",
        "stream",
        "unsent",
        "watermark",
    )

    def __init__(self, key: Lane, pipeline: RoutePipeline) -> None:
        self.key = key
        self.pipeline = pipeline
        self.entries: deque[InFlight] = deque()
        self.unsent: deque[InFlight] = deque()
        self.watermark: int | None = None  # highest position known stored, with all before it
        self.read_through: int | None = None  # highest position the source handed over
        self.seq = 0  # stream sequence of the message at the watermark
        self.stream = ""  # and the stream that holds it
        index = pipeline.stored_index
        self.scan_from: dict[str, int] = dict(index.scan_from.get(key, {}))
        # Per stream, its last sequence when the lane was assigned: everything of the lane at
        # or below it was found by the scan (or there was nothing to find, for a new lane).
        self.seen_end: dict[str, int] = dict(index.ends.get(key, {}))
        # What the checkpoint read at assignment already vouches for: a checkpoint written while
        # the watermark is still below it (the source resumed from an older commit) must not
        # vouch for less, or a later restart would store again what lies in between.
        self.loaded_through = index.through.get(key, -1)
        self.known_through = max(self.loaded_through, max(index.positions.get(key, ()), default=-1))
        self.retrying = False
        self.revoked = False
        self.retry_at = 0.0
        self.backoff = 0.0
        self.in_flight = 0
        # After a failure the lane resends its first unsettled message alone and pipelines the
        # rest only once JetStream stored it: a burst resent while a clustered stream elects a
        # leader would otherwise get 503 for its head and be stored from its tail, out of order.
        self.probing = False
        # ordering: batched — after a failed batch its messages are resent one at a time (which
        # finds the one a stream refuses, and takes stored ones as duplicates), up to this position.
        self.singles_through = -1
        # Per stream, the last records this run stored, as (position, sequence) in position
        # order: a record stored at a lower sequence than an earlier one is a reorder.
        self.stored_order: dict[str, deque[tuple[int, int]]] = {}

    def sendable(self, entry: InFlight) -> bool:
        """Asked by the publisher just before sending: a lane waiting to resend sends nothing
        newer, or a later message could be stored before an earlier one; a revoked lane sends
        nothing more (its new owner reads it again)."""
        return not self.retrying and not self.revoked

    def published(self, entry: InFlight, seq: int, duplicate: bool) -> None:
        self.in_flight -= 1
        self.probing = False  # JetStream stores again: the rest of the lane may follow, pipelined
        if self.unsent:
            self.pipeline.lane_has_work(self)
        if entry.settled:
            return
        entry.settled = True
        entry.seq = seq
        entry.duplicate = duplicate
        self.pipeline.refusing_since = None
        stats = self.pipeline.stats
        if entry.dead_letter:
            stats.dead_lettered[entry.dead_letter] = stats.dead_lettered.get(entry.dead_letter, 0) + 1
        else:
            stats.published += 1
            stats.latency.observe(time.monotonic() - entry.sent_at)
        if duplicate:
            stats.duplicates += 1
        self.backoff = 0.0
        self._advance()

    def failed(self, entry: InFlight, failure: PublishFailure) -> None:
        self.in_flight -= 1
        if entry.settled:
            return
        pipeline = self.pipeline
        stats = pipeline.stats
        stats.failures += 1
        stats.failures_by_kind[failure.kind] = stats.failures_by_kind.get(failure.kind, 0) + 1
        stats.last_error = str(failure)
        if failure.err_code == ATOMIC_PUBLISH_DISABLED:
            pipeline.atomic_refused(entry.outbound.subject)
        if failure.permanent:
            pipeline.refused(self, entry, DeadLetterReason.REFUSED, str(failure))
            return
        if pipeline.refusing_since is None:
            # The refusal began when the message went out unanswered (a timeout says so late).
            pipeline.refusing_since = entry.sent_at or time.monotonic()
        if not self.retrying:
            if failure.kind == "no-responders":
                # JetStream down, or no stream captures the subject: only the second is
                # this message's fault. Asked once per retry cycle, not per message.
                pipeline.check_captured(self, entry)
            self.retrying = True
            settings = pipeline.settings
            self.backoff = min(settings.retry_backoff_max, max(settings.retry_backoff_initial, self.backoff * 2))
            self.retry_at = time.monotonic() + self.backoff
            log.warning(
                "route %s lane %s: publish failed (%s); resending from position %d in %.1fs",
                pipeline.route.key,
                lane_label(self.key),
                failure,
                entry.position,
                self.backoff,
            )
            pipeline.wake()

    def rewind(self) -> list[InFlight]:
        """Queue every unsettled message for resending, in order; return them (to forget)."""
        pending = [entry for entry in self.entries if not entry.settled and entry.outbound is not _SKIPPED]
        self.unsent = deque(pending)
        self.in_flight = 0
        self.retrying = False
        self.probing = bool(pending)
        if pending and self.pipeline.settings.atomic_batch:
            self.singles_through = max(self.singles_through, pending[-1].position)
        return pending

    def settle_now(self, entry: InFlight) -> None:
        """Mark an entry done without a publish (filtered, skipped, or already stored)."""
        entry.settled = True
        self._advance()

    def _advance(self) -> None:
        entries = self.entries
        moved = 0
        while entries and entries[0].settled:
            done = entries.popleft()
            self.watermark = done.position
            if done.seq:
                self.seq = done.seq
                self.stream = done.stream
                if _stored_by_this_run(done):
                    self._check_order(done)
            moved += 1
        if moved:
            self.pipeline.lane_progressed(self, moved)

    def _check_order(self, done: InFlight) -> None:
        """Did JetStream store `done` ahead of records before it? Settling runs in position
        order, so a sequence lower than an earlier record's is exactly that. It happens when a
        stream leader stops gracefully (SIGTERM) with publishes in flight: it drops some it
        had received while a later one reaches the new leader, and the resends of the dropped
        ones are stored after it."""
        recent = self.stored_order.get(done.stream)
        if recent is None:
            recent = self.stored_order[done.stream] = deque(maxlen=_ORDER_MEMORY)
        if recent and done.seq < recent[-1][1]:
            overtaken = [(position, seq) for position, seq in recent if seq > done.seq]
            self.pipeline.reordered(self, done, overtaken)
        recent.append((done.position, done.seq))

    def checkpoint(self) -> Checkpoint | None:
        """This lane's checkpoint: its watermark, and per stream the lowest sequence at which a
        message of the lane past the watermark could already be stored."""
        if self.watermark is None:
            return None
        floors: dict[str, int] = {}
        if self.seq:
            floors[self.stream] = self.seq
        for entry in self.entries:
            if entry.settled:
                if entry.seq:
                    floors[entry.stream] = min(entry.seq, floors.get(entry.stream, entry.seq))
            elif entry.floor and entry.stream:
                # Not acknowledged yet, but it may be stored: above the stream's highest
                # sequence known when it was first sent (a resent watermark message can be
                # stored after it, so the watermark's own sequence is no floor for it).
                floors[entry.stream] = min(entry.floor + 1, floors.get(entry.stream, entry.floor + 1))
        scan_from = dict(self.scan_from)
        if self.watermark >= self.known_through:
            scan_from.update(floors)  # everything known before this run is at or below the watermark
            if not any(entry.attempts and not entry.settled for entry in self.entries):
                # Nothing past the watermark was ever sent, so no message of the lane past it is
                # stored anywhere: streams the lane left no floor in (the dead-letter stream, one
                # it stopped publishing to) move on to their last known sequence, or a new owner
                # would rescan them from where the lane was first seen.
                highest = self.pipeline.publisher.highest_seq
                for stream, start in scan_from.items():
                    if stream not in floors:
                        end = max(highest.get(stream, 0), self.seen_end.get(stream, 0))
                        scan_from[stream] = max(start, end + 1)
        else:
            # Messages found stored after the loaded checkpoint may still lie above the
            # watermark: keep looking from where that checkpoint said, or lower.
            for stream, seq in floors.items():
                scan_from[stream] = min(seq, scan_from.get(stream, seq))
        return Checkpoint(max(self.watermark, self.loaded_through), scan_from)


def _mark_recopied(outbound: OutboundMessage) -> OutboundMessage:
    return dataclasses.replace(outbound, headers={**outbound.headers, RECOPIED_HEADER: "lost"})


@dataclass(slots=True)
class _Rejection:
    """A message that cannot go where its route says; `_handle_rejections` decides its fate."""

    lane: LaneState
    entry: InFlight
    reason: DeadLetterReason
    error: str
    message: SourceMessage | None = None  # unmappable: the source message as read
    outbound: OutboundMessage | None = None  # refused: the message as mapped


class Checkpointer(Protocol):
    """Where a route remembers what it stored, to resume exactly beyond the duplicate window.

    Implemented in bridge.jetstream.checkpoints; declared here so the pipeline depends only
    on the two calls it makes.
    """

    async def stored(self, scope: str, lanes: Collection[Lane], route: CompiledRoute) -> StoredIndex:
        """What `route` already stored for these lanes (checkpointed, and found after the
        checkpoint: only its own messages, never another route's copies of the same positions)."""

    async def save(self, scope: str, checkpoints: Mapping[Lane, Checkpoint]) -> None:
        """Record each lane's watermark, after its PubAcks and before the source is settled."""


async def _cancel_until_done(task: asyncio.Future[Any]) -> None:
    """Cancel `task` and wait for it to end, cancelling it again every 0.1 s while it runs: a
    client library can swallow a cancellation (in Python 3.11 asyncio.wait_for returns the inner
    outcome when a cancellation arrives just as it completes), and a source's reconnect loop then
    went on until its broker came back. Its outcome is left in the task."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.1)


class RoutePipeline:
    """Runs one route: its source, its mapping, and its share of the publisher."""

    def __init__(
        self,
        route: CompiledRoute,
        source: Source,
        publisher: JetStreamPublisher,
        settings: PipelineSettings | None = None,
        *,
        checkpoints: Checkpointer | None = None,
        dead_letters: DeadLetters | None = None,
        payloads: PayloadStore | None = None,
        streams: Sequence[StreamConfig] = (),
    ) -> None:
        self.route = route
        self._streams = list(streams)  # the file's streams: which one a subject goes to (atomic batches)
        self._stream_keys: dict[str, str] = {}
        self._unbatchable: set[str] = set()  # stream keys whose stream refused an atomic batch
        self.source = source
        self.publisher = publisher
        self.settings = settings or PipelineSettings()
        self.checkpoints = checkpoints
        self.dead_letters = dead_letters
        self.payloads = payloads
        self._capture_checks: list[tuple[LaneState, InFlight]] = []
        self.stats = RouteStats()
        self._lanes: dict[Lane, LaneState] = {}
        self._stored = StoredIndex()
        self._unsettled = 0
        self._paused = False
        self._stopping = False
        self._stopped = asyncio.Event()  # set with _stopping: ends the publisher's waits for us
        self._wake = asyncio.Event()
        self._preparing: set[Lane] = set()
        self._fatal: RouteStoppedError | None = None
        self._settling: asyncio.Task[None] | None = None
        self._settled_since = 0
        self._settle_after = source.settle_after
        self._prepared = asyncio.Event()
        self._prepared.set()
        self._progress = asyncio.Event()
        self._progressed: set[LaneState] = set()
        self._has_work: set[LaneState] = set()
        self._rejections: list[_Rejection] = []
        self._last_settle = 0.0
        # Per lane, the ranges being copied again because JetStream lost them (missing_before).
        self._recopying: dict[Lane, list[tuple[int, int]]] = {}
        # Since when JetStream has answered this route's publishes with nothing but failures
        # (None: the last answer stored something); readiness reads it.
        self.refusing_since: float | None = None
        self.start_error = ""  # why the source has not started yet (its broker does not answer)

    # ------------------------------------------------------------------ LaneOwner

    async def lanes_assigned(self, lanes: Collection[Lane]) -> Mapping[Lane, int]:
        if self.checkpoints is None or not lanes or not self.source.stable_positions:
            return {}
        # aiokafka may already fetch from new partitions while this runs: the reader holds
        # back their messages until it is known what of them is already stored.
        self._preparing.update(lanes)
        self._prepared.clear()
        deadline = time.monotonic() + self.settings.prepare_timeout
        backoff = self.settings.retry_backoff_initial
        while True:
            try:
                index = await self.checkpoints.stored(self.checkpoint_scope, lanes, self.route)
                break
            except (NatsError, TimeoutError) as error:
                if time.monotonic() + backoff > deadline:
                    # Reading on without knowing what is stored could store messages twice:
                    # stop the route instead (nothing is settled; a restart tries again).
                    self._fatal = RouteStoppedError(
                        f"route {self.route.key}: cannot read checkpoints from NATS ({error}); stopping"
                    )
                    self.wake()
                    return {}
                log.warning("route %s: reading checkpoints failed (%s); retrying", self.route.key, error)
                await asyncio.sleep(backoff)
                backoff = min(self.settings.retry_backoff_max, backoff * 2)
        self._stored.update(index)
        self._preparing.difference_update(lanes)
        if not self._preparing:
            self._prepared.set()
        return {lane: index.through[lane] for lane in lanes if lane in index.through}

    def missing_before(self, lane: Lane, position: int) -> list[tuple[int, int]]:
        stored = self._stored
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
            self.stats.recopied += sum(last - first + 1 for first, last in ranges)
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

    async def lanes_revoked(self, lanes: Collection[Lane]) -> Mapping[Lane, int]:
        states = [self._lanes[lane] for lane in lanes if lane in self._lanes]
        deadline = time.monotonic() + self.settings.drain_timeout
        # The route's own tasks keep publishing and retrying meanwhile; this only waits.
        while any(state.entries for state in states):
            if not await self._wait_for_progress(deadline - time.monotonic()):
                break
        watermarks = {state.key: state.watermark for state in states if state.watermark is not None}
        await self._checkpoint([state for state in states if state.watermark is not None])
        for state in states:
            state.revoked = True
            self.publisher.forget(state.entries)
            del self._lanes[state.key]
            self._progressed.discard(state)
            self._has_work.discard(state)
            self._stored.forget(state.key)
        return watermarks

    # ------------------------------------------------------------------ running

    def wake(self) -> None:
        self._wake.set()

    def reordered(self, lane: LaneState, done: InFlight, overtaken: list[tuple[int, int]]) -> None:
        """JetStream stored `done` before the `overtaken` records that precede it in its lane."""
        count = len(overtaken) or 1
        self.stats.reordered += count
        positions = [position for position, _ in overtaken]
        seqs = [seq for _, seq in overtaken]
        earlier = (
            f"{count} earlier record(s) (positions {min(positions)}-{max(positions)}, "
            f"stored at sequences {min(seqs)}-{max(seqs)})"
            if overtaken
            else "earlier records"
        )
        text = (
            f"lane {lane_label(lane.key)}: position {done.position} is stored at sequence {done.seq} of "
            f"stream {done.stream}, ahead of {earlier}"
        )
        self.stats.last_reorder = text
        log.error(
            "route %s %s: JetStream stored a later in-flight publish while dropping earlier ones (a stream "
            "leader stopping without lame duck mode does this), and the resends landed after it: the "
            "stream holds them out of order. Restart NATS servers with lame duck mode (nats-server "
            "--signal ldm), or give the route `ordering: batched` or `strict`",
            self.route.key,
            text,
        )

    def lane_progressed(self, lane: LaneState, count: int = 1) -> None:
        self._progressed.add(lane)
        self._progress.set()
        self._settled_since += count
        if self._settle_after is not None and self._settled_since >= self._settle_after:
            self._wake.set()

    async def _wait_for_progress(self, seconds: float) -> bool:
        """Wait until some lane settles more, up to `seconds`; False when the time is up."""
        if seconds <= 0:
            return False
        self._progress.clear()
        try:
            await asyncio.wait_for(self._progress.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def lane_has_work(self, lane: LaneState) -> None:
        self._has_work.add(lane)
        self._wake.set()

    def refused(self, lane: LaneState, entry: InFlight, reason: DeadLetterReason, error: str) -> None:
        if entry.dead_letter:
            # The dead letter itself cannot be stored: nothing is left to fall back on.
            self._fatal = RouteStoppedError(
                f"route {self.route.key}: dead letter for {lane_label(lane.key)} position {entry.position} "
                f"refused ({error}); the message stays unacknowledged at the source"
            )
        else:
            outbound = entry.outbound
            entry.outbound = _SKIPPED  # not resent as it was while its fate is decided
            self._rejections.append(_Rejection(lane, entry, reason, error, outbound=outbound))
        self.wake()

    def check_captured(self, lane: LaneState, entry: InFlight) -> None:
        self._capture_checks.append((lane, entry))
        self.wake()

    @property
    def checkpoint_scope(self) -> str:
        """Whose positions the checkpoints record: the route, and the source's own identity
        (a consumer group, a vhost's queue) — a new group or another vhost starts afresh."""
        return f"{self.route.key}|{self.source.checkpoint_scope}"

    @property
    def stored_index(self) -> StoredIndex:
        return self._stored

    @property
    def unsettled(self) -> int:
        """Messages read and not yet settled, as of the last step."""
        return self._unsettled

    async def run(self) -> None:
        """Move messages until `stop()` is called; then drain, settle and close the source.

        Two tasks: the reader fetches and maps (it must keep polling, even when paused), the
        sender publishes, resends and settles; a publish outcome wakes the sender at once.
        """
        if not await self._start_source():
            return
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._read_loop(), name=f"{self.route.key} reader")
                group.create_task(self._send_loop(), name=f"{self.route.key} sender")
        except* RouteStoppedError as stopped:
            raise stopped.exceptions[0] from None
        finally:
            await self._drain()
            await self.source.close()

    async def _start_source(self) -> bool:
        """`source.start`, again and again while the source's broker does not answer (an outage
        at start is waited out as one later on is: /readyz says why meanwhile), unless `stop()`
        comes first: a source still connecting (Kafka down or hung, aiokafka waiting for the
        group's first assignment) must not hold up a stop. False when stopped first; the source
        is closed then. A refused login or subscription is raised: a person must fix it."""
        delay = START_RETRY_INITIAL
        while True:
            try:
                started = await self._try_start_source()
            except SourceUnreachableError as error:
                if self.start_error != str(error):
                    log.warning(
                        "route %s: %s; nothing is read until it answers (trying every few seconds)",
                        self.route.key,
                        error,
                    )
                self.start_error = str(error)
            else:
                self.start_error = ""
                return started
            if await self._stopped_within(delay):
                await self.source.close()
                return False
            delay = min(delay * 2, START_RETRY_MAX)

    async def _try_start_source(self) -> bool:
        starting = asyncio.ensure_future(self.source.start(self))
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait((starting, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not starting.done():
                await _cancel_until_done(starting)
        if starting.cancelled() or (self._stopping and starting.exception() is not None):
            # Stopped first: whatever the start came to (a connection failing as it was cancelled
            # included) is moot; the stop's exit stands.
            await self.source.close()
            return False
        starting.result()
        return True

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)
        return self._stopping

    def stop(self) -> None:
        self._stopping = True
        self._stopped.set()  # a send loop waiting for NATS (down, or closed for good) returns
        self.wake()
        self._prepared.set()  # a reader holding back unprepared lanes returns without them

    async def _read_loop(self) -> None:
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            while not self._stopping:
                self._apply_backpressure()
                fetching = asyncio.ensure_future(
                    self.source.fetch(self.settings.batch_size, self.settings.fetch_timeout)
                )
                await asyncio.wait((fetching, stopped), return_when=asyncio.FIRST_COMPLETED)
                if not fetching.done():
                    # A source stuck reconnecting (RabbitMQ down, a login refused) must not hold
                    # up a stop: nothing it could still hand over would be settled anyway.
                    await _cancel_until_done(fetching)
                    with contextlib.suppress(asyncio.CancelledError):
                        fetching.result()
                    return
                if not await self._accept_fetched(fetching.result()):
                    return
        finally:
            stopped.cancel()

    async def _accept_fetched(self, batch: Sequence[Received]) -> bool:
        """Accept a fetched batch once its lanes are prepared; False when stopped meanwhile."""
        if batch:
            while self._preparing and any(received.lane in self._preparing for received in batch):
                await self._prepared.wait()
                if self._stopping:
                    return False
            self._accept(batch)
            self.wake()
        return True

    async def _send_loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.fetch_timeout)
            self._wake.clear()
            if self._fatal is not None:
                raise self._fatal
            await self._check_captures()
            await self._handle_rejections()
            await self._retry_due_lanes()
            await self._pump()
            if self._progressed and (
                time.monotonic() - self._last_settle >= self.settings.settle_interval
                or (self._settle_after is not None and self._settled_since >= self._settle_after)
            ):
                self._settle_in_background()

    def _accept(self, batch: Sequence[Received]) -> None:
        """Decide each message (`bridge.decide`) and queue it on its lane (sending happens in `_pump`)."""
        route = self.route
        lanes = self._lanes
        stored = self._stored
        # Streams are left to the server: a running bridge may publish into one its file does not
        # declare (a subject nothing captures is found from the publish's answer).
        publisher = self.publisher
        context = DecideContext(
            max_payload=publisher.max_payload,
            subject_room=publisher.subject_room,
            max_control_line=publisher.max_control_line,
        )
        recopied = dataclasses.replace(context, mark=_mark_recopied) if self._recopying else context
        self.stats.received += len(batch)
        for received in batch:
            lane = lanes.get(received.lane)
            if lane is None:
                lane = lanes[received.lane] = LaneState(received.lane, self)
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
                entry = InFlight(outbound, lane, received.position)
                lane.entries.append(entry)
                lane.unsent.append(entry)
                self._has_work.add(lane)
            elif verdict.fate is Fate.FILTERED:
                self._settle_unsent(lane, received.position, filtered=True)
            elif outbound is None:
                entry = InFlight(_SKIPPED, lane, received.position)
                lane.entries.append(entry)
                self._rejections.append(
                    _Rejection(lane, entry, DeadLetterReason.UNMAPPABLE, verdict.detail, message=message)
                )
                self.wake()
            else:
                entry = InFlight(outbound, lane, received.position)
                lane.entries.append(entry)
                self.refused(lane, entry, verdict.reason or DeadLetterReason.UNMAPPABLE, verdict.detail)

    def _settle_unsent(self, lane: LaneState, position: int, *, filtered: bool) -> None:
        """A message never published: filtered (a source could not hand it over, or the route does
        not copy it), or already stored by an earlier run."""
        entry = InFlight(_SKIPPED, lane, position)
        lane.entries.append(entry)
        if filtered:
            self.stats.skipped += 1
            self.stats.filtered += 1
        else:
            self.stats.already_stored += 1
        lane.settle_now(entry)

    def _reread(self, lane: LaneState, position: int) -> None:
        if not self.stats.reread:
            log.warning(
                "route %s lane %s: the source handed over position %d again (read through %s); dropped",
                self.route.key,
                lane_label(lane.key),
                position,
                lane.read_through,
            )
        self.stats.reread += 1

    async def _pump(self) -> None:
        """Send what lanes have queued, in lane order, within each lane's in-flight limit."""
        if not self._has_work:
            return
        if self.settings.atomic_batch:
            await self._pump_batches(self.settings.atomic_batch)
            return
        limit = self.settings.max_in_flight_per_lane or (1 << 62)
        batch: list[InFlight] = []
        for lane in self._has_work:
            unsent = lane.unsent
            stream = lane.stream
            highest = self.publisher.highest_seq.get(stream, 0) if stream else 0
            lane_limit = 1 if lane.probing else limit
            while unsent and not lane.retrying and lane.in_flight < lane_limit:
                entry = unsent.popleft()
                if entry.outbound is _SKIPPED:
                    continue  # its fate is being decided (dead letter or stop); it is queued again then
                if not entry.floor and highest:
                    entry.stream = stream
                    entry.floor = highest
                batch.append(entry)
                lane.in_flight += 1
        self._has_work = {lane for lane in self._has_work if lane.unsent and not lane.retrying}
        if batch:
            self._requeue(await self.publisher.publish(batch, abandon=self._stopped))

    def _requeue(self, returned: list[InFlight]) -> None:
        """Once stopping, the publisher waits for neither NATS nor window space: what it did not
        hand over goes back to the front of its lane, unsent (the drain may still send it, and
        the watermark stops short of it otherwise)."""
        for entry in reversed(returned):
            owner = entry.owner
            if isinstance(owner, LaneState) and not owner.revoked:
                owner.in_flight -= 1
                owner.unsent.appendleft(entry)
                self._has_work.add(owner)

    async def _pump_batches(self, size: int) -> None:
        """ordering: batched — from each lane with nothing in flight, its next messages for one
        stream as one atomic batch (up to `size`), or after a failure its next message alone.
        One batch in flight per lane keeps the lane's order through any fault: the server stores
        a batch whole or not at all, so no later message is stored before an earlier one."""
        singles: list[InFlight] = []
        groups: list[list[InFlight]] = []
        for lane in self._has_work:
            if lane.retrying or lane.in_flight:
                continue
            unsent = lane.unsent
            highest = self.publisher.highest_seq.get(lane.stream, 0) if lane.stream else 0
            group: list[InFlight] = []
            key = ""
            payload = 0
            while unsent and len(group) < size:
                entry = unsent[0]
                if entry.outbound is _SKIPPED:
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
                    entry.stream = lane.stream
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
        self._has_work = {lane for lane in self._has_work if lane.unsent and not lane.retrying}
        if singles:
            self._requeue(await self.publisher.publish(singles, abandon=self._stopped))
        if groups:
            self._requeue(await self.publisher.publish_atomic(groups, abandon=self._stopped))

    @property
    def ordering(self) -> str:
        """The ordering this route runs with now (a default-batched route may have fallen back)."""
        if self.settings.atomic_batch:
            return "batched"
        return "strict" if self.settings.max_in_flight_per_lane == 1 else "pipelined"

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
                self.route.key,
                subject,
            )
            return
        key = self._stream_key(subject)
        if key not in self._unbatchable:
            self._unbatchable.add(key)
            log.warning(
                "route %s: the stream capturing '%s' does not allow atomic batch publishes (allow_atomic); "
                "its messages are sent one at a time (as with ordering: strict)",
                self.route.key,
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

    async def _retry_due_lanes(self) -> None:
        now = time.monotonic()
        for lane in self._lanes.values():
            if not lane.retrying or lane.retry_at > now or not self.publisher.connected:
                continue
            self.publisher.forget(lane.rewind())
            self.stats.retries += 1
            self._has_work.add(lane)

    async def _check_captures(self) -> None:
        """For messages JetStream gave no answer: is it down, or does no stream capture the subject?"""
        while self._capture_checks:
            lane, entry = self._capture_checks.pop()
            if entry.settled or entry.dead_letter or entry.outbound is _SKIPPED:
                continue
            if await self.publisher.captured(entry.outbound.subject) is False:
                self.refused(
                    lane,
                    entry,
                    DeadLetterReason.NO_STREAM,
                    f"no stream captures subject '{entry.outbound.subject}'",
                )

    async def _handle_rejections(self) -> None:
        """Give each message that cannot go where its route says the fate the route chose."""
        while self._rejections:
            rejection = self._rejections[0]
            lane, entry = rejection.lane, rejection.entry
            where = f"{lane_label(lane.key)} position {entry.position}"
            on_error = self.route.config.on_error
            if on_error is OnError.SKIP:
                self._rejections.pop(0)
                self.stats.skipped += 1
                log.warning(
                    "route %s: skipping message at %s: %s (on_error: skip)", self.route.key, where, rejection.error
                )
                lane.settle_now(entry)
                continue
            if on_error is OnError.STOP or self.dead_letters is None:
                # Popped, so the drain still stores and settles everything before it; the
                # message itself is never settled, so the watermark stops short of it.
                self._rejections.pop(0)
                raise RouteStoppedError(
                    f"route {self.route.key}: message at {where} cannot be delivered: {rejection.error} "
                    f"(on_error: {on_error}); it stays unacknowledged at the source"
                )
            letter = await self._dead_letter(rejection, self.dead_letters)
            if letter is None:
                return  # the payload store is unreachable: try again on the next round
            self._rejections.pop(0)
            log.warning(
                "route %s: message at %s dead-lettered to %s (%s): %s",
                self.route.key,
                where,
                letter.message.subject,
                letter.reason,
                rejection.error,
            )
            entry.outbound = letter.message
            entry.dead_letter = letter.reason.value
            if not lane.retrying and entry not in lane.unsent:  # a rewind queues it by itself
                lane.unsent.append(entry)
                self._has_work.add(lane)

    async def _dead_letter(self, rejection: _Rejection, dead_letters: DeadLetters) -> DeadLetter | None:
        if rejection.message is not None:
            letter = dead_letters.for_unmappable(rejection.message, rejection.error)
        else:
            assert rejection.outbound is not None
            letter = dead_letters.for_refused(rejection.outbound, rejection.reason, rejection.error)
        if fits(letter.message, self.publisher.max_payload):
            return letter
        letter = dead_letters.too_large(letter, self.publisher.max_payload)
        if self.payloads is None:
            raise RouteStoppedError(
                f"route {self.route.key}: a dead letter's payload is too large and no payload store is set"
            )
        assert letter.payload is not None
        try:
            await self.payloads.put(letter.message.msg_id, letter.payload)
        except (NatsError, TimeoutError) as error:
            log.warning("route %s: storing a dead letter's payload failed (%s); retrying", self.route.key, error)
            return None
        return letter

    def _apply_backpressure(self) -> None:
        """Hold the source back while JetStream cannot keep up: too much unsettled, no
        connection, or a lane backing off after a refusal (stream full, no quorum). Nothing
        is acknowledged meanwhile; reading resumes by itself once publishes succeed again."""
        lanes = self._lanes.values()
        self._unsettled = sum(len(lane.entries) for lane in lanes)
        limit = self.settings.max_unsettled
        refused = any(lane.retrying for lane in lanes)
        if not self._paused and (self._unsettled >= limit or refused or not self.publisher.connected):
            self._paused = True
            self.source.pause()
        elif self._paused and self._unsettled < limit // 2 and not refused and self.publisher.connected:
            self._paused = False
            self.source.resume()

    @property
    def paused(self) -> bool:
        return self._paused

    def _settle_in_background(self) -> None:
        """Settle without holding up publishing: checkpoint writes and commits take milliseconds."""
        if self._settling is not None and not self._settling.done():
            return  # one settle at a time; the next one carries the later watermarks
        checkpoints, watermarks = self._settle_snapshot()
        if watermarks:
            self._settling = asyncio.create_task(self._apply_settle(checkpoints, watermarks), name="settle")

    async def _settle(self) -> None:
        """Settle now, after any settle already under way (shutdown and revocation use this)."""
        if self._settling is not None:
            await self._settling
        checkpoints, watermarks = self._settle_snapshot()
        if watermarks:
            await self._apply_settle(checkpoints, watermarks)

    def _settle_snapshot(self) -> tuple[dict[Lane, Checkpoint], dict[Lane, int]]:
        """Watermarks and checkpoints of the lanes that moved, taken together at one instant."""
        lanes = [lane for lane in self._progressed if lane.watermark is not None]
        self._progressed.clear()
        self._last_settle = time.monotonic()
        self._settled_since = 0
        checkpoints: dict[Lane, Checkpoint] = {}
        if self._checkpointing:  # computing one walks the lane's entries: not for nothing
            checkpoints = {lane.key: cp for lane in lanes if (cp := lane.checkpoint()) is not None}
        watermarks = {lane.key: lane.watermark for lane in lanes if lane.watermark is not None}
        return checkpoints, watermarks

    @property
    def _checkpointing(self) -> bool:
        return self.checkpoints is not None and self.source.stable_positions

    async def _apply_settle(self, checkpoints: dict[Lane, Checkpoint], watermarks: dict[Lane, int]) -> None:
        # The checkpoint is written before the source is settled: a crash in between only
        # means a restart scans a little more.
        await self._save_checkpoints(checkpoints)
        await self.source.settle(watermarks)

    async def _checkpoint(self, lanes: list[LaneState]) -> None:
        if not self._checkpointing:
            return
        await self._save_checkpoints({lane.key: cp for lane in lanes if (cp := lane.checkpoint()) is not None})

    async def _save_checkpoints(self, checkpoints: dict[Lane, Checkpoint]) -> None:
        if self.checkpoints is None or not checkpoints or not self._checkpointing:
            return
        try:
            await self.checkpoints.save(self.checkpoint_scope, checkpoints)
        except (NatsError, TimeoutError) as error:
            # Settling the source anyway is safe: a restart scans from the older checkpoint,
            # which only means a longer scan. Losing the route to a KV hiccup is not.
            log.warning("route %s: checkpoint not saved (%s); the next settle retries", self.route.key, error)

    async def _drain(self) -> None:
        """Stop reading; wait (bounded) for in-flight PubAcks; settle what is done."""
        deadline = time.monotonic() + self.settings.drain_timeout
        while any(lane.entries for lane in self._lanes.values()) and self.publisher.connected:
            try:
                await self._check_captures()
                await self._handle_rejections()
            except RouteStoppedError:
                break
            await self._retry_due_lanes()
            await self._pump()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await self._wait_for_progress(min(0.05, remaining))
        self._progressed.update(self._lanes.values())
        try:
            await self._settle()
        except Exception:
            log.exception("route %s: final settle failed; unsettled messages will be re-read", self.route.key)
