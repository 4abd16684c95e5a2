"""A stream queue read by offset with the bridge's own source code: what verify compares with the
streams and repair copies again (bridge.brokers.base.RangeRead).

A stream read takes nothing from anybody: its acks only grant credit. RabbitMQ keeps no offset
for AMQP 0-9-1 stream consumers, so a stream route's lane has no settled position, and its
beginning is known only by reading (a consumer starts at the first message of the chunk that
holds its offset, so what comes before the range is dropped here). Shadow and queue routes have
no positions at all: a consumed message is gone, so there is nothing to read by position.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence

from bridge.brokers.base import HeldLane, HeldLanes, ReadLimits
from bridge.brokers.rabbitmq.client import amqp_url
from bridge.brokers.rabbitmq.source import RabbitMQRouteSource
from bridge.config.routes import FromRabbitMQ, RabbitMQMode
from bridge.config.sources import RabbitMQSource
from bridge.errors import BridgeError
from bridge.logs import redact_url
from bridge.message import SourceMessage
from bridge.sources.base import Lane, NoCheckpoints

FETCH = 1000  # deliveries per fetch


class StreamRanges:
    """A RabbitMQ route read by stream offset; `queue` is the route's stream queue."""

    def __init__(
        self, name: str, source: RabbitMQSource, subscription: FromRabbitMQ, queue: str, *, limits: ReadLimits
    ) -> None:
        self._name = name
        self._source = source
        self._subscription = subscription
        self._queue = queue
        self._limits = limits

    @property
    def where(self) -> str:
        return f"RabbitMQ at {redact_url(amqp_url(self._source))}"

    async def __aenter__(self) -> StreamRanges:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def lane(self, label: str) -> Lane:
        return label

    async def held(self) -> HeldLanes:
        """The stream queue, its beginning and settled position unknown (see the module)."""
        if self._subscription.effective_mode is not RabbitMQMode.STREAM:
            return HeldLanes()
        return HeldLanes({self._queue: HeldLane()})

    async def read(
        self, ranges: Mapping[Lane, Sequence[tuple[int, int]]]
    ) -> AsyncIterator[tuple[Lane, int, SourceMessage | None]]:
        """The stream queue's messages in `ranges`, read from the first range's start (offset 0
        is asked as `first`: the same message, whether or not the queue still holds offset 0)
        up to the last range's end, or until the queue is silent for `limits.idle` seconds."""
        if self._subscription.effective_mode is not RabbitMQMode.STREAM:
            raise BridgeError(f"queue '{self._queue}' is not a stream: it has no positions to read")
        spans = sorted(span for lane, lane_spans in ranges.items() if lane == self._queue for span in lane_spans)
        if not spans:
            return
        first, last = spans[0][0], spans[-1][1]
        start: int | str = "first" if first == 0 else first
        reader = RabbitMQRouteSource(
            self._name, self._source, self._subscription.model_copy(update={"stream_offset": start}), self._queue
        )
        limits = self._limits
        try:
            await asyncio.wait_for(reader.start(NoCheckpoints()), limits.seconds * 2)
            idle_since = time.monotonic()
            done = False
            while not done and time.monotonic() - idle_since < limits.idle:
                batch = await asyncio.wait_for(reader.fetch(FETCH, 0.5), limits.fetch_stall)
                if batch:
                    idle_since = time.monotonic()
                for received in batch:
                    position = received.position
                    if position > last:
                        done = True
                        break
                    if any(low <= position <= high for low, high in spans):
                        yield self._queue, position, received.message
                    done = position >= last
                if batch:
                    await reader.settle({self._queue: batch[-1].position})  # credit only: a stream keeps what is read
        finally:
            await reader.close()
