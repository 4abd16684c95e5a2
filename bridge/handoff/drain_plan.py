"""Where a durable must start to take over from a legacy consumer in the drain phase, exactly.

In drain the service's producers publish to NATS, and a reverse route writes their messages to
the legacy exchange or topic, so the legacy consumer's backlog mixes two kinds: messages of the
old legacy producers (the stream holds the forward copy of each) and reverse-written copies of
NATS messages (each carries `nats-bridge-stream-seq: <stream>:<sequence>`, the message it copies).
With the reverse route held off (`handoff` switches it off while it reads; its durable says
everything up to `written_through` was written) every stream message on the consumer's filter
is exactly one of:

- a forward copy: processed when its original is no longer in the legacy backlog;
- a NATS message at or below `written_through`: processed when its copy is not in the backlog;
- a NATS message above it: never written, so never seen by the legacy consumer — delivered.

Kafka: the backlog is read (every record from the group's committed offset to the partition's
end, its lag), so both kinds are known record by record; forward copies are placed by their
stored `Kafka-Offset` against the group's offset. RabbitMQ: only the queue's head can be read,
but a queue is first in, first out within each kind — NATS messages arrive in stream order (one
reverse route, one batch at a time), legacy producers' messages in the order of their forward
copies — so the head and the depth say which of each are still there: from a reverse-written
head at sequence S, the NATS messages from S on, plus the *last* (depth - those) forward copies;
from a legacy head (its forward copy found by Msg-Id), every forward copy from it on, plus the
*last* (depth - those) NATS messages written.

The plan says where the durable starts (the first message to deliver), which messages after it
the handoff acks (processed), and refuses what it cannot do exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext

from bridge.brokers.kafka.groups import GroupPosition, Partition
from bridge.handoff.kafka_between import CopiedBetween
from bridge.handoff.kafka_plan import plan_kafka_handoff
from bridge.handoff.queue_plan import SEARCH_WINDOW, counted_start, find_id
from bridge.handoff.stored import Stored, read_stored
from bridge.handoff.stream_lanes import KAFKA_OFFSET, KAFKA_PARTITION, KAFKA_TOPIC


@dataclass(slots=True)
class DrainHandoffPlan:
    """What `handoff` would do in the drain phase, or why it will not."""

    stream: str
    durable: str
    legacy: str  # "Kafka group 'g'" or "RabbitMQ queue 'q'", for people
    lag: int  # the legacy consumer's backlog: group lag or queue depth
    reverse: str  # the reverse route that writes into it, `service/route`
    written_through: int  # the reverse route wrote every message up to this sequence
    group: str | None = None
    queue: str | None = None
    start_sequence: int = 0
    last_sequence: int = 0  # the stream's last sequence when planned
    walk_to: int = 0  # the last sequence the handoff acks
    keep: frozenset[int] = frozenset()  # sequences from the start the durable delivers (through last_sequence)
    to_ack: int = 0
    from_reverse: int = 0  # of the backlog: copies the reverse route wrote
    from_legacy: int = 0  # of the backlog: legacy producers' messages
    unwritten: int = 0  # NATS messages on the filter the reverse route had not written: delivered too
    unstored: int = 0
    refusals: list[str] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return bool(self.refusals)

    def why_not(self) -> list[str]:
        return list(self.refusals)

    @property
    def expected(self) -> int:
        """What the durable must have pending through `last_sequence`: the legacy backlog and the
        NATS messages the reverse route never wrote."""
        return self.lag + self.unwritten

    def as_json(self) -> dict[str, Any]:
        return {
            "phase": "drain",
            "legacy": {"kind": "kafka-group" if self.group else "rabbitmq-queue", "name": self.group or self.queue},
            "stream": self.stream,
            "durable": self.durable,
            "reverse_route": self.reverse,
            "reverse_written_through": self.written_through,
            "start_sequence": self.start_sequence,
            "records_to_ack": self.to_ack,
            "legacy_lag": self.lag,
            "legacy_lag_from_reverse": self.from_reverse,
            "legacy_lag_from_legacy_producers": self.from_legacy,
            "unwritten": self.unwritten,
            "refusals": self.why_not(),
        }


def _settle(plan: DrainHandoffPlan, stored: Sequence[Stored], processed: Callable[[Stored], bool]) -> None:
    """Start, keep, acks and the unwritten count from the stored messages and what was processed."""
    keep = {message.sequence for message in stored if not processed(message)}
    plan.start_sequence = min(keep) if keep else plan.last_sequence + 1
    acks = [m.sequence for m in stored if m.sequence >= plan.start_sequence and m.sequence not in keep]
    plan.keep = frozenset(keep)
    plan.to_ack = len(acks)
    plan.walk_to = max(acks, default=0)
    plan.unwritten = sum(1 for m in stored if not m.forwarded and m.sequence > plan.written_through)


async def plan_kafka_drain(
    js: JetStreamContext,
    plan: DrainHandoffPlan,
    *,
    filters: Sequence[str],
    group: GroupPosition,
    stored_through: Mapping[Partition, int],
    backlog_positions: Sequence[int | None],
    from_earliest_available: bool,
    copied: CopiedBetween | None = None,
) -> DrainHandoffPlan:
    """`backlog_positions`: for each record of the group's backlog, the stream sequence its
    `nats-bridge-stream-seq` names (None: a legacy producer's record); `copied` as for
    `plan_kafka_handoff` (offsets of markers or skipped records are no gap)."""
    forward = await plan_kafka_handoff(
        js,
        stream=plan.stream,
        durable=plan.durable,
        filters=filters,
        group=group,
        stored_through=stored_through,
        from_earliest_available=from_earliest_available,
        copied=copied,
    )
    plan.refusals += forward.why_not()
    plan.unstored = forward.unstored
    written = {position for position in backlog_positions if position is not None}
    plan.from_reverse = len(backlog_positions) - sum(1 for p in backlog_positions if p is None)
    plan.from_legacy = plan.lag - plan.from_reverse
    if plan.refused:
        return plan
    info = await js.stream_info(plan.stream)
    plan.last_sequence = info.state.last_seq
    candidates = [p.start for p in forward.partitions if p.start is not None] + [plan.written_through + 1]
    lowest = min([*candidates, *written])
    if written and min(written) < info.state.first_seq and not from_earliest_available:
        plan.refusals.append(
            f"the group's backlog holds reverse-written copies of sequences from {min(written)} on, older than "
            f"the stream keeps (first sequence {info.state.first_seq}); --from-earliest-available starts there"
        )
        return plan
    # Never committed (with --from-earliest-available): nothing of it processed.
    committed = {lane: offset if offset is not None else 0 for lane, offset in group.committed.items()}

    def processed(message: Stored) -> bool:
        if message.forwarded:
            lane = (message.headers.get(KAFKA_TOPIC, ""), int(message.headers.get(KAFKA_PARTITION, "-1")))
            offset = message.headers.get(KAFKA_OFFSET, "")
            position = committed.get(lane)
            return position is not None and offset.isdigit() and int(offset) < position
        return message.sequence <= plan.written_through and message.sequence not in written

    stored = await read_stored(js, plan.stream, filters, max(lowest, info.state.first_seq), plan.last_sequence)
    _settle(plan, stored, processed)
    missing = written - {m.sequence for m in stored}
    if missing:
        plan.refusals.append(
            f"{len(missing)} reverse-written record(s) in the group's backlog name stream sequences not on the "
            f"consumer's filter subjects (e.g. {min(missing)}): its filters do not cover what the group reads"
        )
    return plan


async def plan_queue_drain(
    js: JetStreamContext,
    plan: DrainHandoffPlan,
    *,
    filters: Sequence[str],
    consumers: int,
    head_position: int | None,
    head_msg_id: str | None,
    shadow_backlog: int,
) -> DrainHandoffPlan:
    """`head_position`: the stream sequence a reverse-written head names; else `head_msg_id`,
    the Msg-Id the bridge gave a legacy producer's head (None for both: the queue is empty, or
    its head cannot be placed)."""
    if consumers:
        plan.refusals.append(
            f"queue '{plan.queue}' still has {consumers} consumer(s): stop the legacy consumers first, "
            "so what the queue holds stops changing"
        )
    if shadow_backlog:
        plan.refusals.append(
            f"the bridge's shadow copy of '{plan.queue}' still holds {shadow_backlog} message(s) not stored: "
            "wait for the bridge to catch up (--wait)"
        )
    if plan.refused:
        return plan
    info = await js.stream_info(plan.stream)
    first, plan.last_sequence = info.state.first_seq, info.state.last_seq
    depth = plan.lag
    if depth == 0:
        # Everything the queue got was processed: the NATS messages written, every forward copy.
        stored = await read_stored(js, plan.stream, filters, plan.written_through + 1, plan.last_sequence)
        _settle(plan, stored, lambda m: m.forwarded)
        return plan
    if head_position is not None:
        await _from_reverse_head(js, plan, filters, head_position, first)
        return plan
    if head_msg_id is None:
        plan.refusals.append(f"the head of queue '{plan.queue}' has no Msg-Id the bridge can derive")
        return plan
    low = await counted_start(js, plan.stream, filters, depth + SEARCH_WINDOW, first, plan.last_sequence)
    head = await find_id(js, plan.stream, filters, head_msg_id, low, depth + 2 * SEARCH_WINDOW)
    if head is None:
        plan.refusals.append(
            f"the head of queue '{plan.queue}' (Msg-Id {head_msg_id}) is not in stream '{plan.stream}' near "
            "where its depth puts it"
        )
        return plan
    await _from_legacy_head(js, plan, filters, head, min(low, head))
    return plan


async def _from_reverse_head(
    js: JetStreamContext, plan: DrainHandoffPlan, filters: Sequence[str], head: int, first: int
) -> None:
    """The head is the reverse route's copy of sequence `head`: every NATS message from it on is
    unprocessed, and the rest of the depth is the last forward copies (their originals arrived
    after it, so their copies were stored after it)."""
    if head < first:
        plan.refusals.append(
            f"the head of queue '{plan.queue}' copies sequence {head}, older than the stream keeps (first {first})"
        )
        return
    stored = await read_stored(js, plan.stream, filters, head, plan.last_sequence)
    natives = [m.sequence for m in stored if not m.forwarded and m.sequence <= plan.written_through]
    forwards = [m.sequence for m in stored if m.forwarded]
    legacy_left = plan.lag - len(natives)
    plan.from_reverse, plan.from_legacy = len(natives), legacy_left
    if legacy_left < 0 or legacy_left > len(forwards):
        plan.refusals.append(
            f"queue '{plan.queue}' holds {plan.lag} message(s), but the reverse route wrote {len(natives)} from its "
            f"head (sequence {head}) on and {len(forwards)} forward cop(ies) follow: the queue lost or gained "
            "messages another way (a second consumer, a TTL, a length limit, another publisher)"
        )
        return
    unprocessed_forwards = set(forwards[len(forwards) - legacy_left :])
    _settle(plan, stored, lambda m: m.forwarded and m.sequence not in unprocessed_forwards)


async def _from_legacy_head(
    js: JetStreamContext, plan: DrainHandoffPlan, filters: Sequence[str], head: int, low: int
) -> None:
    """The head is a legacy producer's message whose forward copy is at `head`: every forward
    copy from it on is unprocessed, and the rest of the depth is the last NATS messages written."""
    stored = await read_stored(js, plan.stream, filters, low, plan.last_sequence)
    forwards = [m.sequence for m in stored if m.forwarded and m.sequence >= head]
    natives = [m.sequence for m in stored if not m.forwarded and m.sequence <= plan.written_through]
    written_left = plan.lag - len(forwards)
    plan.from_reverse, plan.from_legacy = written_left, len(forwards)
    if written_left < 0 or written_left > len(natives):
        plan.refusals.append(
            f"queue '{plan.queue}' holds {plan.lag} message(s); {len(forwards)} forward cop(ies) follow its head and "
            f"{len(natives)} reverse-written message(s) were found near it: the queue lost or gained messages "
            "another way, or its head is further back than the search looked"
        )
        return
    unprocessed_natives = set(natives[len(natives) - written_left :]) if written_left else set()

    def processed(message: Stored) -> bool:
        if message.forwarded:
            return message.sequence < head
        return message.sequence <= plan.written_through and message.sequence not in unprocessed_natives

    _settle(plan, stored, processed)
