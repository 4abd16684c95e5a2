"""The binary search that finds a legacy position in a stream (pure: the stream is a list here)."""

from __future__ import annotations

import asyncio
import math

from hypothesis import given
from hypothesis import strategies as st

from bridge.handoff.search import Behind, Older, Start, first_at_or_after


class Lane:
    """A stream's records of every lane, as (sequence, lane, position); probes of one lane counted."""

    def __init__(self, records: list[tuple[int, str, int]], lane: str) -> None:
        self.records = records
        self.lane = lane
        self.probes = 0

    async def probe(self, sequence: int) -> tuple[int, int] | None:
        self.probes += 1
        for seq, lane, position in self.records:
            if seq >= sequence and lane == self.lane:
                return seq, position
        return None


def _search(records: list[tuple[int, str, int]], wanted: int, lane: str = "p0", last: int | None = None) -> object:
    first = records[0][0] if records else 1
    last_seq = records[-1][0] if records else 0
    return asyncio.run(first_at_or_after(Lane(records, lane).probe, first, last_seq, wanted, last=last))


def test_the_record_at_the_wanted_position_is_the_start() -> None:
    records = [(seq, "p0", seq - 1) for seq in range(1, 101)]  # offsets 0..99 at sequences 1..100
    assert _search(records, 37) == Start(38, 37)
    assert _search(records, 0) == Start(1, 0)
    assert _search(records, 99) == Start(100, 99)


def test_positions_never_stored_start_at_the_next_stored_one() -> None:
    """A filtered tombstone or a dead letter has no sequence: the next stored record is where the
    legacy consumer's next delivery would be too."""
    records = [(1, "p0", 0), (2, "p0", 1), (3, "p0", 4), (4, "p0", 5)]
    assert _search(records, 2) == Start(3, 4)


def test_a_position_not_stored_yet_is_behind() -> None:
    records = [(seq, "p0", seq - 1) for seq in range(1, 11)]
    assert _search(records, 10, last=9) == Behind(9)
    assert _search([], 0) == Behind(None)
    assert _search([(1, "p1", 0)], 0) == Behind(None)  # the stream holds only other lanes


def test_a_position_older_than_the_lanes_first_record_is_refused_with_where_the_lane_begins() -> None:
    records = [(seq, "p0", seq + 499) for seq in range(41, 61)]  # retention kept offsets 540..559
    assert _search(records, 500) == Older(Start(41, 540))


def test_other_lanes_interleaved_are_skipped() -> None:
    records = [(seq, f"p{seq % 3}", seq // 3) for seq in range(1, 301)]
    assert _search(records, 50, lane="p1") == Start(151, 50)
    assert _search(records, 50, lane="p2") == Start(152, 50)


@given(
    gaps=st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=400),
    seq_gaps=st.lists(st.integers(min_value=1, max_value=4), min_size=400, max_size=400),
    pick=st.integers(min_value=0),
)
def test_the_search_agrees_with_a_scan_in_few_probes(gaps: list[int], seq_gaps: list[int], pick: int) -> None:
    positions = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    sequences = [sum(seq_gaps[: i + 1]) for i in range(len(gaps))]
    records = [(seq, "p0", position) for seq, position in zip(sequences, positions, strict=False)]
    wanted = positions[0] + pick % (positions[-1] - positions[0] + 2)
    lane = Lane(records, "p0")
    found = asyncio.run(first_at_or_after(lane.probe, sequences[0], sequences[-1], wanted, last=positions[-1]))
    scanned = next(((seq, position) for seq, _, position in records if position >= wanted), None)
    if scanned is None:
        assert found == Behind(positions[-1])
    else:
        assert found == Start(*scanned)
    assert lane.probes <= 2 + math.ceil(math.log2(sequences[-1] + 1))
