"""(4) SETTLE: read -> map -> publish -> settle. The only place that decides a message is done.

One `RoutePipeline` runs per route: it fetches batches from the route's source, maps each
message (a pure function), hands them to the shared publisher, and settles the source by
per-lane watermarks once JetStream has acknowledged everything below them. It wires the
pieces together and runs the loop; each piece has its own module: what is read
(`intake`), a lane's bookkeeping (`lanes`), what is sent when (`sending`), what is settled
and checkpointed (`settling`), and the fate of messages that cannot go where the route says
(`rejections`).

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
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from bridge.config.streams import StreamConfig
from bridge.deadletters import DeadLetters
from bridge.errors import RouteStoppedError, SourceUnreachableError
from bridge.jetstream.publisher import JetStreamPublisher
from bridge.mapping import CompiledRoute
from bridge.pipeline.intake import Intake
from bridge.pipeline.lanes import LaneState
from bridge.pipeline.rejections import Rejections
from bridge.pipeline.sending import Sender
from bridge.pipeline.settings import Checkpointer, PayloadStore, PipelineSettings
from bridge.pipeline.settling import Settler
from bridge.pipeline.stats import RouteStats
from bridge.sources.base import Lane, Received, Source
from bridge.stored import StoredIndex

log = logging.getLogger(__name__)

# A source whose broker does not answer at start is tried again after 1 s, doubling to 5 s: as
# soon after its return as the RabbitMQ source's reconnects (bridge.sources.rabbitmq).
START_RETRY_INITIAL = 1.0
START_RETRY_MAX = 5.0


async def _cancel_until_done(task: asyncio.Future[Any]) -> None:
    """Cancel `task` and wait for it to end, cancelling it again every 0.1 s while it runs: a
    client library can swallow a cancellation (in Python 3.11 asyncio.wait_for returns the inner
    outcome when a cancellation arrives just as it completes), and a source's reconnect loop then
    went on until its broker came back. Its outcome is left in the task."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.1)


class RoutePipeline:
    """Runs one route: its source, its mapping, and its share of the publisher.

    It is its source's LaneOwner (lanes assigned and revoked) and its lanes' LaneHost (publish
    outcomes reported back), and runs two tasks: a reader and a sender.
    """

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
        self.source = source
        self.publisher = publisher
        self.stats = RouteStats()
        self._lanes: dict[Lane, LaneState] = {}
        self._unsettled = 0
        self._paused = False
        self._stopping = False
        self._stopped = asyncio.Event()  # set with _stopping: ends the publisher's waits for us
        self._wake = asyncio.Event()
        self._fatal: RouteStoppedError | None = None
        self._sender = Sender(route.key, publisher, settings or PipelineSettings(), self.stats, streams, self._stopped)
        self._settler = Settler(
            route.key, source, publisher, checkpoints, interval=self.settings.settle_interval, wake=self.wake
        )
        self._rejections = Rejections(
            route,
            self.stats,
            publisher,
            dead_letters=dead_letters,
            payloads=payloads,
            wake=self.wake,
            fail=self._fail,
            queue=self._sender.queue,
        )
        self._intake = Intake(
            route,
            self,
            source,
            publisher,
            self.stats,
            self._lanes,
            self._sender,
            self._rejections,
            checkpoints=checkpoints,
            scope=self._settler,
            fail=self._fail,
        )
        # The LaneHost and LaneOwner calls the pieces answer themselves, bound once: no hop
        # through the pipeline on a message's path.
        self.lane_progressed = self._settler.progressed
        self.refused = self._rejections.refused
        self.check_captured = self._rejections.check_captured
        self.atomic_refused = self._sender.atomic_refused
        self.lanes_assigned = self._intake.prepare
        self.missing_before = self._intake.missing_before
        # Since when JetStream has answered this route's publishes with nothing but failures
        # (None: the last answer stored something); readiness reads it.
        self.refusing_since: float | None = None
        self.start_error = ""  # why the source has not started yet (its broker does not answer)

    # ------------------------------------------------------------------ what others read

    @property
    def settings(self) -> PipelineSettings:
        return self._sender.settings

    @property
    def checkpoints(self) -> Checkpointer | None:
        return self._settler.checkpoints

    @property
    def dead_letters(self) -> DeadLetters | None:
        return self._rejections.dead_letters

    @property
    def payloads(self) -> PayloadStore | None:
        return self._rejections.payloads

    @property
    def ordering(self) -> str:
        """The ordering this route runs with now (a default-batched route may have fallen back)."""
        return self._sender.ordering

    @property
    def checkpoint_scope(self) -> str:
        """Whose positions the checkpoints record: the route, and the source's own identity
        (a consumer group, a vhost's queue) — a new group or another vhost starts afresh."""
        return self._settler.scope

    @property
    def stored_index(self) -> StoredIndex:
        return self._intake.stored

    @property
    def unsettled(self) -> int:
        """Messages read and not yet settled, as of the last step."""
        return self._unsettled

    @property
    def paused(self) -> bool:
        return self._paused

    # ------------------------------------------------------------------ LaneOwner (lanes_assigned: Intake.prepare)

    async def lanes_revoked(self, lanes: Collection[Lane]) -> Mapping[Lane, int]:
        states = [self._lanes[lane] for lane in lanes if lane in self._lanes]
        deadline = time.monotonic() + self.settings.drain_timeout
        # The route's own tasks keep publishing and retrying meanwhile; this only waits.
        while any(state.entries for state in states):
            if not await self._settler.wait_for_progress(deadline - time.monotonic()):
                break
        watermarks = {state.key: state.watermark for state in states if state.watermark is not None}
        await self._settler.checkpoint_lanes([state for state in states if state.watermark is not None])
        for state in states:
            state.revoked = True
            self.publisher.forget(state.entries)
            del self._lanes[state.key]
            self._settler.forget(state)
            self._sender.has_work.discard(state)
            self.stored_index.forget(state.key)
        return watermarks

    # ------------------------------------------------------------------ LaneHost

    def wake(self) -> None:
        self._wake.set()

    def lane_has_work(self, lane: LaneState) -> None:
        self._sender.has_work.add(lane)  # as Sender.queue does, without the extra call per PubAck
        self._wake.set()

    def _fail(self, error: RouteStoppedError) -> None:
        """Stop the route: the send loop raises `error` next."""
        self._fatal = error
        self.wake()

    # ------------------------------------------------------------------ running

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
        self._intake.stop()  # a reader holding back unprepared lanes returns without them

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
            if not await self._intake.prepared(batch):
                return False
            self._intake.accept(batch)
            self.wake()
        return True

    async def _send_loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.fetch_timeout)
            self._wake.clear()
            if self._fatal is not None:
                raise self._fatal
            await self._step()
            if self._settler.due:
                self._settler.in_background()

    async def _step(self) -> None:
        """One round of the sender: rejected messages' fates, due resends, then what is queued."""
        await self._rejections.check_captures()
        await self._rejections.handle()
        self._sender.retry_due(self._lanes.values())
        await self._sender.pump()

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

    async def _drain(self) -> None:
        """Stop reading; wait (bounded) for in-flight PubAcks; settle what is done."""
        deadline = time.monotonic() + self.settings.drain_timeout
        while any(lane.entries for lane in self._lanes.values()) and self.publisher.connected:
            try:
                await self._step()
            except RouteStoppedError:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await self._settler.wait_for_progress(min(0.05, remaining))
        self._settler.include(self._lanes.values())
        try:
            await self._settler.settle()
        except Exception:
            log.exception("route %s: final settle failed; unsettled messages will be re-read", self.route.key)
