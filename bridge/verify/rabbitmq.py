"""RabbitMQ's side of a route: a stream queue read over its range; queue routes have none.

- **Stream-queue routes** (`mode: stream`) are checked by `Amqp-Stream-Offset`, the way Kafka
  routes are by offset. RabbitMQ keeps no offset for AMQP 0-9-1 stream consumers, so the range
  ends at the highest offset stored (or dead-lettered): a tail the bridge never stored is not
  seen. It starts at the queue's first offset for `stream_offset: first`, else at the lowest
  offset stored. The messages of the range are read from the queue with the bridge's own
  source code (a stream read takes nothing from anybody; its acks only grant credit).
- **Shadow and queue routes** have no positions: a delivered and acknowledged message leaves
  no trace in RabbitMQ, so there is nothing here to read. Only "no Nats-Msg-Id stored twice"
  can be checked, and the count stored is reported; completeness needs the bridge's own
  accounting, which does not exist yet, and the report says so instead of guessing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Mapping, Sequence

from bridge.brokers.rabbitmq.source import RabbitMQRouteSource
from bridge.config.routes import FromRabbitMQ
from bridge.config.sources import RabbitMQSource
from bridge.config.streams import StreamConfig
from bridge.sources.base import Lane
from bridge.verify.claims import RouteCheck
from bridge.verify.expect import LaneComparer, expectation, unchecked_lane
from bridge.verify.limits import CONNECT_TIMEOUT, STREAM_IDLE, STREAM_STALL
from bridge.verify.report import LaneParity


class _NoCheckpoints:
    """The LaneOwner a read-only stream reader gives the bridge's source: nothing is stored
    by it, so the source starts where it is told (its `stream_offset`)."""

    async def lanes_assigned(self, lanes: Collection[Lane]) -> Mapping[Lane, int]:
        return {}

    async def lanes_revoked(self, lanes: Collection[Lane]) -> Mapping[Lane, int]:
        return {}

    def missing_before(self, lane: Lane, position: int) -> list[tuple[int, int]]:
        return []


async def compare_stream_queue(
    check: RouteCheck, source: RabbitMQSource, streams: Sequence[StreamConfig], max_payload: int
) -> LaneParity:
    """Read the route's stream queue over its range with the bridge's own source code, judge
    each message, and compare with the tallies."""
    subscription = check.route.config.from_
    assert isinstance(subscription, FromRabbitMQ)
    assert check.queue is not None
    queue = check.queue
    copies, dead = check.lane_counts(queue)
    lowest, highest = copies.lowest(), copies.highest()
    if highest is None:
        return unchecked_lane(
            queue, copies, "nothing stored: RabbitMQ keeps no consumer offset, so there is no range to check"
        )
    from_first = subscription.stream_offset == "first"
    start: int | str = "first" if from_first else (lowest if lowest is not None else 0)
    reader = RabbitMQRouteSource(
        check.route.config.source, source, subscription.model_copy(update={"stream_offset": start}), queue
    )
    comparer: LaneComparer | None = None
    note = "the range ends at the highest offset stored (RabbitMQ keeps no offset for stream consumers)."
    try:
        await asyncio.wait_for(reader.start(_NoCheckpoints()), CONNECT_TIMEOUT * 2)
        idle_since = time.monotonic()
        done = False
        while not done and time.monotonic() - idle_since < STREAM_IDLE:
            batch = await asyncio.wait_for(reader.fetch(1000, 0.5), STREAM_STALL)
            if batch:
                idle_since = time.monotonic()
            for received in batch:
                position = received.position
                if isinstance(start, int) and position < start:
                    continue  # a stream consumer starts at its chunk's first message
                if position > highest:
                    done = True
                    break
                if comparer is None:
                    if isinstance(start, int) and position > start:
                        note += f" The queue no longer holds offsets {start}-{position - 1}."
                    comparer = LaneComparer(queue, position, highest, copies, dead)
                judged = expectation(check.route, received.message, streams, max_payload)
                comparer.see(position, judged.expected)
                done = position >= highest
            if batch:
                await reader.settle({queue: batch[-1].position})  # credit only: a stream keeps what is read
    finally:
        await reader.close()
    if comparer is None:
        return unchecked_lane(queue, copies, f"the stream queue delivered nothing up to offset {highest}")
    return comparer.finish(note)
