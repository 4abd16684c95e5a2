"""Where a durable must start so that it takes over from a legacy Kafka consumer group exactly.

Per partition the group's committed offset names the first record it has not processed. The
stream sequence of that record (`search`) is the partition's own start. A JetStream consumer has
one start for all its subjects, so the durable starts at the lowest of them and the handoff acks,
before anyone consumes, every record below its own partition's start: each partition then
resumes exactly at its offset, and the durable's pending count equals the group's lag.

The plan is worked out before anything is touched, and refuses what it cannot do exactly:
members still in the group (they would process records the durable is about to deliver), a
partition the bridge has not stored up to the group's offset yet, a partition the group never
committed, and a position older than what the stream keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext

from bridge.brokers.kafka.groups import GroupPosition, Partition
from bridge.handoff.kafka_between import CopiedBetween
from bridge.handoff.search import Behind, Found, Older, Probe, Start, first_at_or_after
from bridge.handoff.stored import count_stored
from bridge.handoff.stream_lanes import KAFKA_OFFSET, KAFKA_PARTITION, KAFKA_TOPIC, kafka_probe


@dataclass(frozen=True, slots=True)
class PartitionStart:
    """One partition's part of the handoff.

    `start` is the sequence of the first record the durable must deliver for this partition
    (None: every record of it stored so far was processed already); `acked_through` the
    sequence of its last record below the group's offset (None: none at or after the durable's
    start), so the handoff knows how far to walk."""

    topic: str
    partition: int
    committed: int | None
    lag: int | None
    start: int | None = None
    start_offset: int | None = None
    acked_through: int | None = None
    refusal: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "committed_offset": self.committed,
            "lag": self.lag,
            "start_sequence": self.start,
            "start_offset": self.start_offset,
            "refusal": self.refusal,
        }


@dataclass(slots=True)
class KafkaHandoffPlan:
    """What `handoff` would do for a Kafka group, or why it will not."""

    stream: str
    durable: str
    group: str
    partitions: list[PartitionStart] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    start_sequence: int = 1
    walk_to: int = 0  # the last sequence the handoff reads to ack records below their partition's start
    to_ack: int = 0  # records the handoff acks: stored, below their partition's offset, at or after the start
    unstored: int = 0  # records Kafka had that the bridge had not stored yet, over the partitions

    @property
    def lag(self) -> int:
        return sum(partition.lag or 0 for partition in self.partitions)

    @property
    def refused(self) -> bool:
        return bool(self.refusals) or any(partition.refusal for partition in self.partitions)

    def why_not(self) -> list[str]:
        return [*self.refusals, *(p.refusal for p in self.partitions if p.refusal)]

    def as_json(self) -> dict[str, Any]:
        return {
            "legacy": {"kind": "kafka-group", "group": self.group},
            "stream": self.stream,
            "durable": self.durable,
            "start_sequence": self.start_sequence,
            "records_to_ack": self.to_ack,
            "legacy_lag": self.lag,
            "partitions": [partition.as_json() for partition in self.partitions],
            "refusals": self.why_not(),
        }


async def plan_kafka_handoff(
    js: JetStreamContext,
    *,
    stream: str,
    durable: str,
    filters: Sequence[str],
    group: GroupPosition,
    stored_through: Mapping[Partition, int],
    from_earliest_available: bool = False,
    copied: CopiedBetween | None = None,
) -> KafkaHandoffPlan:
    """The plan for moving `group` to `durable` on `stream` (read through `filters`).

    `stored_through[p]` is the offset up to which (exclusive) the bridge has stored partition p:
    its own group's committed offset, committed only after JetStream's acknowledgement.
    `copied` (bridge.handoff.kafka_between) says whether offsets the stream has nothing for held
    records the route would have stored; without it such a gap is refused."""
    plan = KafkaHandoffPlan(stream, durable, group.group)
    if group.members:
        plan.refusals.append(
            f"consumer group '{group.group}' still has {len(group.members)} active member(s) "
            f"({', '.join(sorted(set(group.members)))}): stop the legacy consumers first, so the group's "
            "offsets stop moving"
        )
    for topic in group.missing:
        plan.refusals.append(f"topic '{topic}' does not exist in Kafka")
    plan.unstored = sum(max(0, end - stored_through.get(lane, 0)) for lane, end in group.ends.items())
    info = await js.stream_info(stream)
    first_seq, last_seq = info.state.first_seq, info.state.last_seq
    for (topic, partition), committed in sorted(group.committed.items()):
        plan.partitions.append(
            await _partition_start(
                js,
                stream,
                filters,
                (topic, partition),
                group,
                committed,
                stored_through,
                first_seq,
                last_seq,
                from_earliest_available=from_earliest_available,
                copied=copied,
            )
        )
    starts = [p.start for p in plan.partitions if p.start is not None]
    plan.start_sequence = min(starts) if starts else last_seq + 1
    plan.walk_to = max((p.acked_through for p in plan.partitions if p.acked_through is not None), default=0)
    if plan.walk_to >= plan.start_sequence and not plan.refused:
        # Counted by reading what the walk will read: from offsets it would be too many where
        # markers or skipped records took offsets between.
        below = processed_by_group(plan)
        plan.to_ack = await count_stored(
            js, stream, filters, plan.start_sequence, plan.walk_to, lambda stored: below(stored.headers)
        )
    return plan


def processed_by_group(plan: KafkaHandoffPlan) -> Callable[[Mapping[str, str]], bool]:
    """Whether a forward copy (by its headers) was processed by the legacy group: its stored
    offset is below the group's committed offset on its partition. What the handoff acks."""
    committed = {(p.topic, p.partition): p.committed for p in plan.partitions if p.committed is not None}

    def processed(headers: Mapping[str, str]) -> bool:
        partition = headers.get(KAFKA_PARTITION, "")
        if not partition.isdigit():
            return False
        position = committed.get((headers.get(KAFKA_TOPIC, ""), int(partition)))
        offset = headers.get(KAFKA_OFFSET, "")
        return position is not None and offset.isdigit() and int(offset) < position

    return processed


async def _partition_start(
    js: JetStreamContext,
    stream: str,
    filters: Sequence[str],
    lane: Partition,
    group: GroupPosition,
    committed: int | None,
    stored_through: Mapping[Partition, int],
    first_seq: int,
    last_seq: int,
    *,
    from_earliest_available: bool,
    copied: CopiedBetween | None,
) -> PartitionStart:
    topic, partition = lane
    lag = group.lag(lane)
    probe = kafka_probe(js, stream, filters, topic, partition)
    if committed is None:
        if not from_earliest_available:
            return PartitionStart(
                topic,
                partition,
                None,
                None,
                refusal=f"{topic}/{partition}: group '{group.group}' never committed an offset here; "
                "--from-earliest-available starts it at its first record the stream keeps",
            )
        found: Found = await first_at_or_after(probe, first_seq, last_seq, 0, last=None)
        if isinstance(found, Older):
            found = found.first
        committed = found.position if isinstance(found, Start) else 0
        lag = max(0, group.ends[lane] - committed)
    stored = stored_through.get(lane, 0)
    if stored < committed and copied is not None and await copied(lane, stored, committed) == 0:
        # Only markers, aborted or filtered records lie between: the bridge's own group stops
        # after the last record it read, a consumer's position steps past the markers after it.
        stored = committed
    if stored < committed:
        return PartitionStart(
            topic,
            partition,
            committed,
            lag,
            refusal=f"{topic}/{partition}: the bridge has stored up to offset {stored}, the group is at "
            f"{committed}: wait for the bridge to catch up (--wait)",
        )
    found = await first_at_or_after(probe, first_seq, last_seq, committed, last=None)
    if isinstance(found, Older) and copied is not None and await copied(lane, committed, found.first.position) == 0:
        found = found.first  # nothing between was ever to be stored (a skipped tombstone at 0)
    if isinstance(found, Older):
        if not from_earliest_available:
            return PartitionStart(
                topic,
                partition,
                committed,
                lag,
                refusal=f"{topic}/{partition}: the group is at offset {committed}, older than the first record "
                f"of the partition the stream keeps (offset {found.first.position} at sequence "
                f"{found.first.sequence}): offsets {committed}..{found.first.position - 1} are not in the stream "
                "(retention, or never copied); --from-earliest-available starts there anyway",
            )
        found = found.first
    last_processed = await _last_processed(probe, first_seq, last_seq, committed)
    if isinstance(found, Behind):
        # Every record of the partition stored so far was processed: nothing of it to deliver yet.
        return PartitionStart(topic, partition, committed, lag, acked_through=last_processed)
    return PartitionStart(
        topic,
        partition,
        committed,
        lag,
        start=found.sequence,
        start_offset=found.position,
        acked_through=last_processed,
    )


async def _last_processed(probe: Probe, first_seq: int, last_seq: int, committed: int) -> int | None:
    """The sequence of the partition's last stored record below `committed` (None: none)."""
    if committed == 0:
        return None
    found = await first_at_or_after(probe, first_seq, last_seq, committed - 1, last=None)
    if isinstance(found, Start):
        # committed - 1 itself, or (when it was never stored) a bound: everything of the
        # partition below `committed` lies before the next record stored
        return found.sequence if found.position == committed - 1 else found.sequence - 1
    if isinstance(found, Older):
        return None  # nothing below `committed` is kept
    return last_seq
