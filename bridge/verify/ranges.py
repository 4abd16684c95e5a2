"""Positions as runs of consecutive integers: missing and out-of-order ones (`120-130, 145`), doubled ones."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bridge.verify.counts import SATURATED


class RunBuilder:
    """Positions collected as runs of consecutive integers, in any order (ascending or descending
    is cheapest: a lane stored backwards, each record out of order, still makes one run)."""

    __slots__ = ("_runs", "count")

    def __init__(self) -> None:
        self._runs: list[list[int]] = []
        self.count = 0

    def add(self, position: int) -> None:
        self.count += 1
        if self._runs:
            last = self._runs[-1]
            if position == last[1] + 1:
                last[1] = position
                return
            if position == last[0] - 1:
                last[0] = position
                return
        self._runs.append([position, position])

    def runs(self) -> list[tuple[int, int]]:
        """Sorted, merged runs: adjacent or overlapping ones become one."""
        merged: list[tuple[int, int]] = []
        for first, last in sorted((run[0], run[1]) for run in self._runs):
            if merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], last))
            else:
                merged.append((first, last))
        return merged


def compress(positions: Iterable[int]) -> list[tuple[int, int]]:
    """Positions as sorted runs of consecutive integers: [120..130, 145] -> [(120, 130), (145, 145)]."""
    builder = RunBuilder()
    for position in sorted(set(positions)):
        builder.add(position)
    return builder.runs()


def format_ranges(runs: Sequence[tuple[int, int]], limit: int | None = None) -> str:
    """Runs for people: `120-130, 145`; with `limit`, the first runs and how many more."""
    shown = runs if limit is None else runs[:limit]
    text = ", ".join(str(first) if first == last else f"{first}-{last}" for first, last in shown)
    if len(shown) < len(runs):
        text += f", … (+{len(runs) - len(shown)} more)"
    return text


@dataclass(frozen=True, slots=True)
class DoubledRun:
    """Consecutive positions each present `copies` times (stream copies plus dead letters)."""

    first: int
    last: int
    copies: int

    def __str__(self) -> str:
        where = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        more = "+" if self.copies >= SATURATED else ""
        return f"{where} x{self.copies}{more}"

    def as_json(self) -> dict[str, int]:
        return {"first": self.first, "last": self.last, "copies": self.copies}


def doubled_runs(copies: Iterable[tuple[int, int]]) -> list[DoubledRun]:
    """Runs of consecutive positions with the same count above one, from (position, copies) in order."""
    runs: list[DoubledRun] = []
    for position, count in copies:
        if count < 2:
            continue
        if runs and runs[-1].last + 1 == position and runs[-1].copies == count:
            runs[-1] = DoubledRun(runs[-1].first, position, count)
        else:
            runs.append(DoubledRun(position, position, count))
    return runs
