"""What the phase bucket's history means, revision by revision (pure): the state a reader is in
(`PhaseState`), why a revision was ignored (`Rejection`), and the bridges' reports merged into
the record they are about. bridge.cutover.store does the reading and writing."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from bridge.config.services import Phase
from bridge.cutover.phases import (
    MAX_REPORT_BYTES,
    PhaseRecord,
    ReportDocument,
    parse_document,
    refusal,
)
from bridge.errors import InvalidRecordError

IGNORED_KEPT = 10  # ignored revisions remembered per service, newest last


# Kinds of rejection, the `kind` label of nats_bridge_phase_records_rejected_total.
INVALID = "invalid"  # not a phase record: not JSON, wrong types, unknown phase, too large


TRANSITION = "transition"  # a valid record of a move cutover would refuse, or a deletion


REPORT = "report"  # a bridge report that is not one


@dataclass(frozen=True, slots=True)
class Rejection:
    """One revision of a key that was ignored, and why."""

    key: str  # `<bucket>/<key>`
    revision: int
    kind: str  # INVALID, TRANSITION or REPORT
    reason: str

    def as_json(self) -> dict[str, object]:
        return {"key": self.key, "revision": self.revision, "kind": self.kind, "reason": self.reason}

    def text(self) -> str:
        return f"{self.key} revision {self.revision}: {self.reason}"


@dataclass(frozen=True, slots=True)
class PhaseState:
    """A service's phase as read from its key's history.

    `record` is the last valid record (a fresh shadow record at revision 0 when none was ever
    written) or None: the key holds no valid record — every revision still kept is invalid, or a
    deletion is all that is left — so nobody can tell the phase. Such a service is *held*: its
    routes are not started. Starting it as shadow would copy again, into the stream, what a
    retire had removed; as retired, it would stop a service that may be in shadow (and a retire's
    clean-up must never run on a guess). Held, nothing is read, copied or deleted, and nothing is
    lost: the shadow queue keeps its messages, the Kafka group its offsets, until an operator
    writes the phase again (`cutover SERVICE --to PHASE --force`).
    """

    record: PhaseRecord | None
    revision: int = 0  # the record's revision; 0: none written
    since: int = 0  # revision of the move into this phase (later same-phase revisions keep it)
    latest: int = 0  # the key's latest revision, valid or not: what a compare-and-set names
    ignored: tuple[Rejection, ...] = ()  # revisions after `revision` that were refused, newest last

    @property
    def held(self) -> bool:
        return self.record is None


FRESH = PhaseState(PhaseRecord())


@dataclass(frozen=True, slots=True)
class BridgeReport:
    """What bridges found out about the phase that began at `phase_revision` of the phase key."""

    phase_revision: int
    drain_reports: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    drained_at: str | None = None
    drained_by: str | None = None
    retired_cleanup: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        document = ReportDocument(
            phase_revision=self.phase_revision,
            drain_reports=self.drain_reports,
            drained_at=self.drained_at,
            drained_by=self.drained_by,
            retired_cleanup=self.retired_cleanup,
        )
        return document.model_dump_json().encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | None) -> BridgeReport:
        document = parse_document(data, ReportDocument, MAX_REPORT_BYTES)
        assert isinstance(document, ReportDocument)
        return cls(
            phase_revision=document.phase_revision,
            drain_reports={name: dict(report) for name, report in document.drain_reports.items()},
            drained_at=document.drained_at,
            drained_by=document.drained_by,
            retired_cleanup=dict(document.retired_cleanup),
        )

    @classmethod
    def of(cls, record: PhaseRecord, phase_revision: int) -> BridgeReport:
        """The report part of a (merged) record."""
        return cls(
            phase_revision,
            record.drain_reports,
            record.drained_at,
            record.drained_by,
            record.retired_cleanup,
        )


def with_report(record: PhaseRecord, since: int, report: BridgeReport | None) -> PhaseRecord:
    """The record as readers see it: a draining record with the bridges' drain reports and
    verdict, a retired one with what the clean-up removed — from the report about this phase
    (`since`) only; a report about an earlier phase is stale."""
    if report is None or report.phase_revision != since:
        return record
    if record.phase is Phase.DRAIN:
        return replace(
            record, drain_reports=report.drain_reports, drained_at=report.drained_at, drained_by=report.drained_by
        )
    if record.phase is Phase.RETIRED:
        return replace(record, retired_cleanup=report.retired_cleanup)
    return record


@dataclass(frozen=True, slots=True)
class Entry:
    """One revision of a key as stored."""

    revision: int
    value: bytes | None
    removed: bool  # a delete or purge marker


def next_state(state: PhaseState, where: str, entry: Entry) -> tuple[PhaseState, Rejection | None]:
    """The state after one more revision of the key: followed, or refused (state kept)."""
    rejection: Rejection | None = None
    if entry.removed:
        rejection = Rejection(
            where, entry.revision, TRANSITION, "the record was deleted or purged: cutover never does that"
        )
    else:
        try:
            record = PhaseRecord.from_json(entry.value)
        except InvalidRecordError as error:
            rejection = Rejection(where, entry.revision, INVALID, str(error))
        else:
            previous = state.record
            why = refusal(previous, record) if previous is not None else None
            if why is not None:
                rejection = Rejection(where, entry.revision, TRANSITION, why)
            else:
                same_phase = (
                    previous is not None and state.revision > 0 and record.operator_part() == previous.operator_part()
                )
                since = state.since if same_phase else entry.revision
                return PhaseState(record, entry.revision, since, entry.revision), None
    ignored = (*state.ignored, rejection)[-IGNORED_KEPT:]
    return replace(state, latest=entry.revision, ignored=ignored), rejection
