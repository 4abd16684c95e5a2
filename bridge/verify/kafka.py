"""Kafka's side of a route: each record in `[first, committed)` is stored exactly once.

Per partition of every topic the route reads: `first` is the partition's beginning when the
route starts at `earliest`, else the lowest offset stored; `committed` is the bridge's own
group's committed offset (read with the admin API: no group is joined, nothing committed).
Everything below the committed offset was acknowledged by JetStream before the commit, so
anything in the range that is not in the stream was lost. The records of the range are read
with a consumer *without a group* (assign + seek), so each is judged with the route's own
mapping code: a record the route does not publish (a tombstone with `tombstones: skip`, an
unmappable record with `on_error: skip`) is *not expected*, and one it dead-letters counts
as accounted for when the dead letter is in the dead-letter stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from bridge.brokers.kafka import client
from bridge.brokers.kafka.records import kafka_message
from bridge.config.model import FromKafka, KafkaSource, StreamConfig
from bridge.routing import kafka_topic_matches
from bridge.sources.base import Lane, lane_label
from bridge.verify.claims import RouteCheck
from bridge.verify.expect import LaneComparer, expectation, unchecked_lane
from bridge.verify.limits import CONNECT_TIMEOUT, KAFKA_STALL
from bridge.verify.report import LaneParity


@dataclass(slots=True)
class _KafkaPartition:
    beginning: int
    committed: int | None  # the bridge group's next offset; None: nothing committed


class KafkaRouteReader:
    """Kafka's side of one route: committed offsets first, the records of each range later."""

    def __init__(self, check: RouteCheck, source: KafkaSource, group: str) -> None:
        self.check = check
        self.source = source
        self.group = group
        self.partitions: dict[tuple[str, int], _KafkaPartition] = {}
        self._consumer: Any = None

    async def prepare(self) -> None:
        """The group's committed offsets and the topics' partitions (admin API: no group is
        joined), then each partition's beginning.

        Called before the streams are scanned: whatever is committed is stored by then.
        """
        timeout_ms = int(CONNECT_TIMEOUT * 1000)
        admin = client.admin(self.source, purpose="verify", request_timeout_ms=timeout_ms)
        try:
            await asyncio.wait_for(admin.start(), CONNECT_TIMEOUT)
            offsets = await asyncio.wait_for(admin.list_consumer_group_offsets(self.group), CONNECT_TIMEOUT)
            # Not consumer.topics() + partitions_for_topic(): the latter reads a metadata cache
            # the former does not fill, so a topic created after the client started has none.
            described = await asyncio.wait_for(admin.describe_topics(), CONNECT_TIMEOUT)
        finally:
            with contextlib.suppress(KafkaError, OSError, TimeoutError, RuntimeError):
                await admin.close()
        committed = {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        subscription = self.check.route.config.from_
        assert isinstance(subscription, FromKafka)
        partitions = {
            str(topic["topic"]): sorted(int(p["partition"]) for p in topic["partitions"])
            for topic in described
            if topic["error_code"] == 0
        }
        absent = [topic for topic in subscription.topics if topic not in partitions]
        if absent:
            self.check.notes.append(f"topic(s) {', '.join(absent)} do not exist on the cluster.")
        tps = [
            TopicPartition(topic, partition)
            for topic in sorted(partitions)
            if kafka_topic_matches(topic, subscription.topics, subscription.topic_pattern)
            for partition in partitions[topic]
        ]
        if not tps:
            return
        consumer = client.consumer(
            self.source,
            purpose="verify",
            request_timeout_ms=timeout_ms,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",  # what the bridge reads
            auto_offset_reset="earliest",
        )
        self._consumer = consumer
        await asyncio.wait_for(consumer.start(), CONNECT_TIMEOUT)
        beginnings = await asyncio.wait_for(consumer.beginning_offsets(tps), CONNECT_TIMEOUT)
        for tp in tps:
            self.partitions[(tp.topic, tp.partition)] = _KafkaPartition(
                beginnings[tp], committed.get((tp.topic, tp.partition))
            )

    async def compare(self, streams: Sequence[StreamConfig], max_payload: int) -> list[LaneParity]:
        """Read each partition's range, judge every record, and compare with the tallies."""
        check = self.check
        subscription = check.route.config.from_
        assert isinstance(subscription, FromKafka)
        earliest = subscription.start == "earliest"
        lanes: dict[Lane, LaneParity] = {}
        comparers: dict[TopicPartition, LaneComparer] = {}
        for (topic, partition), info in sorted(self.partitions.items()):
            label = lane_label((topic, partition))
            copies, dead = check.lane_counts((topic, partition))
            if info.committed is None:
                lanes[(topic, partition)] = unchecked_lane(
                    label, copies, f"group {self.group} has no committed offset here: nothing is settled yet"
                )
                continue
            lowest = copies.lowest()
            if earliest:
                first, note = info.beginning, None
            elif lowest is not None:
                first = max(lowest, info.beginning)
                note = f"start: {subscription.start}: the range begins at the lowest offset stored"
            else:
                lanes[(topic, partition)] = unchecked_lane(
                    label, copies, f"nothing stored and start: {subscription.start}: the range's start is unknown"
                )
                continue
            last = info.committed - 1
            if first > last:
                lanes[(topic, partition)] = unchecked_lane(
                    label, copies, f"the group's committed offset {info.committed} is not past offset {first}"
                )
                continue
            comparer = LaneComparer(label, first, last, copies, dead)
            comparer.parity.note = note
            comparers[TopicPartition(topic, partition)] = comparer
        if comparers:
            await self._read(comparers, streams, max_payload)
            for tp, comparer in comparers.items():
                lanes[(tp.topic, tp.partition)] = comparer.finish(comparer.parity.note)
        for lane in sorted(set(check.copies) - set(self.partitions), key=lane_label):
            copies, _ = check.lane_counts(lane)
            lanes[lane] = unchecked_lane(lane_label(lane), copies, "stored, but not a partition on the cluster now")
        return [lanes[key] for key in sorted(lanes, key=_lane_order)]

    async def _read(
        self, comparers: Mapping[TopicPartition, LaneComparer], streams: Sequence[StreamConfig], max_payload: int
    ) -> None:
        consumer = self._consumer
        route = self.check.route
        consumer.assign(list(comparers))
        remaining: dict[TopicPartition, int] = {}
        for tp, comparer in comparers.items():
            assert comparer.parity.first is not None
            assert comparer.parity.last is not None
            consumer.seek(tp, comparer.parity.first)
            remaining[tp] = comparer.parity.last
        progress = time.monotonic()
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=5000)
            for tp, records in batches.items():
                comparer = comparers[tp]
                for record in records:
                    if record.offset > remaining.get(tp, -1):
                        break
                    judged = expectation(route, kafka_message(record), streams, max_payload)
                    comparer.see(record.offset, judged.expected)
                progress = time.monotonic() if records else progress
            for tp in list(remaining):
                # Transaction markers and compacted gaps have offsets but no records: go by position.
                if await consumer.position(tp) > remaining[tp]:
                    del remaining[tp]
            if remaining and time.monotonic() - progress > KAFKA_STALL:
                where = ", ".join(f"{tp.topic}/{tp.partition}" for tp in remaining)
                raise TimeoutError(f"Kafka delivered nothing for {KAFKA_STALL:g}s while reading {where}")

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            with contextlib.suppress(KafkaError, OSError, TimeoutError, RuntimeError):
                await consumer.stop()


def _lane_order(lane: Lane) -> tuple[str, int]:
    """Kafka lanes by topic, then partition as a number (`t/2` before `t/10`)."""
    if isinstance(lane, tuple) and len(lane) == 2:
        return str(lane[0]), int(lane[1])
    return lane_label(lane), 0
