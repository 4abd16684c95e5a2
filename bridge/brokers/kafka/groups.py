"""A legacy consumer group, read from outside: whether it still has members, and where it stands
on each partition of its topics (committed offset, beginning and end). What a handoff needs to
know before it moves the group's consumers to JetStream; nothing is joined or committed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from bridge.brokers.kafka import client
from bridge.config.sources import KafkaSource

Partition = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True, slots=True)
class GroupPosition:
    """`group` as Kafka has it now. `committed[p]` is None for a partition the group never
    committed; `missing` lists the topics asked for that do not exist."""

    group: str
    state: str  # Kafka's group state: Empty, Stable, PreparingRebalance, Dead, ...
    members: tuple[str, ...]  # client ids of the active members
    committed: dict[Partition, int | None] = field(default_factory=dict)
    beginnings: dict[Partition, int] = field(default_factory=dict)
    ends: dict[Partition, int] = field(default_factory=dict)
    missing: tuple[str, ...] = ()

    def lag(self, partition: Partition) -> int | None:
        """Records the group has not processed on `partition` (None: never committed there)."""
        committed = self.committed.get(partition)
        return None if committed is None else max(0, self.ends[partition] - committed)


async def group_position(
    source: KafkaSource, group: str, topics: Sequence[str], *, seconds: float = 15.0
) -> GroupPosition:
    """Read `group` on `topics`; raises KafkaError, OSError or TimeoutError when Kafka cannot say."""
    admin = client.admin(source, purpose="handoff", request_timeout_ms=int(seconds * 1000))
    consumer = client.consumer(source, purpose="handoff", group_id=None, enable_auto_commit=False)
    try:
        await asyncio.wait_for(asyncio.gather(admin.start(), consumer.start()), seconds)
        [response] = await asyncio.wait_for(admin.describe_consumer_groups([group]), seconds)
        _code, _name, state, _protocol_type, _protocol, members, *_ = response.groups[0]
        existing = await asyncio.wait_for(admin.list_topics(), seconds)
        present = [topic for topic in topics if topic in existing]
        described = await asyncio.wait_for(admin.describe_topics(present), seconds) if present else []
        partitions = [
            TopicPartition(str(item["topic"]), int(p["partition"]))
            for item in described
            if item["error_code"] == 0
            for p in item["partitions"]
        ]
        ends = await asyncio.wait_for(consumer.end_offsets(partitions), seconds) if partitions else {}
        beginnings = await asyncio.wait_for(consumer.beginning_offsets(partitions), seconds) if partitions else {}
        offsets = await asyncio.wait_for(admin.list_consumer_group_offsets(group), seconds)
    finally:
        with contextlib.suppress(KafkaError, OSError, TimeoutError, RuntimeError):
            await consumer.stop()
        with contextlib.suppress(KafkaError, OSError, TimeoutError, RuntimeError):
            await admin.close()
    committed: dict[Partition, int | None] = {}
    for tp in sorted(partitions):
        meta = offsets.get(tp)
        committed[(tp.topic, tp.partition)] = meta.offset if meta is not None and meta.offset >= 0 else None
    return GroupPosition(
        group=group,
        state=str(state),
        members=tuple(str(member[1]) for member in members),
        committed=committed,
        beginnings={(tp.topic, tp.partition): offset for tp, offset in beginnings.items()},
        ends={(tp.topic, tp.partition): offset for tp, offset in ends.items()},
        missing=tuple(topic for topic in topics if topic not in existing),
    )


BRIDGE_GROUP_PREFIX = "nats-bridge."  # bridge.brokers.kafka.names.default_group: the bridge's own, never legacy


async def committed_groups(source: KafkaSource, topics: Sequence[str], *, seconds: float = 15.0) -> list[GroupPosition]:
    """Every consumer group (but the bridge's own) with a committed offset on one of `topics`: where
    it stands on each partition it committed there, its state and members. What `import kafka`
    writes a JetStream consumer for. Raises KafkaError, OSError or TimeoutError when Kafka cannot say."""
    admin = client.admin(source, purpose="import", request_timeout_ms=int(seconds * 1000))
    consumer = client.consumer(source, purpose="import", group_id=None, enable_auto_commit=False)
    wanted = set(topics)
    try:
        await asyncio.wait_for(asyncio.gather(admin.start(), consumer.start()), seconds)
        listed = await asyncio.wait_for(admin.list_consumer_groups(), seconds)
        names = sorted({str(item[0]) for item in listed if not str(item[0]).startswith(BRIDGE_GROUP_PREFIX)})
        committed: dict[str, dict[Partition, int | None]] = {}
        for name in names:
            offsets = await asyncio.wait_for(admin.list_consumer_group_offsets(name), seconds)
            mine: dict[Partition, int | None] = {
                (tp.topic, tp.partition): meta.offset
                for tp, meta in sorted(offsets.items())
                if tp.topic in wanted and meta.offset >= 0
            }
            if mine:
                committed[name] = mine
        if not committed:
            return []
        states: dict[str, tuple[str, tuple[str, ...]]] = {}
        for name in committed:
            # One group per request: aiokafka 0.14 sometimes fails to decode a DescribeGroups response
            # holding several groups (an empty one beside one with members), and drops the connection.
            [response] = await asyncio.wait_for(admin.describe_consumer_groups([name]), seconds)
            _code, _name, state, _protocol_type, _protocol, members, *_ = response.groups[0]
            states[name] = (str(state), tuple(str(member[1]) for member in members))
        partitions = sorted({TopicPartition(t, p) for mine in committed.values() for t, p in mine})
        ends = await asyncio.wait_for(consumer.end_offsets(partitions), seconds)
        beginnings = await asyncio.wait_for(consumer.beginning_offsets(partitions), seconds)
    finally:
        with contextlib.suppress(KafkaError, OSError, TimeoutError, RuntimeError):
            await consumer.stop()
        with contextlib.suppress(KafkaError, OSError, TimeoutError, RuntimeError):
            await admin.close()
    found = []
    for name, mine in committed.items():
        state, members = states.get(name, ("Unknown", ()))
        found.append(
            GroupPosition(
                group=name,
                state=state,
                members=members,
                committed=mine,
                beginnings={p: beginnings[TopicPartition(*p)] for p in mine},
                ends={p: ends[TopicPartition(*p)] for p in mine},
            )
        )
    return found
