"""Where a newly assigned partition starts reading (pure rules, tested without a broker), and the
commit metadata that remembers how many partitions a topic had when the group first read it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# Every commit the bridge makes carries, for its topic, how many partitions the topic had when
# the group first started reading it: a partition without a commit at or past that number was
# added later, and its records are new traffic. Kafka keeps this string beside the offset.
_AT_START = re.compile(r"nats-bridge;partitions-at-start=(\d+)")


def commit_metadata(partitions_at_start: int | None) -> str:
    """The metadata string committed with every offset of a topic (empty while unknown)."""
    return "" if partitions_at_start is None else f"nats-bridge;partitions-at-start={partitions_at_start}"


def partitions_at_start(committed: Mapping[int, tuple[int, str]], partitions_now: int) -> int:
    """How many partitions a topic had when the group first started reading it.

    `committed` maps each partition of the topic that has a commit to (offset, metadata).
    No commit at all: this is that first start, so every partition there is now. Commits that
    record the number: the smallest recorded (instances starting together may have seen the
    topic's metadata at different ages; a smaller number only counts more partitions as added
    later, which copies them rather than skipping them). Commits without it, made by a bridge
    that did not record it: 0, since which partitions existed then is unknown, and copying a
    partition from its first record can store nothing twice where skipping it would lose it.
    """
    if not committed:
        return partitions_now
    recorded = [int(found.group(1)) for _, meta in committed.values() if (found := _AT_START.fullmatch(meta or ""))]
    return min(recorded) if recorded else 0


@dataclass(frozen=True, slots=True)
class StartPosition:
    """Where a newly assigned partition starts reading, and why."""

    offset: int
    why: str
    commit: bool = False  # a first start at `latest` or at a time: committed at once, decided once
    warning: bool = False  # the committed offset is gone (retention, a truncated log): said loudly


def start_position(
    partition: int,
    committed: int | None,
    *,
    at_start: int,
    start: str,
    beginning: int,
    end: int,
    at_time: int | None = None,
) -> StartPosition:
    """The rule for a partition's first offset after an assignment (pure; `beginning`/`end` are the
    earliest offset Kafka still holds and the next offset to be written).

    - A commit within what Kafka holds: resume there.
    - A commit outside it (retention removed it, or the log was truncated): the earliest offset
      still held. aiokafka would use `auto_offset_reset`, and `latest` there skipped everything
      between the commit and the end without a word.
    - No commit, on a partition added after the group first started reading the topic
      (`partition >= at_start`): its first offset, since every record of it is new traffic.
    - No commit otherwise: the route's `start` (earliest, latest, or the first record at or after
      a time, `at_time`, else the end). `latest` and a time are committed at once, so a partition
      that stays idle is not moved to the end again on the next assignment.
    """
    if committed is not None:
        if beginning <= committed <= end:
            return StartPosition(committed, "its committed offset")
        return StartPosition(
            beginning,
            f"its committed offset {committed} is no longer held (Kafka holds {beginning}..{end}): "
            f"resuming at the earliest offset held, {beginning}",
            warning=True,
        )
    if partition >= at_start:
        return StartPosition(
            beginning, f"added after the route first started (it had {at_start}): from offset {beginning}"
        )
    if start == "earliest":
        return StartPosition(beginning, f"start: earliest, offset {beginning}")
    if start == "latest":
        return StartPosition(end, f"start: latest, offset {end}", commit=True)
    offset = at_time if at_time is not None else end
    return StartPosition(offset, f"start: {start}, offset {offset}", commit=True)
