"""A service's phase record and the transitions allowed between phases.

shadow -> drain: the service's producers now publish to NATS; the bridge keeps copying what
    is left on the legacy side, and says when that side is empty and quiet.
drain -> shadow: back out (producers went back to the legacy broker).
drain -> retired: the legacy side is drained; the bridge stops the service's routes and
    removes what it created. Retired is final: a service that needs copying again gets a new
    name (its checkpoints and group are gone on purpose).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from bridge.config.model import Phase
from bridge.errors import BridgeError

ALLOWED: dict[Phase, frozenset[Phase]] = {
    Phase.SHADOW: frozenset({Phase.DRAIN}),
    Phase.DRAIN: frozenset({Phase.SHADOW, Phase.RETIRED}),
    Phase.RETIRED: frozenset(),
}
DEFAULT_QUIET_FOR = 30.0  # seconds a drained service must stay empty before it is called drained


class InvalidTransitionError(BridgeError):
    """The phase change asked for is not allowed from the current phase."""


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


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
    def from_json(cls, data: bytes) -> PhaseRecord:
        document: dict[str, Any] = json.loads(data)
        known = {name: document[name] for name in cls.__dataclass_fields__ if name in document}
        known["phase"] = Phase(known.get("phase", Phase.SHADOW.value))
        previous = known.get("previous")
        known["previous"] = Phase(previous) if previous else None
        return cls(**known)

    def moved_to(
        self, wanted: Phase, *, by: str, reason: str, quiet_for: float | None = None, delete_offsets: bool = False
    ) -> PhaseRecord:
        """The record after a phase change (drain state starts afresh)."""
        return PhaseRecord(
            phase=wanted,
            previous=self.phase,
            changed_by=by,
            changed_at=now_text(),
            reason=reason,
            quiet_for=self.quiet_for if quiet_for is None else quiet_for,
            delete_offsets=delete_offsets,
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
