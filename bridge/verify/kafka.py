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

from bridge.brokers.base import HeldLane, RangeRead
from bridge.config.routes import FromKafka
from bridge.config.streams import StreamConfig
from bridge.sources.base import Lane, lane_label
from bridge.verify.claims import RouteCheck
from bridge.verify.expect import LaneComparer, expectation, unchecked_lane
from bridge.verify.report import LaneParity


class KafkaRouteReader:
    """Kafka's side of one route: committed offsets first, the records of each range later,
    both asked of the route's broker (bridge.brokers.base.RangeRead)."""

    def __init__(self, check: RouteCheck, ranges: RangeRead) -> None:
        self.check = check
        self.ranges = ranges
        self.settled_by = "the bridge's group"
        self.partitions: dict[tuple[str, int], HeldLane] = {}

    async def prepare(self) -> None:
        """The group's committed offsets and the topics' partitions, then each partition's
        beginning. Called before the streams are scanned: whatever is committed is stored by then.
        """
        await self.ranges.__aenter__()  # left by close(): the same client reads the ranges later
        held = await self.ranges.held()
        self.check.notes += held.notes
        self.settled_by = held.settled_by or self.settled_by
        self.partitions = {
            (str(lane[0]), int(lane[1])): info for lane, info in held.lanes.items() if isinstance(lane, tuple)
        }

    async def compare(self, streams: Sequence[StreamConfig], max_payload: int) -> list[LaneParity]:
        """Read each partition's range, judge every record, and compare with the tallies."""
        check = self.check
        subscription = check.route.config.from_
        assert isinstance(subscription, FromKafka)
        earliest = subscription.start == "earliest"
        lanes: dict[Lane, LaneParity] = {}
        comparers: dict[Lane, LaneComparer] = {}
        for (topic, partition), info in sorted(self.partitions.items()):
            label = lane_label((topic, partition))
            copies, dead = check.lane_counts((topic, partition))
            if info.settled is None:
                lanes[(topic, partition)] = unchecked_lane(
                    label, copies, f"{self.settled_by} has no committed offset here: nothing is settled yet"
                )
                continue
            lowest = copies.lowest()
            beginning = info.beginning or 0  # Kafka always says
            if earliest:
                first, note = beginning, None
            elif lowest is not None:
                first = max(lowest, beginning)
                note = f"start: {subscription.start}: the range begins at the lowest offset stored"
            else:
                lanes[(topic, partition)] = unchecked_lane(
                    label, copies, f"nothing stored and start: {subscription.start}: the range's start is unknown"
                )
                continue
            last = info.settled - 1
            if first > last:
                lanes[(topic, partition)] = unchecked_lane(
                    label, copies, f"the group's committed offset {info.settled} is not past offset {first}"
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
        self, comparers: Mapping[Lane, LaneComparer], streams: Sequence[StreamConfig], max_payload: int
    ) -> None:
        route = self.check.route
        ranges: dict[Lane, list[tuple[int, int]]] = {}
        for lane, comparer in comparers.items():
            assert comparer.parity.first is not None
            assert comparer.parity.last is not None
            ranges[lane] = [(comparer.parity.first, comparer.parity.last)]
        async for lane, offset, message in self.ranges.read(ranges):
            judged = expectation(route, message, streams, max_payload)
            comparers[lane].see(offset, judged.expected)

    async def close(self) -> None:
        """Leave the reader prepare() entered."""
        await self.ranges.__aexit__()


def _lane_order(lane: Lane) -> tuple[str, int]:
    """Kafka lanes by topic, then partition as a number (`t/2` before `t/10`)."""
    if isinstance(lane, tuple) and len(lane) == 2:
        return str(lane[0]), int(lane[1])
    return lane_label(lane), 0
