"""Putting a planned handoff into JetStream: the durable made at its start, and the records below
each partition's own start acked before anyone consumes.

The durable is made at the plan's start sequence with no ack limit and a long ack wait, so the
walk can hold what it must not ack; the handoff then reads up to the last record it must ack,
acks the records the legacy group had processed, and holds the others. Then the consumer gets
its declared settings (ack wait, backoff, max_ack_pending) and the held records are given back
(NAK) in stream order: JetStream delivers them again first, in that order, so each partition
still resumes at its offset in order. Their delivery count starts at 2 (a JetStream consumer
cannot skip a record without delivering it), which is said in the result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import NotFoundError

from bridge.errors import BridgeError
from bridge.handoff.drain_plan import DrainHandoffPlan
from bridge.handoff.kafka_plan import KafkaHandoffPlan, processed_by_group
from bridge.handoff.queue_plan import QueueHandoffPlan, pending_from

WALK_ACK_WAIT = 3600.0  # seconds: nothing the walk holds may come back to it while it walks
WALK_BATCH = 256
WALK_IDLE = 5.0  # seconds without a message: the walk has read all there is


class HandoffRefusedError(BridgeError):
    """The durable cannot be positioned as planned; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class HandoffResult:
    """What the handoff did, and the durable's count beside the legacy lag: they must match."""

    durable: str
    start_sequence: int
    acked: int
    given_back: int  # read by the walk, not processed by the legacy consumer: delivered again first
    pending: int  # the durable's num_pending + num_ack_pending afterwards
    legacy_lag: int  # when the plan read the legacy side
    unstored: int = 0  # of that lag, what the bridge had not stored yet (its own backlog then)
    legacy_lag_after: int | None = None  # read again once the durable was made
    # Of a Kafka lag (offsets), the records the route stores: a transaction marker, an aborted
    # record or a skipped tombstone takes an offset and is never stored (None: not counted).
    legacy_records: int | None = None

    @property
    def matches(self) -> bool:
        """With the legacy side at rest, pending == lag exactly. While legacy producers still
        publish (the shadow phase), both grow between the readings: pending must then lie between
        the lag less what was unstored when planned and the lag read afterwards. A Kafka lag
        counted in records the route stores is compared instead of the offsets, when known."""
        lag = self.legacy_records if self.legacy_records is not None else self.legacy_lag
        grew = max(0, (self.legacy_lag_after or 0) - self.legacy_lag)
        return lag - self.unstored <= self.pending <= lag + grew

    def as_json(self) -> dict[str, Any]:
        return {
            "durable": self.durable,
            "start_sequence": self.start_sequence,
            "acked": self.acked,
            "given_back": self.given_back,
            "durable_pending": self.pending,
            "legacy_lag": self.legacy_lag,
            "unstored_when_planned": self.unstored,
            "legacy_lag_after": self.legacy_lag_after,
            "legacy_records": self.legacy_records,
            "matches": self.matches,
        }


async def position_kafka_durable(
    js: JetStreamContext, plan: KafkaHandoffPlan, declared: ConsumerConfig
) -> HandoffResult:
    """Make `declared` (a pull consumer) at `plan`'s start and ack what the legacy group processed."""
    if plan.refused:
        raise HandoffRefusedError("; ".join(plan.why_not()))
    needs_walk = plan.to_ack > 0 or plan.walk_to >= plan.start_sequence
    walk_to = plan.walk_to if needs_walk else 0
    below = processed_by_group(plan)
    acked, held, info = await _position(
        js,
        plan.stream,
        plan.durable,
        plan.start_sequence,
        walk_to,
        lambda message: below(message.headers or {}),
        declared,
        "partition",
    )
    return HandoffResult(
        durable=plan.durable,
        start_sequence=plan.start_sequence,
        acked=acked,
        given_back=held,
        pending=(info.num_pending or 0) + (info.num_ack_pending or 0),
        legacy_lag=plan.lag,
        unstored=plan.unstored,
    )


async def position_drain_durable(
    js: JetStreamContext, plan: DrainHandoffPlan, declared: ConsumerConfig
) -> HandoffResult:
    """Make `declared` at the drain plan's start and ack what the legacy consumer processed.

    While NATS producers publish, the durable's count grows past the plan: what arrived after
    the plan's last sequence is counted before and after reading the durable, and the result's
    `pending` leaves those out (`unstored` is the spread between the two counts)."""
    if plan.refused:
        raise HandoffRefusedError("; ".join(plan.why_not()))
    keep = plan.keep
    acked, held, info = await _position(
        js,
        plan.stream,
        plan.durable,
        plan.start_sequence,
        plan.walk_to,
        lambda message: message.metadata.sequence.stream not in keep,
        declared,
        "legacy position",
    )
    filters = _filters(info.config)
    arrived_before = await pending_from(js, plan.stream, filters, plan.last_sequence + 1)
    info = await js.consumer_info(plan.stream, plan.durable)
    arrived_after = await pending_from(js, plan.stream, filters, plan.last_sequence + 1)
    pending = (info.num_pending or 0) + (info.num_ack_pending or 0)
    return HandoffResult(
        durable=plan.durable,
        start_sequence=plan.start_sequence,
        acked=acked,
        given_back=held,
        pending=pending - arrived_after,
        legacy_lag=plan.expected,
        unstored=arrived_after - arrived_before,
    )


def _filters(config: ConsumerConfig) -> list[str]:
    if config.filter_subjects:
        return list(config.filter_subjects)
    return [config.filter_subject or ">"]


async def _position(
    js: JetStreamContext,
    stream: str,
    durable: str,
    start_sequence: int,
    walk_to: int,
    processed: Callable[[Msg], bool],
    declared: ConsumerConfig,
    lanes: str,
) -> tuple[int, int, ConsumerInfo]:
    """Make the durable at `start_sequence`, walk to `walk_to` acking what `processed` says, then
    give it its declared settings and give back (NAK, in order) what the walk held."""
    needs_walk = walk_to >= start_sequence
    if needs_walk and declared.deliver_subject:
        raise HandoffRefusedError(
            f"durable '{durable}' is a push consumer and some messages after its start were processed by the "
            f"legacy consumer (its {lanes}s differ): handoff acks them through a pull consumer; declare it "
            "`delivery: pull`"
        )
    if needs_walk and declared.ack_policy not in (None, AckPolicy.EXPLICIT):
        raise HandoffRefusedError(
            f"durable '{durable}' has ack_policy {declared.ack_policy}: the messages after its start the legacy "
            "consumer processed can only be acked one by one with ack_policy explicit"
        )
    await _make_fresh(js, stream, durable)
    start = _starting_at(declared, durable, start_sequence)
    walking = dataclasses.replace(start, max_ack_pending=-1, ack_wait=WALK_ACK_WAIT, backoff=None, max_deliver=-1)
    await js.add_consumer(stream, walking)
    acked, held = 0, list[Msg]()
    if needs_walk:
        acked, held = await _walk(js, stream, durable, start_sequence, walk_to, processed)
    await js.add_consumer(stream, start)  # the declared settings, same start
    for message in held:
        await message.nak()
    return acked, len(held), await js.consumer_info(stream, durable)


async def position_queue_durable(
    js: JetStreamContext, plan: QueueHandoffPlan, declared: ConsumerConfig
) -> HandoffResult:
    """Make `declared` at the stream's copy of the queue's head: one lane, nothing to ack."""
    if plan.refused:
        raise HandoffRefusedError("; ".join(plan.why_not()))
    await _make_fresh(js, plan.stream, plan.durable)
    await js.add_consumer(plan.stream, _starting_at(declared, plan.durable, plan.start_sequence))
    info = await js.consumer_info(plan.stream, plan.durable)
    return HandoffResult(
        durable=plan.durable,
        start_sequence=plan.start_sequence,
        acked=0,
        given_back=0,
        pending=(info.num_pending or 0) + (info.num_ack_pending or 0),
        legacy_lag=plan.lag,
        unstored=plan.unstored,
    )


def _starting_at(declared: ConsumerConfig, durable: str, sequence: int) -> ConsumerConfig:
    return dataclasses.replace(
        declared,
        durable_name=durable,
        name=None,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=sequence,
        opt_start_time=None,
    )


async def _make_fresh(js: JetStreamContext, stream: str, durable: str) -> None:
    """A durable that exists but never delivered anything (made by `consumers apply`) is made
    again at the right start; one that has delivered is refused: someone consumes it already."""
    try:
        info = await js.consumer_info(stream, durable)
    except NotFoundError:
        return
    delivered = info.delivered.stream_seq if info.delivered is not None else 0
    if delivered:
        raise HandoffRefusedError(
            f"durable '{durable}' on stream '{stream}' has delivered messages already (up to sequence "
            f"{delivered}): it is being consumed (or an earlier handoff acked what the legacy consumer had "
            "processed), so it cannot be positioned again; delete it to hand off afresh"
        )
    await js.delete_consumer(stream, durable)


async def _walk(
    js: JetStreamContext, stream: str, durable: str, start: int, walk_to: int, processed: Callable[[Msg], bool]
) -> tuple[int, list[Msg]]:
    """Read from `start` to `walk_to`; ack what the legacy consumer processed, hold the rest."""
    subscription = await js.pull_subscribe_bind(durable=durable, stream=stream)
    acked, held = 0, []
    next_sequence = start
    try:
        while next_sequence <= walk_to:
            try:
                batch = await subscription.fetch(min(WALK_BATCH, walk_to - next_sequence + 1), timeout=WALK_IDLE)
            except TimeoutError:  # nats-py's, or asyncio's when the fetch's deadline ran out first
                break
            for message in batch:
                next_sequence = message.metadata.sequence.stream + 1
                if processed(message):
                    await message.ack_sync()
                    acked += 1
                else:
                    held.append(message)
    finally:
        await subscription.unsubscribe()
    return acked, held
