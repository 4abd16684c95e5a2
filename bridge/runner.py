"""`nats-bridge run`: wire every route of a mapping file together and run until told to stop.

One NATS connection and one publisher serve all routes; each route gets its own source
(its own consumer group or queue) and pipeline. SIGINT/SIGTERM stop reading, wait —
bounded — for in-flight PubAcks, settle what is stored, close, and exit 0.

A NATS client that closes for good (nats-py does on most server `-ERR`s, e.g. an expired or
revoked login, and when finite reconnect attempts run out) is an outage the process cannot
mend: the publisher, checkpoints, phase KV and reverse routes all hold that client. The
bridge then stops like on SIGTERM — settling only what JetStream acknowledged — and `run`
raises NatsConnectionLostError, so the process exits non-zero and a supervisor starts it
afresh; meanwhile /healthz answers 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import APIError

from bridge.brokers import route_broker
from bridge.brokers.nats.client import ConnectionEvents, connect_error_text, connect_nats, watch_closed
from bridge.config.model import BridgeConfig
from bridge.config.routes import RouteConfig
from bridge.config.services import ReverseRouteConfig
from bridge.config.streams import StreamConfig
from bridge.cutover.controller import CutoverController
from bridge.cutover.store import PhaseStore
from bridge.cutover.supervisor import Supervisor
from bridge.deadletters import DEFAULT_MAX_CONTROL_LINE, DeadLetters
from bridge.errors import (
    AtomicBatchesUnsupportedError,
    BridgeError,
    JetStreamLostWritesError,
    NatsConnectionLostError,
    NatsUnavailableError,
)
from bridge.jetstream.checkpoints import JetStreamCheckpoints
from bridge.jetstream.declare import declare_streams
from bridge.jetstream.lost_writes import LostWritesWatch
from bridge.jetstream.payloads import ObjectStorePayloads
from bridge.jetstream.publisher import JetStreamPublisher
from bridge.logs import Scrubber, config_secrets
from bridge.mapping import CompiledRoute
from bridge.operations.health import HealthMonitor
from bridge.operations.http import HttpAddress, bound_address, serve
from bridge.operations.metrics import bridge_registry
from bridge.pipeline.route import RoutePipeline
from bridge.pipeline.settings import PipelineSettings
from bridge.plan import compile_plan
from bridge.reverse.route import ReverseRoute
from bridge.route_shapes import streams_reached
from bridge.sources.base import Source

log = logging.getLogger(__name__)

# How long JetStream may time out while the streams are declared before the bridge gives up (exit 2).
DECLARE_PATIENCE = 30.0
JS_TEMPORARILY_UNAVAILABLE = 10008
# ordering: batched — messages per atomic batch, at most (nats-server takes up to 1,000): 500 was
# 1.4x pipelined's throughput in bench/atomic_batch_order.py, 100 was 0.6x.
ATOMIC_BATCH = 500


@dataclass(slots=True)
class RunSettings:
    """How the bridge runs, beyond what the mapping file says."""

    window: int = 4096
    ack_timeout: float = 5.0
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    checkpoints: bool = True
    http: HttpAddress | None = None  # where /metrics, /healthz, /readyz and /status are served
    http_token: str | None = field(default=None, repr=False)  # bearer token for /status and /metrics
    # Told where the endpoint listens once it serves: a worker tells its supervisor (bridge.workers).
    http_bound: Callable[[HttpAddress], None] | None = None
    stall_after: float = 60.0  # a route with work and no progress this long is stalled (not ready)
    phase_interval: float = 1.0  # how often service phases are read from KV
    # The servers' max_control_line (nats-server's default): subjects too long for it are
    # dead-lettered instead of sent, as the server would close the connection on them.
    max_control_line: int = DEFAULT_MAX_CONTROL_LINE

    @property
    def health_interval(self) -> float:
        """How often backlogs and streams are looked at: often enough to notice a stall in time."""
        return max(0.5, min(5.0, self.stall_after / 4))


def build_source(config: BridgeConfig, service: str, route: CompiledRoute) -> Source:
    """The source connector for one route."""
    return route_broker(config, service, route.config).source()


class Bridge:
    """Every route of one mapping file, sharing one NATS connection."""

    def __init__(self, config: BridgeConfig, settings: RunSettings | None = None) -> None:
        self.config = config
        self.settings = settings or RunSettings()
        self.pipelines: list[RoutePipeline] = []
        self.monitor: HealthMonitor | None = None
        self.http: web.AppRunner | None = None
        self.events: ConnectionEvents | None = None
        self._stop = asyncio.Event()
        self._lost_writes: str | None = None
        # Some route sends atomic batches, so the streams must take them (cleared when the server cannot).
        self._atomic_batches = any(self._batches(service, route) for service, route in config.routes())

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Run until `stop()`; raises BridgeError subclasses for failures a person must fix."""
        routes = compile_plan(self.config).routes
        events = self.events = ConnectionEvents()
        try:
            nc = await connect_nats(self.config.nats, events)
        except (NatsError, OSError, TimeoutError) as error:
            raise NatsUnavailableError(connect_error_text(self.config.nats, error)) from None
        watch = asyncio.create_task(self._stop_when_lost(nc, events), name="nats-closed")
        try:
            js = nc.jetstream()
            streams = self.config.all_streams()
            await self._declare(js, streams)
            publisher = JetStreamPublisher(
                nc,
                window=self.settings.window,
                ack_timeout=self.settings.ack_timeout,
                max_control_line=self.settings.max_control_line,
            )
            events.add(publisher)
            if events.lost is not None:
                publisher.on_closed(events.lost)  # closed before the publisher could hear of it
            checkpoints = (
                JetStreamCheckpoints(
                    js,
                    [stream.name for stream in streams],
                    scan_margin=self.settings.window,
                    replicas=self.config.state_replicas,
                )
                if self.settings.checkpoints
                else None
            )
            events.add(LostWritesWatch(js, publisher.highest_seq, self._writes_lost, checkpoints))
            dead_letters = self.config.dead_letters
            payloads = ObjectStorePayloads(
                nc, dead_letters.payload_bucket, dead_letters.replicas or self.config.state_replicas
            )
            async with publisher:
                self.pipelines = [
                    RoutePipeline(
                        route,
                        build_source(self.config, route.service, route),
                        publisher,
                        self._pipeline_settings(route),
                        checkpoints=checkpoints,
                        dead_letters=DeadLetters(dead_letters, route),
                        payloads=payloads,
                        streams=streams,
                    )
                    for route in routes
                ]
                self.monitor = HealthMonitor(
                    pipelines=self.pipelines,
                    publisher=publisher,
                    events=events,
                    js=js,
                    streams=streams,
                    stall_after=self.settings.stall_after,
                    interval=self.settings.health_interval,
                )
                if self.settings.http is not None:
                    self.http = await self._serve_http(self.settings.http, self.monitor)
                store = PhaseStore(js, replicas=self.config.state_replicas)
                try:
                    await self._run_routes(self.monitor, store, checkpoints, js)
                finally:
                    if self.http is not None:
                        await self.http.cleanup()
        except Exception:
            if events.lost is None:
                raise
            # Whatever failed next (a route, a KV read) failed because the client is gone.
            raise NatsConnectionLostError(f"NATS connection closed for good: {events.lost}") from None
        else:
            if events.lost is not None:
                raise NatsConnectionLostError(f"NATS connection closed for good: {events.lost}")
            if self._lost_writes is not None:
                raise JetStreamLostWritesError(self._lost_writes)
        finally:
            watch.cancel()
            events.closing = True  # our own close below is no outage
            with contextlib.suppress(NatsError, OSError, TimeoutError):
                await nc.drain()
            if not nc.is_closed:
                await nc.close()

    async def _serve_http(self, address: HttpAddress, monitor: HealthMonitor) -> web.AppRunner:
        """Serve /metrics /healthz /readyz /status; tell whoever asked (a supervisor) where."""
        secrets = config_secrets(self.config) + [t for t in (self.settings.http_token,) if t]
        runner = await serve(address, monitor, bridge_registry(monitor), self.settings.http_token, Scrubber(secrets))
        if self.settings.http_bound is not None:
            self.settings.http_bound(bound_address(runner, address))
        return runner

    async def _declare(self, js: JetStreamContext, streams: list[StreamConfig]) -> None:
        """Declare the streams; a JetStream that times out (a cluster just restarted, still
        electing its meta leader) is asked again for up to DECLARE_PATIENCE. Then, or at once
        for any other failure (no JetStream at all), a person or a supervisor's restart must
        act; a traceback would only hide the reason."""
        deadline = time.monotonic() + DECLARE_PATIENCE
        delay = 0.5
        while True:
            try:
                await self._declare_once(js, streams)
            except (NatsError, TimeoutError) as error:
                timed_out = isinstance(error, TimeoutError | NatsTimeoutError) or _unavailable(error)
                if not timed_out or time.monotonic() + delay > deadline or self._stop.is_set():
                    raise NatsUnavailableError(
                        f"NATS did not answer while declaring the streams ({_describe_nats(error)}); "
                        "nothing was read or published"
                    ) from None
                log.warning("JetStream did not answer while declaring the streams (%s); asking again", error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                return

    async def _declare_once(self, js: JetStreamContext, streams: list[StreamConfig]) -> None:
        """A server that cannot take atomic batches (before 2.12) ends the bridge when a route
        asked for `ordering: batched` itself; routes that only took the default run pipelined."""
        try:
            await declare_streams(js, streams, atomic=self._atomic_batches)
        except AtomicBatchesUnsupportedError as error:
            if self.config.requires_atomic_batches:
                raise
            log.warning(
                "%s. Routes left to the default ordering run pipelined: a stream leader stopping without "
                "lame duck mode can reorder their records (README: Order)",
                error,
            )
            self._atomic_batches = False
            await declare_streams(js, streams)

    def _writes_lost(self, what: str) -> None:
        """JetStream forgot acknowledged messages while the bridge ran (bridge.jetstream.lost_writes)."""
        self._lost_writes = what
        log.error(
            "JetStream lost acknowledged messages: %s (a store restored from an older copy, or writes lost "
            "before fsync). Stopping every route and exiting 1: on its restart the bridge compares the "
            "sources' committed positions with what the streams hold and copies the lost records again",
            what,
        )
        self._stop.set()

    async def _stop_when_lost(self, nc: NatsClient, events: ConnectionEvents) -> None:
        """Stop everything when the client closes for good: no route can store anything more."""
        watchdog = asyncio.create_task(watch_closed(nc, self.config.nats, events), name="nats-closed-watchdog")
        try:
            reason = await events.wait_lost()
        finally:
            watchdog.cancel()
        log.error(
            "NATS connection closed for good: %s. Nothing more can be stored: stopping every route "
            "(only what JetStream acknowledged is acknowledged at the sources) and exiting 1 for a "
            "supervisor to start the bridge again",
            reason,
        )
        self._stop.set()

    def _pipeline_settings(self, route: CompiledRoute) -> PipelineSettings:
        if route.config.ordering == "strict":
            return dataclasses.replace(self.settings.pipeline, max_in_flight_per_lane=1)
        if route.config.ordering_chosen:
            if route.config.ordering == "batched":
                return dataclasses.replace(self.settings.pipeline, atomic_batch=ATOMIC_BATCH)
            return self.settings.pipeline
        if self._atomic_batches and self._batches(route.service, route.config):
            return dataclasses.replace(self.settings.pipeline, atomic_batch=ATOMIC_BATCH, atomic_required=False)
        return self.settings.pipeline

    def _batches(self, service: str, route: RouteConfig) -> bool:
        """Does the route send atomic batches? When it says `ordering: batched`; left to the
        default, when it writes into a stream with replicas, whose leader can change. A
        single-replica stream has no failover to reorder it, and nats-server stages each atomic
        batch of an R1 file stream in a store on disk (2.4 ms a batch here against 0.8 ms on R3,
        which made p50 latency 33 ms at 5,000 msg/s over 6 partitions: bench/README.md)."""
        if route.ordering != "batched":
            return False
        if route.ordering_chosen:
            return True
        return any(stream.replicas > 1 for stream in streams_reached(service, route, self.config.streams))

    async def _run_routes(
        self,
        monitor: HealthMonitor,
        store: PhaseStore,
        checkpoints: JetStreamCheckpoints | None,
        js: JetStreamContext,
    ) -> None:
        """Run the routes each service's phase calls for, until stopped; the cut-over
        controller starts and stops them as phases change."""
        forward: dict[str, list[RoutePipeline]] = {}
        for pipeline in self.pipelines:
            forward.setdefault(pipeline.route.service, []).append(pipeline)

        def reverse(service: str, route: ReverseRouteConfig) -> ReverseRoute:
            # Its refused messages go where the file sends every dead letter; its lease and that
            # stream are kept with the replicas of the bridge's other state.
            config = self.config
            target = config.sources[route.to.source]
            return ReverseRoute(
                service, route, target, js, dead_letters=config.dead_letters, state_replicas=config.state_replicas
            )

        try:
            async with asyncio.TaskGroup() as group:
                supervisor = Supervisor(group)
                controller = CutoverController(
                    config=self.config,
                    store=store,
                    supervisor=supervisor,
                    forward=forward,
                    reverse=reverse,
                    monitor=monitor,
                    checkpoints=checkpoints,
                    instance=f"{socket.gethostname()}:{os.getpid()}",
                    interval=self.settings.phase_interval,
                )
                monitor_task = group.create_task(monitor.run(), name="health-monitor")
                start = group.create_task(controller.start(), name="phases")
                await asyncio.wait([start, group.create_task(self._stop.wait())], return_when=asyncio.FIRST_COMPLETED)
                if not self._stop.is_set():
                    follow = group.create_task(controller.run(), name="cutover-controller")
                    await self._stop.wait()
                    controller.stop()
                    await _end_controller(follow, monitor.publisher)
                controller.stop()
                await _end_controller(start, monitor.publisher)
                await supervisor.stop_all()
                monitor_task.cancel()
        except BaseExceptionGroup as failures:
            # One route failing stops the others (their sources settle and close); report
            # the failure itself, not an exception group, nor what the shutdown it caused
            # raised on the way (a task started on a group that is already shutting down).
            first = _first_bridge_error(failures)
            if first is None:
                raise
            raise first from None


def _first_bridge_error(group: BaseExceptionGroup[BaseException]) -> BridgeError | None:
    for failure in group.exceptions:
        if isinstance(failure, BridgeError):
            return failure
        if isinstance(failure, BaseExceptionGroup):
            found = _first_bridge_error(failure)
            if found is not None:
                return found
    return None


def _unavailable(error: BaseException) -> bool:
    """JetStream's "temporarily unavailable" (err_code 10008): a cluster without a meta leader yet."""
    return isinstance(error, APIError) and error.err_code == JS_TEMPORARILY_UNAVAILABLE


def _describe_nats(error: BaseException) -> str:
    return str(error) or type(error).__name__


async def _end_controller(task: asyncio.Task[None], publisher: JetStreamPublisher) -> None:
    """Let the cut-over controller finish what it is doing (stopping a route, a retire's
    cleanup) — unless NATS is unreachable: then it can only be waiting for a KV answer that
    will not come for seconds, and the routes' bounded drain must not queue behind it."""
    while not task.done():
        if not publisher.connected:
            task.cancel()
        await asyncio.wait([task], timeout=0.1)
    if not task.cancelled():
        task.result()
