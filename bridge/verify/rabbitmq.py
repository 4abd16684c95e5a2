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

from collections.abc import Sequence

from bridge.brokers.base import RangeRead
from bridge.config.routes import FromRabbitMQ
from bridge.config.streams import StreamConfig
from bridge.verify.claims import RouteCheck
from bridge.verify.expect import LaneComparer, expectation, unchecked_lane
from bridge.verify.report import LaneParity


async def compare_stream_queue(
    check: RouteCheck, ranges: RangeRead, streams: Sequence[StreamConfig], max_payload: int
) -> LaneParity:
    """Read the route's stream queue over its range with the bridge's own source code (the
    route's broker reads it, bridge.brokers.rabbitmq.ranges), judge each message, and compare
    with the tallies."""
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
    # Offset 0 is read as `first`: from the queue's first message, whatever it holds now.
    start = 0 if from_first else (lowest if lowest is not None else 0)
    comparer: LaneComparer | None = None
    note = "the range ends at the highest offset stored (RabbitMQ keeps no offset for stream consumers)."
    async with ranges:
        async for _, position, message in ranges.read({queue: [(start, highest)]}):
            if comparer is None:
                if not from_first and position > start:
                    note += f" The queue no longer holds offsets {start}-{position - 1}."
                comparer = LaneComparer(queue, position, highest, copies, dead)
            judged = expectation(check.route, message, streams, max_payload)
            comparer.see(position, judged.expected)
    if comparer is None:
        return unchecked_lane(queue, copies, f"the stream queue delivered nothing up to offset {highest}")
    return comparer.finish(note)
