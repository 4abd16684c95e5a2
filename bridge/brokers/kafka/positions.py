"""Where each newly assigned partition starts: the rule of `start.py` applied to what Kafka says
(the group's commits with their metadata, the offsets held, the offsets at a start time), then
corrected by what the checkpoints say is stored. Kept apart from the consumer's loop because it
runs once per assignment and needs its own admin client (aiokafka's consumer does not return a
commit's metadata)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bridge.brokers.kafka import client
from bridge.brokers.kafka.start import commit_metadata, partitions_at_start, start_position
from bridge.config.sources import KafkaSource
from bridge.sources.base import Lane, LaneOwner

log = logging.getLogger("bridge.brokers.kafka.source")

Commit = Callable[[AIOKafkaConsumer, Mapping[TopicPartition, Any]], Awaitable[None]]


@dataclass(slots=True)
class AssignmentPositions:
    """One source's positioning of its assigned partitions; `start_at` is shared with the source
    (the first offset wanted after each seek), `at_start` feeds the metadata of every commit."""

    name: str
    source: KafkaSource
    group: str
    start: str
    commit: Commit
    owner: LaneOwner | None = None
    start_at: dict[TopicPartition, int] = field(default_factory=dict)
    at_start: dict[str, int] = field(default_factory=dict)  # per topic, partitions_at_start
    admin: AIOKafkaAdminClient | None = None  # reads committed offsets with their metadata

    async def close(self) -> None:
        if self.admin is not None:
            admin, self.admin = self.admin, None
            with contextlib.suppress(KafkaError, OSError, RuntimeError):
                await admin.close()

    async def position(
        self, consumer: AIOKafkaConsumer, partitions: Collection[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """Seek each newly assigned partition to its `start_position`; the offsets set.

        When Kafka does not answer, nothing is set ({}): aiokafka then resumes at the commit, or
        at the earliest offset held, which can copy more than `start` wanted but skips nothing.
        """
        tps = sorted(partitions)
        topics = sorted({tp.topic for tp in tps})
        try:
            committed = await self._committed(consumer, topics, tps)
            beginnings = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
            at_times = await self._offsets_at_start_time(consumer, [tp for tp in tps if tp not in committed])
        except KafkaError as error:
            log.warning(
                "source %s: cannot read the group's offsets (%s); the partitions resume at their commit, "
                "or at the earliest offset held",
                self.name,
                str(error) or type(error).__name__,
            )
            return {}
        for topic in topics:
            known = consumer.partitions_for_topic(topic) or set()
            count = max(len(known), 1 + max((tp.partition for tp in tps if tp.topic == topic), default=-1))
            mine = {tp.partition: entry for tp, entry in committed.items() if tp.topic == topic}
            self.at_start[topic] = partitions_at_start(mine, count)
        starts: dict[TopicPartition, int] = {}
        first: dict[TopicPartition, tuple[int, str]] = {}
        for tp in tps:
            entry = committed.get(tp)
            position = start_position(
                tp.partition,
                entry[0] if entry is not None else None,
                at_start=self.at_start[tp.topic],
                start=self.start,
                beginning=beginnings[tp],
                end=ends[tp],
                at_time=at_times.get(tp),
            )
            consumer.seek(tp, position.offset)
            self.start_at[tp] = starts[tp] = position.offset
            if position.warning:
                log.warning("source %s: %s/%d: %s", self.name, tp.topic, tp.partition, position.why)
            elif entry is None:
                log.info(
                    "source %s: %s/%d has no committed offset: %s", self.name, tp.topic, tp.partition, position.why
                )
            if position.commit:
                first[tp] = (position.offset, commit_metadata(self.at_start[tp.topic]))
        if first:
            try:
                await self.commit(consumer, first)
            except (KafkaError, TimeoutError) as error:
                log.warning(
                    "source %s: could not commit the start position of %s (%s); the next assignment decides again",
                    self.name,
                    ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(first)),
                    str(error) or type(error).__name__,
                )
        return starts

    async def _committed(
        self, consumer: AIOKafkaConsumer, topics: Sequence[str], assigned: Sequence[TopicPartition]
    ) -> dict[TopicPartition, tuple[int, str]]:
        """The group's commits, with their metadata, on every partition of `topics` (owned by this
        instance or not: the number of partitions at the first start is in any of them)."""
        every = set(assigned)
        for topic in topics:
            every.update(TopicPartition(topic, partition) for partition in consumer.partitions_for_topic(topic) or ())
        if self.admin is None:
            admin = client.admin(self.source, purpose="offsets")
            try:
                await admin.start()
            except BaseException:
                with contextlib.suppress(KafkaError, OSError, RuntimeError):
                    await admin.close()
                raise
            self.admin = admin
        found = await self.admin.list_consumer_group_offsets(self.group, partitions=sorted(every))
        return {tp: (meta.offset, meta.metadata or "") for tp, meta in found.items() if meta.offset >= 0}

    async def _offsets_at_start_time(
        self, consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """For a route that starts at a time: the first offset at or after it, where there is one."""
        start = self.start
        if start in ("earliest", "latest") or not partitions:
            return {}
        timestamp_ms = int(datetime.fromisoformat(start).timestamp() * 1000)
        found = await consumer.offsets_for_times(dict.fromkeys(partitions, timestamp_ms))
        return {tp: offset.offset for tp, offset in found.items() if offset is not None}

    async def skip_stored(
        self,
        consumer: AIOKafkaConsumer,
        partitions: Collection[TopicPartition],
        starts: Mapping[TopicPartition, int],
        stored: Mapping[Lane, int],
    ) -> None:
        """Start after what the checkpoints say is stored when the group's commit is older (the
        bridge died between a checkpoint and its commit): re-reading it would only skip it. And
        start back at the first record the group committed that no stream holds: JetStream lost
        it after acknowledging it (a store restored from a copy), so it is copied again; the
        checkpoint scan skips every record in between that is still stored."""
        for tp in sorted(partitions):
            through = stored.get((tp.topic, tp.partition), -1)
            if through < 0:
                continue
            position = starts.get(tp)
            if position is None:
                try:
                    position = await consumer.position(tp)
                except KafkaError:
                    continue  # reading from the commit is slower, never wrong
            if position <= through:
                log.info(
                    "source %s: %s/%d resumes at %d, after its checkpoint",
                    self.name,
                    tp.topic,
                    tp.partition,
                    through + 1,
                )
                consumer.seek(tp, through + 1)
                self.start_at[tp] = through + 1
            elif self.owner is not None and (missing := self.owner.missing_before((tp.topic, tp.partition), position)):
                first = missing[0][0]
                log.error(
                    "source %s: %s/%d: %d record(s) the group committed are in no stream (offsets %s): "
                    "JetStream lost acknowledged messages (a store restored from an older copy, writes lost "
                    "before fsync) or they were filtered; copying them again from offset %d",
                    self.name,
                    tp.topic,
                    tp.partition,
                    sum(last - start + 1 for start, last in missing),
                    ", ".join(f"{start}-{last}" if last > start else str(start) for start, last in missing[:20]),
                    first,
                )
                consumer.seek(tp, first)
                self.start_at[tp] = first
