"""Judging source messages: what the running bridge does with one, decided with its own
mapping code, and a lane's source messages walked against what is stored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bridge.config.streams import StreamConfig
from bridge.deadletters import offline_subject_room
from bridge.decide import DecideContext, Fate, decide
from bridge.mapping import CompiledRoute
from bridge.message import SourceMessage
from bridge.verify.counts import PositionCounts
from bridge.verify.ranges import RunBuilder, doubled_runs
from bridge.verify.report import LaneParity


@dataclass(frozen=True, slots=True)
class Expectation:
    """Whether the route publishes (or dead-letters) a source message, and why."""

    expected: bool
    reason: str


def expectation(
    route: CompiledRoute, message: SourceMessage | None, streams: Sequence[StreamConfig], max_payload: int
) -> Expectation:
    """What the running bridge does with `message`: `bridge.decide`, the pipeline's own decision.

    None is a message a source could not hand over. A message that cannot go where the route
    says — unmappable, too large for `max_payload`, no declared stream captures its subject —
    is expected in the dead-letter stream with `on_error: dead-letter`, not expected at all with
    `skip`, and expected (the route stops at it, never settling past it) with `stop`.
    """
    if message is None:
        return Expectation(False, "not handed over by the source")
    context = DecideContext(max_payload=max_payload, streams=streams, subject_room=offline_subject_room(max_payload))
    verdict = decide(route, message, context)
    if verdict.fate is Fate.PUBLISH:
        return Expectation(True, "published")
    if verdict.fate is Fate.FILTERED:
        return Expectation(False, f"filtered: {verdict.detail}")
    why = f"{verdict.reason}: {verdict.detail}"
    if verdict.fate is Fate.SKIP:
        return Expectation(False, f"{why} (on_error: skip)")
    if verdict.fate is Fate.STOP:
        return Expectation(True, f"{why} (on_error: stop: the route stops at it)")
    return Expectation(True, f"{why} (dead-lettered)")


class LaneComparer:
    """Walks a lane's source messages against what is stored, into a LaneParity.

    `copies` counts a position's messages in the route's streams *and* in the dead-letter
    stream (`dead` counts the latter alone): a record stored and also dead-lettered was
    delivered twice. Source positions must come in increasing order; a repeated or lower one
    (a client re-fetch, a stream consumer restarting at its chunk's start) is ignored.
    """

    def __init__(self, lane: str, first: int, last: int, copies: PositionCounts, dead: PositionCounts) -> None:
        self.parity = LaneParity(lane, first, last)
        self._copies = copies
        self._dead = dead
        self._missing = RunBuilder()
        self._matched = 0  # distinct source positions of the range that have a copy
        self._previous: int | None = None

    def see(self, position: int, expected: bool) -> None:
        parity = self.parity
        assert parity.first is not None
        assert parity.last is not None
        if not parity.first <= position <= parity.last:
            return
        if self._previous is not None and position <= self._previous:
            return
        self._previous = position
        copies = self._copies[position]
        if copies:
            self._matched += 1
        if not expected:
            parity.not_expected += 1
            return
        parity.expected += 1
        if copies == 0:
            self._missing.add(position)
        elif copies == 1:
            if self._dead[position]:
                parity.dead_lettered += 1
            else:
                parity.stored_once += 1

    def finish(self, note: str | None = None) -> LaneParity:
        parity = self.parity
        assert parity.first is not None
        assert parity.last is not None
        parity.missing = self._missing.runs()
        parity.missing_count = self._missing.count
        parity.doubled = doubled_runs(self._copies.repeated())
        inside = self._copies.distinct_between(parity.first, parity.last)
        parity.unmatched = inside - self._matched
        parity.outside = self._copies.distinct - inside
        parity.note = note
        return parity


def unchecked_lane(lane: str, copies: PositionCounts, note: str) -> LaneParity:
    """A lane with no range to check: what is stored is all outside, doubles still count."""
    return LaneParity(lane, outside=copies.distinct, doubled=doubled_runs(copies.repeated()), note=note)
