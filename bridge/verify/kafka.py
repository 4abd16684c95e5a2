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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bridge.brokers.kafka.ranges import RangeReader, group_offsets
from bridge.config.routes import FromKafka
from bridge.config.sources import KafkaSource
from bridge.config.streams import StreamConfig
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
        self._reader: RangeReader | None = None

    async def prepare(self) -> None:
        """The group's committed offsets and the topics' partitions, then each partition's
        beginning. Called before the streams are scanned: whatever is committed is stored by then.
        """
        committed, partitions = await group_offsets(self.source, self.group, purpose="verify", seconds=CONNECT_TIMEOUT)
        subscription = self.check.route.config.from_
        assert isinstance(subscription, FromKafka)
        absent = [topic for topic in subscription.topics if topic not in partitions]
        if absent:
            self.check.notes.append(f"topic(s) {', '.join(absent)} do not exist on the cluster.")
        lanes = [
            (topic, partition)
            for topic in sorted(partitions)
            if kafka_topic_matches(topic, subscription.topics, subscription.topic_pattern)
            for partition in partitions[topic]
        ]
        if not lanes:
            return
        reader = RangeReader(self.source, purpose="verify", seconds=CONNECT_TIMEOUT, stall=KAFKA_STALL)
        self._reader = await reader.__aenter__()
        beginnings = await reader.beginnings(lanes)
        for lane in lanes:
            self.partitions[lane] = _KafkaPartition(beginnings[lane], committed.get(lane))

    async def compare(self, streams: Sequence[StreamConfig], max_payload: int) -> list[LaneParity]:
        """Read each partition's range, judge every record, and compare with the tallies."""
        check = self.check
        subscription = check.route.config.from_
        assert isinstance(subscription, FromKafka)
        earliest = subscription.start == "earliest"
        lanes: dict[Lane, LaneParity] = {}
        comparers: dict[tuple[str, int], LaneComparer] = {}
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
            comparers[(topic, partition)] = comparer
        if comparers:
            await self._read(comparers, streams, max_payload)
            for partition_lane, comparer in comparers.items():
                lanes[partition_lane] = comparer.finish(comparer.parity.note)
        for lane in sorted(set(check.copies) - set(self.partitions), key=lane_label):
            copies, _ = check.lane_counts(lane)
            lanes[lane] = unchecked_lane(lane_label(lane), copies, "stored, but not a partition on the cluster now")
        return [lanes[key] for key in sorted(lanes, key=_lane_order)]

    async def _read(
        self, comparers: Mapping[tuple[str, int], LaneComparer], streams: Sequence[StreamConfig], max_payload: int
    ) -> None:
        assert self._reader is not None  # prepared: there are partitions to read
        route = self.check.route
        ranges = {}
        for lane, comparer in comparers.items():
            assert comparer.parity.first is not None
            assert comparer.parity.last is not None
            ranges[lane] = [(comparer.parity.first, comparer.parity.last)]
        async for lane, offset, message in self._reader.read(ranges):
            judged = expectation(route, message, streams, max_payload)
            comparers[lane].see(offset, judged.expected)

    async def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await reader.__aexit__()


def _lane_order(lane: Lane) -> tuple[str, int]:
    """Kafka lanes by topic, then partition as a number (`t/2` before `t/10`)."""
    if isinstance(lane, tuple) and len(lane) == 2:
        return str(lane[0]), int(lane[1])
    return lane_label(lane), 0
