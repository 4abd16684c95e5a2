"""A route's pipeline over an in-memory source against a real nats-server, run until settled.

Shared by the pipeline-level tests (dead letters, decide agreeing with explain): the source makes
positions and settling visible, the server is real.
"""

from __future__ import annotations

import asyncio
import time

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from bridge.brokers.nats.client import ConnectionEvents
from bridge.config import BridgeConfig
from bridge.deadletters import DeadLetters
from bridge.jetstream.declare import declare_streams
from bridge.jetstream.payloads import ObjectStorePayloads
from bridge.jetstream.publisher import JetStreamPublisher
from bridge.mapping import CompiledRoute
from bridge.message import SourceMessage
from bridge.pipeline.route import RoutePipeline
from bridge.pipeline.settings import PipelineSettings
from bridge.sources.memory import MemorySource

LANE = ("orders", 0)


class Nats:
    def __init__(self, nc: NatsClient, events: ConnectionEvents) -> None:
        self.nc = nc
        self.events = events

    @property
    def js(self) -> JetStreamContext:
        return self.nc.jetstream(timeout=10)

    async def messages(self, stream: str) -> list[Msg]:
        info = await self.js.stream_info(stream)
        found: list[Msg] = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            raw = await self.js.get_msg(stream, seq)
            found.append(raw)  # type: ignore[arg-type]
        return found


async def drain(
    nats: Nats,
    config: BridgeConfig,
    messages: list[SourceMessage | None],
    timeout: float = 30.0,
    source: MemorySource | None = None,
    atomic_batch: int = 0,
) -> tuple[RoutePipeline, MemorySource]:
    """Run one route over `messages` until the source is settled to the end (`atomic_batch`:
    as a route with `ordering: batched` does, in batches of up to that many)."""
    await declare_streams(nats.js, config.all_streams(), atomic=bool(atomic_batch))
    service, route_config = config.routes()[0]
    route = CompiledRoute.compile(service, route_config)
    source = source or MemorySource({LANE: messages})
    async with JetStreamPublisher(nats.nc) as publisher:
        nats.events.add(publisher)
        pipeline = RoutePipeline(
            route,
            source,
            publisher,
            PipelineSettings(atomic_batch=atomic_batch),
            dead_letters=DeadLetters(config.dead_letters, route),
            payloads=ObjectStorePayloads(nats.nc, config.dead_letters.payload_bucket),
            streams=config.all_streams(),
        )
        task = asyncio.create_task(pipeline.run())
        deadline = time.monotonic() + timeout
        try:
            while not source.exhausted():
                if task.done():
                    task.result()
                    raise AssertionError("pipeline ended before settling everything")
                assert time.monotonic() < deadline, f"not settled in {timeout}s: {pipeline.stats}"
                await asyncio.sleep(0.02)
        finally:
            pipeline.stop()
            await asyncio.wait_for(task, 30)
    return pipeline, source
