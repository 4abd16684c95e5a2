"""Is the bridge healthy, ready, making progress? Answered from a few-second-old snapshot.

Every few seconds the monitor asks each source for its backlog (which is also the check
that the broker answers) and JetStream for the streams' state, and decides per route
whether it is stalled: it has work (messages unsettled, or waiting at the source) and has
settled nothing for `stall_after`. A route that merely has nothing to do is not stalled.

/readyz, /status and the metrics read the snapshot; nothing here touches a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from bridge.errors import SourceUnavailableError

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from bridge.brokers.nats.client import ConnectionEvents
    from bridge.config.streams import StreamConfig
    from bridge.jetstream.publisher import JetStreamPublisher
    from bridge.pipeline.route import RoutePipeline
    from bridge.reverse.route import ReverseStats

log = logging.getLogger(__name__)

MAX_CONSUMERS_LISTED = 100  # per stream, so a stream with thousands of consumers stays cheap
# A route whose publishes JetStream has answered with nothing but failures for this long is not
# ready: long enough to ride out one lost PubAck, short enough that no quorum, a full stream or a
# hung server shows within 10 s (a timeout counts from when the publish went out).
REFUSING_AFTER = 3.0


@dataclass(slots=True)
class RouteHealth:
    """What the monitor last saw of one route."""

    service: str
    route: str
    settled: int = 0
    last_progress: float = field(default_factory=time.monotonic)
    last_progress_wall: float = field(default_factory=time.time)
    backlog: dict[str, int] = field(default_factory=dict)
    source_up: bool = False
    seen_up: bool = False  # the source answered at least once since the start
    source_error: str = "not checked yet"
    stalled: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True)
class StreamHealth:
    name: str
    exists: bool
    messages: int = 0
    bytes: int = 0
    max_bytes: int = -1
    consumers: tuple[tuple[str, int, int], ...] = ()  # (name, pending, ack pending)


@dataclass(frozen=True, slots=True)
class PhaseRead:
    """What the cut-over controller last read of a service's phase key, as /status and /readyz
    show it. Plain values: the monitor sits below the cut-over and must not know its types."""

    revision: int  # of the record followed (0: none was ever written)
    valid: bool  # False: no valid record is left, so the service is held
    ignored: tuple[dict[str, object], ...] = ()  # the revisions ignored, and why (JSON)
    last_ignored: str = ""  # the last of them, as a line of text
    drained_at: str | None = None


class HealthMonitor:
    """Refreshes the snapshot every `interval` seconds while the bridge runs."""

    def __init__(
        self,
        *,
        pipelines: Sequence[RoutePipeline],
        publisher: JetStreamPublisher,
        events: ConnectionEvents,
        js: JetStreamContext,
        streams: Sequence[StreamConfig],
        stall_after: float = 60.0,
        interval: float = 5.0,
        refusing_after: float = REFUSING_AFTER,
    ) -> None:
        self.pipelines = list(pipelines)
        self.publisher = publisher
        self.events = events
        self.streams_config = streams
        self.stall_after = stall_after
        self.interval = interval
        self.refusing_after = refusing_after
        # Why the last look at the streams got no answer from JetStream ("" when it answered).
        self.jetstream_error = ""
        self._js = js
        self.routes = {p.route.key: RouteHealth(p.route.service, p.route.config.name) for p in pipelines}
        self.streams: list[StreamHealth] = []
        self.refreshed = False
        # Kept up to date by the cut-over controller: service -> phase, and what it read of
        # each service's phase key; how many records it refused, per (service, kind).
        self.phases: dict[str, str] = {p.route.service: "shadow" for p in pipelines}
        self.phase_reads: dict[str, PhaseRead] = {}
        self.phase_rejections: dict[tuple[str, str], int] = {}
        # (service, reverse route) -> its stats and whether it runs now, kept by the controller.
        self.reverse: dict[tuple[str, str], tuple[ReverseStats, bool]] = {}

    def phase_rejected(self, service: str, kind: str) -> None:
        key = (service, kind)
        self.phase_rejections[key] = self.phase_rejections.get(key, 0) + 1

    def forget(self, pipeline: RoutePipeline) -> None:
        """A retired route: no longer checked, counted or reported as a problem."""
        self.pipelines = [p for p in self.pipelines if p is not pipeline]
        self.routes.pop(pipeline.route.key, None)

    async def run(self) -> None:
        task = asyncio.current_task()
        while True:
            try:
                await self.refresh()
            except Exception:  # the monitor must outlive any one failed look
                log.exception("health check failed")
            if task is not None and task.cancelling():
                # On Python 3.11 asyncio.wait_for (here, and in nats-py's requests) drops a cancel
                # that arrives as its answer does; the TaskGroup stopping the bridge would then wait
                # for this loop forever.
                raise asyncio.CancelledError
            await asyncio.sleep(self._next_look())

    def _next_look(self) -> float:
        """Seconds to the next look: soon while some source has never answered (the bridge is
        starting: readiness should follow the moment records flow, not one interval later)."""
        if all(health.seen_up for health in self.routes.values()):
            return self.interval
        return min(self.interval, 0.5)

    async def refresh(self) -> None:
        await asyncio.gather(*(self._refresh_route(p) for p in self.pipelines))
        self.streams = await self._stream_health()
        self.refreshed = True

    async def _refresh_route(self, pipeline: RoutePipeline) -> None:
        health = self.routes[pipeline.route.key]
        try:
            health.backlog = dict(await asyncio.wait_for(pipeline.source.backlog(), self.interval))
            health.source_up, health.source_error, health.seen_up = True, "", True
        except (SourceUnavailableError, TimeoutError) as error:
            health.source_up = False
            # A source still waiting to start says why (its broker does not answer), not "not connected".
            health.source_error = pipeline.start_error or str(error) or "no answer within the check interval"
        now = time.monotonic()
        settled = pipeline.stats.settled
        waiting = pipeline.unsettled + sum(health.backlog.values())
        if settled != health.settled or not waiting:
            health.settled = settled
            health.last_progress, health.last_progress_wall = now, time.time()
        idle_for = now - health.last_progress
        health.stalled = waiting > 0 and idle_for >= self.stall_after
        if not health.stalled:
            health.reason = ""
            return
        why = "its source is paused: JetStream refuses or is unreachable" if pipeline.paused else "nothing was settled"
        last = f"; last error: {pipeline.stats.last_error}" if pipeline.stats.last_error else ""
        health.reason = (
            f"no progress for {idle_for:.0f}s with {pipeline.unsettled} message(s) in flight and "
            f"{sum(health.backlog.values())} waiting at the source; {why}{last}"
        )

    async def _stream_health(self) -> list[StreamHealth]:
        if not self.publisher.connected:
            return self.streams  # keep the last known state rather than report zeros
        states = []
        for stream in self.streams_config:
            try:
                info = await self._js.stream_info(stream.name)
            except NotFoundError:
                states.append(StreamHealth(stream.name, exists=False))
                continue
            except (NatsError, TimeoutError) as error:
                self.jetstream_error = (
                    f"JetStream did not answer stream info for {stream.name} "
                    f"({type(error).__name__}{': ' + str(error) if str(error) else ''})"
                )
                return self.streams
            consumers: list[tuple[str, int, int]] = []
            with contextlib.suppress(NatsError, TimeoutError):
                for consumer in (await self._js.consumers_info(stream.name))[:MAX_CONSUMERS_LISTED]:
                    name = consumer.name or consumer.config.durable_name or "?"
                    consumers.append((name, consumer.num_pending or 0, consumer.num_ack_pending or 0))
            states.append(
                StreamHealth(
                    stream.name,
                    True,
                    info.state.messages,
                    info.state.bytes,
                    info.config.max_bytes if info.config.max_bytes is not None else -1,
                    tuple(consumers),
                )
            )
        self.jetstream_error = ""
        return states

    # ------------------------------------------------------------------ answers

    def liveness_problems(self) -> list[str]:
        """Why the process is of no more use and should be restarted (/healthz); empty while it is.

        A NATS client closed for good never reconnects: every route stalls for good, so the
        process is as good as dead even though its event loop still answers.
        """
        closed = self.publisher.closed
        if closed is not None:
            return [f"NATS: connection closed for good ({closed}); the bridge cannot publish and is exiting"]
        return []

    def problems(self) -> list[str]:
        """Why the bridge is not ready; empty when it is."""
        problems = self.liveness_problems()
        if not self.refreshed:
            problems.append("starting: the first health check has not finished")
        connected = self.publisher.connected
        if not connected and self.publisher.closed is None:
            problems.append("NATS: not connected (reconnecting)")
        if connected and self.jetstream_error:
            problems.append(f"NATS: {self.jetstream_error}")
        for service, read in self.phase_reads.items():
            if not read.valid:
                last = f" (last: {read.last_ignored})" if read.last_ignored else ""
                problems.append(
                    f"service {service}: no valid phase record{last}; its routes are held until one is written"
                )
        now = time.monotonic()
        for pipeline in self.pipelines:
            since = pipeline.refusing_since
            if since is not None and now - since >= self.refusing_after:
                problems.append(
                    f"route {pipeline.route.key}: JetStream stored nothing for {now - since:.0f}s: "
                    f"{pipeline.stats.last_error or 'no answer'}"
                )
        for key, health in self.routes.items():
            if not health.source_up and not health.seen_up:
                problems.append(f"route {key}: starting: its source has not answered yet ({health.source_error})")
            elif not health.source_up:
                problems.append(f"route {key}: source unreachable: {health.source_error}")
            if health.stalled:
                problems.append(f"route {key}: stalled: {health.reason}")
        return problems

    def _phase_record_status(self, service: str) -> dict[str, Any]:
        """The phase record followed (its revision), and the records ignored and why."""
        read = self.phase_reads.get(service)
        rejected = {kind: n for (name, kind), n in self.phase_rejections.items() if name == service}
        return {
            "record_revision": read.revision if read is not None else None,
            "record_valid": read is not None and read.valid,
            "ignored_records": list(read.ignored) if read is not None else [],
            "rejected_records": rejected,
        }

    def status(self) -> dict[str, Any]:
        """/status: the same facts as /readyz and /metrics, as JSON."""
        problems = self.problems()
        routes = []
        for pipeline in self.pipelines:
            health = self.routes[pipeline.route.key]
            stats = pipeline.stats
            routes.append(
                {
                    "service": health.service,
                    "route": health.route,
                    "ordering": pipeline.ordering,
                    "received": stats.received,
                    "published": stats.published,
                    "duplicates": stats.duplicates,
                    "dead_lettered": dict(stats.dead_lettered),
                    "skipped": stats.skipped,
                    "already_stored": stats.already_stored,
                    "reread": stats.reread,
                    "publish_errors": dict(stats.failures_by_kind),
                    "retries": stats.retries,
                    "refusing_for": (
                        round(time.monotonic() - pipeline.refusing_since, 1)
                        if pipeline.refusing_since is not None
                        else None
                    ),
                    "reordered": stats.reordered,
                    "last_reorder": stats.last_reorder,
                    "recopied": stats.recopied,
                    "in_flight": pipeline.unsettled,
                    "paused": pipeline.paused,
                    "source_up": health.source_up,
                    "source_error": health.source_error,
                    "backlog": dict(health.backlog),
                    "stalled": health.stalled,
                    "stalled_reason": health.reason,
                    "last_progress": health.last_progress_wall,
                    "last_error": stats.last_error,
                    "publish_latency_p99_seconds": stats.latency.quantile(0.99),
                }
            )
        return {
            "ready": not problems,
            "problems": problems,
            "services": [
                {
                    "service": service,
                    "phase": phase,
                    "drained_at": read.drained_at if (read := self.phase_reads.get(service)) else None,
                    **self._phase_record_status(service),
                }
                for service, phase in self.phases.items()
            ],
            "nats": {
                "connected": self.publisher.connected,
                "closed": self.publisher.closed,
                "reconnects": self.events.reconnects,
                "disconnects": self.events.disconnects,
                "in_flight": self.publisher.in_flight,
                "atomic_batches": self.publisher.stats.batches,  # sent, for routes with ordering: batched
            },
            "routes": routes,
            "reverse_routes": [
                {
                    "service": service,
                    "route": route,
                    "running": is_running,
                    "writing": stats.writing,  # holds the route's lease: the one bridge that writes it
                    "writer": stats.writer,
                    "received": stats.received,
                    "written": stats.written,
                    "filtered": stats.filtered_forwarded,
                    "unrenderable": stats.unrenderable,
                    "write_failures": stats.failures,
                    "retries": stats.retries,
                    "last_error": stats.last_error,
                }
                for (service, route), (stats, is_running) in self.reverse.items()
            ],
            "streams": [
                {
                    "name": s.name,
                    "exists": s.exists,
                    "messages": s.messages,
                    "bytes": s.bytes,
                    "max_bytes": s.max_bytes,
                    "consumers": [{"name": n, "pending": p, "ack_pending": a} for n, p, a in s.consumers],
                }
                for s in self.streams
            ],
        }
