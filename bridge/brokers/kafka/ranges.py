"""Reading given offset ranges of partitions, outside any group (assign + seek, read_committed, as
the bridge reads): what verify compares with the streams and repair copies again. `KafkaRanges`
is a route's RangeRead over it (bridge.brokers.base).

A range ends by position, not by the last record seen: transaction markers and compacted gaps
have offsets but no records. A read that gets nothing for `stall` seconds is given up with a
TimeoutError naming the partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bridge.brokers.base import HeldLane, HeldLanes, ReadLimits
from bridge.brokers.kafka import client
from bridge.brokers.kafka.records import kafka_message
from bridge.config.routes import FromKafka
from bridge.config.sources import KafkaSource
from bridge.message import SourceMessage
from bridge.routing import kafka_topic_matches
from bridge.sources.base import Lane

Partition = tuple[str, int]  # (topic, partition), the Kafka lane


async def group_offsets(
    source: KafkaSource, group: str, *, purpose: str, seconds: float
) -> tuple[dict[Partition, int], dict[str, list[int]]]:
    """`group`'s committed offsets (admin API: no group is joined, nothing committed), and every
    existing topic's partitions."""
    admin = client.admin(source, purpose=purpose, request_timeout_ms=int(seconds * 1000))
    try:
        await asyncio.wait_for(admin.start(), seconds)
        offsets = await asyncio.wait_for(admin.list_consumer_group_offsets(group), seconds)
        # Not consumer.topics() + partitions_for_topic(): the latter reads a metadata cache
        # the former does not fill, so a topic created after the client started has none.
        described = await asyncio.wait_for(admin.describe_topics(), seconds)
    finally:
        with contextlib.suppress(KafkaError, OSError, TimeoutError, RuntimeError):
            await admin.close()
    committed = {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
    partitions = {
        str(topic["topic"]): sorted(int(p["partition"]) for p in topic["partitions"])
        for topic in described
        if topic["error_code"] == 0
    }
    return committed, partitions


class RangeReader:
    """`async with RangeReader(source, purpose=..., seconds=...)`: one groupless consumer."""

    def __init__(
        self, source: KafkaSource, *, purpose: str, seconds: float, stall: float, reset: str = "earliest"
    ) -> None:
        """`reset="none"`: a range Kafka no longer holds raises (OffsetOutOfRangeError) rather
        than being read from the earliest offset held."""
        self._consumer: AIOKafkaConsumer = client.consumer(
            source,
            purpose=purpose,
            request_timeout_ms=int(seconds * 1000),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",  # what the bridge reads
            auto_offset_reset=reset,
        )
        self._seconds = seconds
        self._stall = stall

    async def __aenter__(self) -> RangeReader:
        await asyncio.wait_for(self._consumer.start(), self._seconds)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        with contextlib.suppress(KafkaError, OSError, TimeoutError, RuntimeError):
            await self._consumer.stop()

    async def beginnings(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        """The earliest offset Kafka still holds, per partition."""
        tps = [TopicPartition(topic, partition) for topic, partition in partitions]
        found = await asyncio.wait_for(self._consumer.beginning_offsets(tps), self._seconds)
        return {(tp.topic, tp.partition): offset for tp, offset in found.items()}

    async def read(
        self, ranges: Mapping[Partition, Sequence[tuple[int, int]]]
    ) -> AsyncIterator[tuple[Partition, int, SourceMessage]]:
        """(partition, offset, message) of every record in the inclusive `(first, last)` ranges,
        in offset order per partition; all partitions are read together, one range each at a time."""
        consumer = self._consumer
        pending = {TopicPartition(topic, partition): list(spans) for (topic, partition), spans in ranges.items()}
        pending = {tp: spans for tp, spans in pending.items() if spans}
        consumer.assign(list(pending))
        for tp, spans in pending.items():
            consumer.seek(tp, spans[0][0])
        progress = time.monotonic()
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=500, max_records=5000)
            for tp, records in batches.items():
                first, last = pending[tp][0] if tp in pending else (0, -1)
                for record in records:
                    if record.offset > last:
                        break
                    if record.offset >= first:
                        yield (tp.topic, tp.partition), record.offset, kafka_message(record)
                progress = time.monotonic() if records else progress
            for tp in list(pending):
                spans = pending[tp]
                if await consumer.position(tp) > spans[0][1]:
                    spans.pop(0)
                    if spans:
                        consumer.seek(tp, spans[0][0])
                    else:
                        del pending[tp]
            if pending and time.monotonic() - progress > self._stall:
                where = ", ".join(f"{tp.topic}/{tp.partition}" for tp in pending)
                raise TimeoutError(f"Kafka delivered nothing for {self._stall:g}s while reading {where}")


class KafkaRanges:
    """A Kafka route read by offset (bridge.brokers.base.RangeRead): its own group's committed
    offsets through the admin API (no group is joined, nothing committed), the records through
    one groupless RangeReader, started when first needed (the group is asked first: a cluster
    that does not answer is reported by the admin client, and no consumer starts for nothing)."""

    def __init__(
        self,
        source: KafkaSource,
        subscription: FromKafka,
        group: str,
        *,
        purpose: str,
        limits: ReadLimits,
        strict: bool,
    ) -> None:
        self._source = source
        self._subscription = subscription
        self._group = group
        self._purpose = purpose
        self._seconds = limits.seconds
        self._reader = RangeReader(
            source, purpose=purpose, seconds=limits.seconds, stall=limits.stall, reset="none" if strict else "earliest"
        )
        self._started = False

    @property
    def where(self) -> str:
        return f"Kafka at {','.join(self._source.bootstrap_servers)}"

    async def __aenter__(self) -> KafkaRanges:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._started:
            self._started = False
            await self._reader.__aexit__()

    async def _started_reader(self) -> RangeReader:
        if not self._started:
            await self._reader.__aenter__()
            self._started = True
        return self._reader

    def lane(self, label: str) -> Lane:
        topic, _, partition = label.rpartition("/")
        return topic, int(partition)

    async def held(self) -> HeldLanes:
        """Every partition of the topics the route reads, with its beginning and the group's
        committed offset (None: nothing committed there)."""
        committed, partitions = await group_offsets(
            self._source, self._group, purpose=self._purpose, seconds=self._seconds
        )
        subscription = self._subscription
        held = HeldLanes(settled_by=f"group {self._group}")
        absent = [topic for topic in subscription.topics if topic not in partitions]
        if absent:
            held.notes.append(f"topic(s) {', '.join(absent)} do not exist on the cluster.")
        lanes = [
            (topic, partition)
            for topic in sorted(partitions)
            if kafka_topic_matches(topic, subscription.topics, subscription.topic_pattern)
            for partition in partitions[topic]
        ]
        if lanes:
            beginnings = await (await self._started_reader()).beginnings(lanes)
            held.lanes = {lane: HeldLane(beginnings[lane], committed.get(lane)) for lane in lanes}
        return held

    async def read(
        self, ranges: Mapping[Lane, Sequence[tuple[int, int]]]
    ) -> AsyncIterator[tuple[Lane, int, SourceMessage | None]]:
        partitions = {(str(lane[0]), int(lane[1])): spans for lane, spans in ranges.items() if isinstance(lane, tuple)}
        reader = await self._started_reader()
        async for partition, offset, message in reader.read(partitions):
            yield partition, offset, message
