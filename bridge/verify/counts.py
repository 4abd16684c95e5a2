"""Tallies of what a stream scan saw: copies per position of a lane, copies per Msg-Id.

Memory: stored positions are counted per lane in 4096-position byte blocks (one byte per
position, counts saturate at 255), Msg-Ids as 128-bit digests; Kafka records and stream
messages are streamed, never held.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

_BLOCK_BITS = 12
_BLOCK = 1 << _BLOCK_BITS
SATURATED = 255  # the highest count a position keeps: "255 or more"
_NONZERO = re.compile(rb"[^\x00]")
_REPEATED = re.compile(rb"[^\x00\x01]")


class PositionCounts:
    """How many copies of each position of one lane were seen.

    A dict of 4096-position byte blocks: one byte per position of a touched block, so ten
    million offsets cost about ten megabytes, where a Python set would cost hundreds. Sparse
    positions (compacted topics, a stray header) only touch the blocks they fall in. A count
    saturates at 255 ("255 or more" is plenty to call a position doubled).
    """

    __slots__ = ("_blocks", "distinct", "total")

    def __init__(self) -> None:
        self._blocks: dict[int, bytearray] = {}
        self.total = 0  # messages counted
        self.distinct = 0  # positions with at least one copy

    def add(self, position: int) -> None:
        block = self._blocks.get(position >> _BLOCK_BITS)
        if block is None:
            block = self._blocks[position >> _BLOCK_BITS] = bytearray(_BLOCK)
        index = position & (_BLOCK - 1)
        count = block[index]
        if count == 0:
            self.distinct += 1
        if count < SATURATED:
            block[index] = count + 1
        self.total += 1

    def __getitem__(self, position: int) -> int:
        block = self._blocks.get(position >> _BLOCK_BITS)
        return 0 if block is None else block[position & (_BLOCK - 1)]

    def items(self) -> Iterator[tuple[int, int]]:
        """(position, copies) of every position seen, in position order."""
        for key in sorted(self._blocks):
            block = self._blocks[key]
            base = key << _BLOCK_BITS
            for index, count in enumerate(block):
                if count:
                    yield base + index, count

    def repeated(self) -> Iterator[tuple[int, int]]:
        """(position, copies) of every position seen more than once, in position order.

        Scans each block in C (a regex over the bytes): doubles are rare, blocks are many.
        """
        for key in sorted(self._blocks):
            block = self._blocks[key]
            base = key << _BLOCK_BITS
            for match in _REPEATED.finditer(block):
                yield base + match.start(), block[match.start()]

    def lowest(self) -> int | None:
        for key in sorted(self._blocks):
            match = _NONZERO.search(self._blocks[key])
            if match is not None:
                return (key << _BLOCK_BITS) + match.start()
        return None

    def highest(self) -> int | None:
        for key in sorted(self._blocks, reverse=True):
            used = len(self._blocks[key].rstrip(b"\0"))
            if used:
                return (key << _BLOCK_BITS) + used - 1
        return None

    def distinct_between(self, first: int, last: int) -> int:
        """Positions in [first, last] with at least one copy."""
        if first > last:
            return 0
        found = 0
        for key, block in self._blocks.items():
            base = key << _BLOCK_BITS
            if base > last or base + _BLOCK - 1 < first:
                continue
            low, high = max(first - base, 0), min(last - base, _BLOCK - 1)
            found += (high - low + 1) - block.count(0, low, high + 1)
        return found


class IdCounts:
    """How many times each Nats-Msg-Id was seen, for routes without positions.

    Keeps a 128-bit digest per id (a Python int, about a fifth of a typical id string's
    cost) and the id text only for ids seen more than once: collisions would need 2^64 ids.
    """

    __slots__ = ("_seen", "repeats", "total")

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self.repeats: dict[str, int] = {}
        self.total = 0

    def add(self, msg_id: str) -> None:
        self.total += 1
        digest = int.from_bytes(hashlib.blake2b(msg_id.encode("utf-8"), digest_size=16).digest(), "big")
        if digest in self._seen:
            self.repeats[msg_id] = self.repeats.get(msg_id, 1) + 1
        else:
            self._seen.add(digest)

    @property
    def distinct(self) -> int:
        return len(self._seen)

    def doubled(self) -> list[tuple[str, int]]:
        return sorted(self.repeats.items())
