"""The parity report: a VerifyReport of RouteParity of LaneParity, as JSON and as an exit code.

Exit codes: 0 clean; 1 something missing, doubled or out of order; 2 something could not be
checked (a broker unreachable, a stream missing, a file that does not load) — 2 wins over 1,
because a partial check cannot be called clean or complete. A position present more than once
— in the route's streams and the dead-letter stream together — is doubled wherever it is,
inside the checked range or not; one stored after a higher position of its lane in the same
stream is out of order wherever it is, too (consumers read a stream in sequence order, so they
see it late whether or not it is committed yet). A topic the route names that does not exist
is a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.cli_output import EXIT_FINDINGS, EXIT_INVALID, EXIT_OK
from bridge.verify.ranges import DoubledRun, format_ranges

RouteKind = Literal["kafka", "rabbitmq-stream", "rabbitmq-queue"]

EXIT_CLEAN = EXIT_OK
EXIT_DIFFERS = EXIT_FINDINGS
EXIT_UNCHECKED = EXIT_INVALID


@dataclass(slots=True)
class LaneParity:
    """One lane (a Kafka `topic/partition`, a stream queue) checked over [first, last].

    Every source message of the range the route publishes or dead-letters is *expected*; each
    expected one is stored once, dead-lettered (only), missing, or doubled. `doubled` covers
    the whole lane, inside the range or not: a second copy is wrong wherever it is. So does
    `out_of_order`: positions whose first copy a stream holds after a higher position of the
    lane (a second copy is doubled, not counted again here); these are also stored once.
    """

    lane: str
    first: int | None = None  # None: nothing to check (see note)
    last: int | None = None
    expected: int = 0
    stored_once: int = 0
    dead_lettered: int = 0
    missing: list[tuple[int, int]] = field(default_factory=list)
    missing_count: int = 0
    doubled: list[DoubledRun] = field(default_factory=list)
    out_of_order: list[tuple[int, int]] = field(default_factory=list)
    not_expected: int = 0  # source messages of the range the route does not publish (filtered, skipped)
    unmatched: int = 0  # stored positions in the range with no expected source message behind them
    outside: int = 0  # stored positions outside the range (e.g. stored, not yet committed)
    note: str | None = None

    @property
    def doubled_count(self) -> int:
        return sum(run.last - run.first + 1 for run in self.doubled)

    @property
    def out_of_order_count(self) -> int:
        return sum(last - first + 1 for first, last in self.out_of_order)

    @property
    def range_text(self) -> str:
        return "—" if self.first is None or self.last is None else f"{self.first}-{self.last}"

    def as_json(self) -> dict[str, Any]:
        return {
            "lane": self.lane,
            "first": self.first,
            "last": self.last,
            "expected": self.expected,
            "stored_once": self.stored_once,
            "dead_lettered": self.dead_lettered,
            "missing": format_ranges(self.missing),
            "missing_count": self.missing_count,
            "missing_ranges": [list(run) for run in self.missing],
            "doubled": [run.as_json() for run in self.doubled],
            "doubled_count": self.doubled_count,
            "out_of_order": format_ranges(self.out_of_order),
            "out_of_order_count": self.out_of_order_count,
            "out_of_order_ranges": [list(run) for run in self.out_of_order],
            "not_expected": self.not_expected,
            "unmatched": self.unmatched,
            "outside": self.outside,
            "note": self.note,
        }


@dataclass(slots=True)
class RouteParity:
    """One route's parity: its lanes (Kafka, stream queues) or its Msg-Ids (shadow/queue routes)."""

    route: str  # service/route
    kind: RouteKind
    streams: list[str] = field(default_factory=list)  # the streams scanned for it
    lanes: list[LaneParity] = field(default_factory=list)
    stored: int = 0  # messages of this route in its streams
    dead_lettered: int = 0  # its messages in the dead-letter stream
    doubled_ids: list[tuple[str, int]] = field(default_factory=list)  # shadow/queue routes
    distinct_ids: int = 0  # shadow/queue routes: different Msg-Ids stored or dead-lettered
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # why it could not be checked

    @property
    def note(self) -> str | None:
        return " ".join(self.notes) or None

    @property
    def missing_count(self) -> int:
        return sum(lane.missing_count for lane in self.lanes)

    @property
    def doubled_count(self) -> int:
        return sum(lane.doubled_count for lane in self.lanes) + len(self.doubled_ids)

    @property
    def out_of_order_count(self) -> int:
        return sum(lane.out_of_order_count for lane in self.lanes)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.missing_count and not self.doubled_count and not self.out_of_order_count

    def as_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "kind": self.kind,
            "ok": self.ok,
            "streams": self.streams,
            "stored": self.stored,
            "dead_lettered": self.dead_lettered,
            "missing_count": self.missing_count,
            "doubled_count": self.doubled_count,
            "out_of_order_count": self.out_of_order_count,
            "lanes": [lane.as_json() for lane in self.lanes],
            "doubled_ids": [{"msg_id": msg_id, "copies": copies} for msg_id, copies in self.doubled_ids],
            "distinct_ids": self.distinct_ids,
            "note": self.note,
            "error": self.error,
        }


@dataclass(slots=True)
class VerifyReport:
    """Every route's parity, and what kept the check from running at all."""

    file: str = ""
    routes: list[RouteParity] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    reverse: list[str] = field(default_factory=list)  # the reverse leg, reported (bridge.verify.reverse_leg)

    @property
    def checked(self) -> bool:
        """Everything asked for could be checked."""
        return not self.errors and all(route.error is None for route in self.routes)

    @property
    def ok(self) -> bool:
        """No missing, no doubled, nothing out of order, no errors."""
        return self.checked and all(route.ok for route in self.routes)

    @property
    def unchecked_lanes(self) -> list[str]:
        """Lanes with no range to check yet (nothing settled, start unknown): their notes say why.
        A report with some is clean only where it could look, and says so."""
        return [f"{route.route} {lane.lane}" for route in self.routes for lane in route.lanes if lane.first is None]

    @property
    def exit_code(self) -> int:
        if not self.checked:
            return EXIT_UNCHECKED
        return EXIT_CLEAN if self.ok else EXIT_DIFFERS

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "unchecked_lanes": self.unchecked_lanes,
            "errors": self.errors,
            "routes": [route.as_json() for route in self.routes],
            "reverse": list(self.reverse),
        }
