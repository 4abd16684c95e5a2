"""A service's phase record, the schema every stored record is read against, and the moves
allowed between phases.

shadow -> drain: the service's producers now publish to NATS; the bridge keeps copying what is
    left on the legacy side, and says when that side is empty and quiet.
drain -> shadow: back out (producers went back to the legacy broker).
drain -> retired: the legacy side is drained; the bridge stops the service's routes and
    removes what it created. Retired is final: a service that needs copying again gets a new
    name (its checkpoints and group are gone on purpose).

The phase bucket is input like any other: whoever can write to it can write anything. Every
record is parsed against `PhaseDocument` (strict types, bounded sizes, a known phase) and every
change is checked against the previous valid record with the rules `cutover` applies
(`refusal`); a record that fails either is ignored by the bridges (bridge.cutover.store).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from bridge.config.limits import loads_json
from bridge.config.services import Phase
from bridge.errors import InvalidRecordError, InvalidTransitionError

ALLOWED: dict[Phase, frozenset[Phase]] = {
    Phase.SHADOW: frozenset({Phase.DRAIN}),
    Phase.DRAIN: frozenset({Phase.SHADOW, Phase.RETIRED}),
    Phase.RETIRED: frozenset(),
}
DEFAULT_QUIET_FOR = 30.0  # seconds a drained service must stay empty before it is called drained

# Bounds on a stored record. A record `cutover` writes is a few hundred bytes; a report of the
# drain (bridge.cutover.store.BridgeReport) names every partition, so it may be larger.
MAX_RECORD_BYTES = 64 * 1024
MAX_REPORT_BYTES = 1024 * 1024
MAX_NAME = 256  # changed_by, drained_by, an instance (host:pid)
MAX_REASON = 4096  # --reason, and each retire clean-up sentence
MAX_KEY = 512  # a route (`service/route`) or a lane (`topic/partition`, `*`)
MAX_ENTRIES = 10_000  # instances, routes per instance, routes cleaned up
MAX_LANES = 100_000  # lanes of one route in one instance's report
MAX_QUIET_FOR = 30 * 86_400.0  # --quiet: at most 30 days


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _timestamp(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise ValueError("a timestamp needs its time zone (e.g. 2025-01-31T12:00:00Z)")
    return value


def _timestamp_or_empty(value: str) -> str:
    return _timestamp(value) if value else value


Timestamp = Annotated[str, StringConstraints(min_length=1, max_length=40), AfterValidator(_timestamp)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=MAX_REASON)]
# A record made in code (or by an early version) may leave who, when and why empty; the moves
# cutover makes always fill them, and `refusal` tells a hand-written record by its `previous`.
OptionalName = Annotated[str, StringConstraints(max_length=MAX_NAME)]
OptionalReason = Annotated[str, StringConstraints(max_length=MAX_REASON)]
Key = Annotated[str, StringConstraints(min_length=1, max_length=MAX_KEY)]
Lanes = Annotated[list[Key], Field(max_length=MAX_LANES)]
InstanceReport = Annotated[dict[Key, Lanes], Field(max_length=MAX_ENTRIES)]
DrainReportsField = Annotated[dict[Name, InstanceReport], Field(max_length=MAX_ENTRIES)]
CleanupField = Annotated[dict[Key, Reason], Field(max_length=MAX_ENTRIES)]
QuietFor = Annotated[float, Field(ge=0, le=MAX_QUIET_FOR, allow_inf_nan=False)]


class StrictDocument(BaseModel):
    # Strict: `"true"` is no boolean, `"30"` no number, and a misspelt field is an error.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class PhaseDocument(StrictDocument):
    """A phase record as stored under `phase.<service>` (what `cutover` writes)."""

    phase: Annotated[Phase, Field(strict=False)]  # the enum's value, as text
    previous: Annotated[Phase | None, Field(strict=False)] = None
    changed_by: OptionalName = ""
    changed_at: Annotated[str, StringConstraints(max_length=40), AfterValidator(_timestamp_or_empty)] = ""
    reason: OptionalReason = ""
    quiet_for: QuietFor = DEFAULT_QUIET_FOR
    delete_offsets: bool = False
    forced: bool = False  # `cutover --force`: a retire without a drained report, or a record written afresh
    drained_at: Timestamp | None = None
    drained_by: Name | None = None
    # Written into the record itself by bridges before reports had a bucket of their own; still read.
    drain_reports: DrainReportsField = {}
    retired_cleanup: CleanupField = {}


class ReportDocument(StrictDocument):
    """What bridges report about one phase of a service (bridge.cutover.store.BridgeReport)."""

    phase_revision: Annotated[int, Field(ge=1)]
    drain_reports: DrainReportsField = {}
    drained_at: Timestamp | None = None
    drained_by: Name | None = None
    retired_cleanup: CleanupField = {}


_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def _problems(error: ValidationError, limit: int = 3) -> str:
    """The first few schema errors as `where: what` (never the input itself: it may be anything)."""
    parts = []
    for problem in error.errors()[:limit]:
        where = ".".join(str(part) for part in problem["loc"]) or "the record"
        parts.append(f"{where}: {problem['msg']}")
    more = error.error_count() - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def parse_document(data: bytes | None, model: type[StrictDocument], limit: int) -> StrictDocument:
    """`data` read against `model`, within `limit` bytes; InvalidRecordError saying why not."""
    if not data:
        raise InvalidRecordError("empty value")
    if len(data) > limit:
        raise InvalidRecordError(f"{len(data)} bytes, more than the {limit} allowed")
    try:
        document = loads_json(data)
    except ValueError as error:
        raise InvalidRecordError(str(error)[:300]) from None
    if not isinstance(document, dict):
        raise InvalidRecordError(f"a JSON {_JSON_KINDS.get(type(document), 'value')}, not an object")
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise InvalidRecordError(_problems(error)[:1000]) from None


@dataclass(frozen=True, slots=True)
class PhaseRecord:
    """What is stored per service: the phase, who set it when and why, and what bridges reported."""

    phase: Phase = Phase.SHADOW
    previous: Phase | None = None
    changed_by: str = ""
    changed_at: str = ""
    reason: str = ""
    quiet_for: float = DEFAULT_QUIET_FOR
    delete_offsets: bool = False  # on retire, also delete the Kafka consumer groups' offsets
    forced: bool = False  # written by `cutover --force`
    drained_at: str | None = None  # set by a bridge once the legacy side stayed empty `quiet_for`
    drained_by: str | None = None
    # Per instance, per route, the lanes it owned and saw empty and quiet; drained_at is set only
    # once these cover every lane of every route (bridge.cutover.drain.uncovered).
    drain_reports: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    retired_cleanup: dict[str, str] = field(default_factory=dict)  # route -> what was removed, or why not

    def to_json(self) -> bytes:
        document = asdict(self)
        document["phase"] = self.phase.value
        document["previous"] = self.previous.value if self.previous is not None else None
        return json.dumps(document, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | None) -> PhaseRecord:
        """The record stored in `data`; InvalidRecordError when it is not a valid phase record."""
        document = parse_document(data, PhaseDocument, MAX_RECORD_BYTES)
        assert isinstance(document, PhaseDocument)
        fields: dict[str, Any] = document.model_dump()
        fields["drain_reports"] = {
            name: {route: list(lanes) for route, lanes in report.items()}
            for name, report in document.drain_reports.items()
        }
        return cls(**fields)

    def operator_part(self) -> tuple[object, ...]:
        """What only `cutover` sets; bridges (of earlier versions) changed only the rest."""
        return (
            self.phase,
            self.previous,
            self.changed_by,
            self.changed_at,
            self.reason,
            self.quiet_for,
            self.delete_offsets,
            self.forced,
        )

    def moved_to(
        self,
        wanted: Phase,
        *,
        by: str,
        reason: str,
        quiet_for: float | None = None,
        delete_offsets: bool = False,
        forced: bool = False,
    ) -> PhaseRecord:
        """The record after a phase change (drain state starts afresh). A retired record keeps
        the drained report it was retired on: bridges check it is there (or `forced`)."""
        retiring = wanted is Phase.RETIRED
        return PhaseRecord(
            phase=wanted,
            previous=self.phase,
            changed_by=by,
            changed_at=now_text(),
            reason=reason,
            quiet_for=self.quiet_for if quiet_for is None else quiet_for,
            delete_offsets=delete_offsets,
            forced=forced,
            drained_at=self.drained_at if retiring else None,
            drained_by=self.drained_by if retiring else None,
        )

    def drained(self, by: str) -> PhaseRecord:
        return replace(self, drained_at=now_text(), drained_by=by)

    def undrained(self) -> PhaseRecord:
        return replace(self, drained_at=None, drained_by=None)


def check_transition(service: str, record: PhaseRecord, wanted: Phase, *, force: bool = False) -> None:
    """Raise InvalidTransitionError naming the service and the allowed moves, when `wanted` is not one."""
    current = record.phase
    if wanted == current:
        raise InvalidTransitionError(f"service '{service}' is already in phase {current}")
    if wanted not in ALLOWED[current]:
        allowed = ", ".join(sorted(ALLOWED[current])) or "none: retired is final"
        raise InvalidTransitionError(
            f"service '{service}' cannot go from {current} to {wanted} (allowed from {current}: {allowed})"
        )
    if wanted is Phase.RETIRED and record.drained_at is None and not force:
        raise InvalidTransitionError(
            f"service '{service}' has not been reported drained yet (its legacy side is not known to be empty "
            f"and quiet for {record.quiet_for:g}s); wait with `cutover {service} --to drain --wait`, "
            "or pass --force to retire it anyway"
        )


def refusal(previous: PhaseRecord, record: PhaseRecord) -> str | None:
    """Why a bridge must not follow `record`, stored after the valid `previous`; None when it may.

    The rules of `cutover`: only shadow -> drain, drain -> shadow and drain -> retired; a retire
    carries the drained report it was made on (or follows a record that has one, as earlier
    versions wrote them), or says it was forced (`cutover --force`); a
    record rewritten without a phase change may change only what bridges report (earlier
    versions kept their drain reports in the record), never the phase's own terms.
    """
    if record.phase is previous.phase:
        if record.operator_part() != previous.operator_part():
            return (
                f"it rewrites the {previous.phase} record of {previous.changed_at or 'the start'} without a phase "
                "change (cutover never does: a phase's terms are set by the move into it)"
            )
        return None
    if record.phase not in ALLOWED[previous.phase]:
        allowed = ", ".join(sorted(ALLOWED[previous.phase])) or "none: retired is final"
        return f"{previous.phase} -> {record.phase} is not a move cutover makes (from {previous.phase}: {allowed})"
    if record.previous is not previous.phase and not (record.forced and record.previous is None):
        return f"it says it moved from {record.previous or 'nothing'}, but the phase was {previous.phase}"
    drained = record.drained_at is not None or previous.drained_at is not None  # (earlier versions: the latter)
    if record.phase is Phase.RETIRED and not drained and not record.forced:
        return "drain -> retired without a drained report and without --force (cutover refuses that)"
    return None
