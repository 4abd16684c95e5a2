"""Where a legacy consumer's position is in a stream: the first stored record at or after it.

A Kafka group's committed offset names the first record it has not processed; the bridge stored
that partition's records in the stream in offset order, each with its `Kafka-Offset`. So the
stream sequence to start at is found by binary search over sequences, asking "the lane's first
record at or after sequence s" (one direct get when the lane has subjects of its own): about
log2(messages) reads, never a scan of the stream.

The search only trusts what it reads. Records the bridge never stored (filtered tombstones,
dead letters) have no sequence, so the start may hold a later position than the one wanted;
that is still exact, as the legacy consumer's next record would be the same. What the stream
cannot answer is said, not guessed: nothing stored that far yet (`Behind`), or the wanted
position older than the lane's first record still kept (`Older`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

# The lane's first stored record at stream sequence >= the one asked: (sequence, its source
# position), or None when there is none.
Probe = Callable[[int], Awaitable[tuple[int, int] | None]]


@dataclass(frozen=True, slots=True)
class Start:
    """Start at `sequence`, which holds source position `position` (>= the one wanted)."""

    sequence: int
    position: int


@dataclass(frozen=True, slots=True)
class Behind:
    """The stream holds nothing of the lane at or after the wanted position: the bridge has not
    stored that far yet (`last`: the highest position it has, None when none)."""

    last: int | None


@dataclass(frozen=True, slots=True)
class Older:
    """The lane's first record the stream keeps is past the wanted position (retention, or the
    bridge started later): starting there would skip the records between."""

    first: Start


Found = Start | Behind | Older


async def first_at_or_after(probe: Probe, first_seq: int, last_seq: int, wanted: int, *, last: int | None) -> Found:
    """Where the lane's position `wanted` starts in stream sequences `first_seq..last_seq`.

    `last` is the lane's highest stored position when the caller knows it cheaply (a last-by-
    subject get), used only to say how far behind the bridge is. Positions must not decrease
    with sequence within a lane, which holds for what the bridge stores in order (a reorder it
    reported can make the start one of the reordered records; `verify` lists those)."""
    if last_seq < first_seq:
        return Behind(last)
    earliest = await probe(first_seq)
    if earliest is None:
        return Behind(None)
    if earliest[1] == wanted:
        return Start(*earliest)
    if earliest[1] > wanted:
        # Retention removed the records between, or the bridge never copied them (it started
        # later, or filtered them all): the stream cannot tell which, so it refuses to guess.
        return Older(Start(*earliest))
    found: Start | None = None
    low, high = earliest[0] + 1, last_seq
    while low <= high:
        middle = (low + high) // 2
        record = await probe(middle)
        if record is None:
            high = middle - 1
            continue
        sequence, position = record
        if position >= wanted:
            found = Start(sequence, position)
            high = middle - 1
        else:
            low = sequence + 1
    return found if found is not None else Behind(last)
