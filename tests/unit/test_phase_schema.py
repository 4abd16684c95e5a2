"""Phase records are input: each one is read against a strict schema, and each change against the
previous valid record with cutover's rules (bridge.cutover.phases, bridge.cutover.store.next_state).
Pure logic; tests/integration/test_phase_records.py writes the same records under running bridges."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from nats.js import JetStreamContext

from bridge.config.services import Phase
from bridge.cutover.phases import MAX_RECORD_BYTES, PhaseRecord, check_transition, now_text, refusal
from bridge.cutover.store import (
    FRESH,
    INVALID,
    TRANSITION,
    BridgeReport,
    Entry,
    PhaseState,
    PhaseStore,
    next_state,
    with_report,
)
from bridge.errors import BridgeError, InvalidRecordError

WHERE = "nats_bridge_phases/phase.svc"
NOW = "2025-03-01T10:00:00Z"


def cli_record(phase: Phase, previous: Phase | None, **extra: Any) -> dict[str, Any]:
    """A record as `cutover` writes it."""
    document: dict[str, Any] = {
        "phase": phase.value,
        "previous": previous.value if previous else None,
        "changed_by": "ops@host",
        "changed_at": NOW,
        "reason": "why",
        "quiet_for": 30.0,
        "delete_offsets": False,
        "forced": False,
        "drained_at": None,
        "drained_by": None,
        "drain_reports": {},
        "retired_cleanup": {},
    }
    document.update(extra)
    return document


def raw(document: object) -> bytes:
    return json.dumps(document).encode()


# --- the schema -----------------------------------------------------------------------------------

MALFORMED: dict[str, tuple[bytes, str]] = {
    "not JSON": (b"{not json", "not JSON"),
    "unknown phase": (b'{"phase":"paused"}', "phase: Input should be 'shadow', 'drain' or 'retired'"),
    "array": (b'["drain"]', "a JSON array, not an object"),
    "string": (b'"retired"', "a JSON string, not an object"),
    "null": (b"null", "a JSON null, not an object"),
    "empty": (b"", "empty value"),
    "boolean as text": (raw(cli_record(Phase.DRAIN, Phase.SHADOW, delete_offsets="true")), "delete_offsets"),
    "number for text": (raw(cli_record(Phase.DRAIN, Phase.SHADOW, changed_by=7)), "changed_by"),
    "text for number": (raw(cli_record(Phase.DRAIN, Phase.SHADOW, quiet_for="30")), "quiet_for"),
    "number for boolean": (raw(cli_record(Phase.DRAIN, Phase.SHADOW, forced=1)), "forced"),
    "phase as number": (raw(cli_record(Phase.DRAIN, Phase.SHADOW) | {"phase": 1}), "phase"),
    "negative quiet": (raw(cli_record(Phase.DRAIN, Phase.SHADOW, quiet_for=-1)), "quiet_for"),
    "NaN": (raw(cli_record(Phase.DRAIN, Phase.SHADOW)).replace(b"30.0", b"NaN"), "NaN"),
    "not a timestamp": (raw(cli_record(Phase.DRAIN, Phase.SHADOW, changed_at="yesterday")), "changed_at"),
    "timestamp without zone": (raw(cli_record(Phase.DRAIN, Phase.SHADOW, drained_at="2025-03-01T10:00")), "zone"),
    "unknown field": (raw(cli_record(Phase.DRAIN, Phase.SHADOW, phsae="retired")), "phsae: Extra inputs"),
    "lanes not text": (raw(cli_record(Phase.DRAIN, Phase.SHADOW, drain_reports={"a": {"r": [0]}})), "drain_reports"),
    "reports not a map": (raw(cli_record(Phase.DRAIN, Phase.SHADOW, drain_reports=["a"])), "drain_reports"),
    "reason too long": (raw(cli_record(Phase.DRAIN, Phase.SHADOW, reason="x" * 5000)), "reason"),
    "oversize": (raw(cli_record(Phase.DRAIN, Phase.SHADOW, padding="x" * MAX_RECORD_BYTES)), "more than the 65536"),
    "nested deep": (b'{"phase":' + b"[" * 100 + b"]" * 100 + b"}", "nested deeper"),
    "not UTF-8": (b'{"phase":"\xff"}', "not JSON"),
    "lone surrogate": (raw(cli_record(Phase.DRAIN, Phase.SHADOW, reason="\ud800")), "surrogate"),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_every_malformed_record_is_refused_with_a_reason(kind: str) -> None:
    data, expected = MALFORMED[kind]
    with pytest.raises(InvalidRecordError) as refused:
        PhaseRecord.from_json(data)
    assert expected in str(refused.value)
    assert len(str(refused.value)) <= 1000  # never the hostile input itself


def test_the_reason_never_repeats_the_input() -> None:
    secret = "s3cr3t-value-" * 10
    with pytest.raises(InvalidRecordError) as refused:
        PhaseRecord.from_json(raw({"phase": secret}))
    assert "s3cr3t" not in str(refused.value)


def test_what_cutover_writes_reads_back_unchanged() -> None:
    start = PhaseRecord()
    drain = start.moved_to(Phase.DRAIN, by="ops@host", reason="producers moved", quiet_for=2.0)
    drained = drain.drained("host:1")
    retired = drained.moved_to(Phase.RETIRED, by="ops@host", reason="done", delete_offsets=True)
    for record in (drain, drained, retired):
        assert PhaseRecord.from_json(record.to_json()) == record
    # A retire keeps the drained report it was made on, for the bridges to see.
    assert (retired.drained_at, retired.drained_by) == (drained.drained_at, "host:1")
    forced = drain.moved_to(Phase.RETIRED, by="ops@host", reason="anyway", forced=True)
    assert PhaseRecord.from_json(forced.to_json()).forced is True
    assert PhaseRecord.from_json(b'{"phase": "drain"}').drain_reports == {}  # fields left out: defaults


def test_a_report_is_read_against_its_own_schema() -> None:
    report = BridgeReport(7, {"host:1": {"svc/copy": ["t/0"]}}, NOW, "host:1", {})
    assert BridgeReport.from_json(report.to_json()) == report
    for data in (b'{"phase_revision": true}', b'{"phase_revision": "7"}', b"[]", b'{"phase_revision": 0}'):
        with pytest.raises(InvalidRecordError):
            BridgeReport.from_json(data)


# --- the moves ------------------------------------------------------------------------------------


def record(phase: Phase, previous: Phase | None, **extra: Any) -> PhaseRecord:
    return PhaseRecord.from_json(raw(cli_record(phase, previous, **extra)))


SHADOW = PhaseRecord()
DRAIN = record(Phase.DRAIN, Phase.SHADOW)
DRAINED = record(Phase.DRAIN, Phase.SHADOW, drained_at=NOW, drained_by="host:1")
RETIRED = record(Phase.RETIRED, Phase.DRAIN, drained_at=NOW, drained_by="host:1")


def test_the_moves_cutover_makes_are_followed() -> None:
    assert refusal(SHADOW, DRAIN) is None
    assert refusal(DRAIN, record(Phase.SHADOW, Phase.DRAIN)) is None
    assert refusal(DRAINED, RETIRED) is None
    assert refusal(DRAIN, record(Phase.RETIRED, Phase.DRAIN, forced=True)) is None  # cutover --force
    # Earlier versions kept drain reports in the record: such rewrites change only those; and
    # their retire did not carry the drained report, which the record before it holds.
    assert refusal(DRAIN, DRAINED) is None
    assert refusal(DRAINED, record(Phase.RETIRED, Phase.DRAIN)) is None


@pytest.mark.parametrize(
    ("previous", "written", "expected"),
    [
        (SHADOW, record(Phase.RETIRED, Phase.DRAIN, delete_offsets=True, drained_at=NOW), "shadow -> retired"),
        (DRAIN, record(Phase.RETIRED, Phase.DRAIN, delete_offsets=True), "without a drained report"),
        (RETIRED, record(Phase.SHADOW, Phase.RETIRED), "retired -> shadow is not a move"),
        (RETIRED, record(Phase.DRAIN, Phase.RETIRED), "retired is final"),
        (SHADOW, record(Phase.DRAIN, Phase.RETIRED), "it says it moved from retired"),
        (SHADOW, record(Phase.DRAIN, None), "it says it moved from nothing"),
        (RETIRED, RETIRED.moved_to(Phase.RETIRED, by="x", reason="again", delete_offsets=True), "without a phase"),
        (DRAIN, record(Phase.DRAIN, Phase.SHADOW, quiet_for=0.0), "without a phase change"),
    ],
)
def test_moves_cutover_refuses_are_refused(previous: PhaseRecord, written: PhaseRecord, expected: str) -> None:
    why = refusal(previous, written)
    assert why is not None
    assert expected in why


def test_cutover_and_the_bridges_agree() -> None:
    """Every move check_transition allows gives a record refusal accepts, and the reverse."""
    records = {"shadow": SHADOW, "drain": DRAIN, "drained": DRAINED, "retired": RETIRED}
    for name, current in records.items():
        for wanted in Phase:
            for force in (False, True):
                try:
                    check_transition("svc", current, wanted, force=force)
                except BridgeError:
                    allowed = False
                else:
                    allowed = True
                written = current.moved_to(wanted, by="ops", reason="r", forced=force)
                assert (refusal(current, written) is None) is allowed, (name, wanted, force)


# --- following a key's history --------------------------------------------------------------------


def entry(revision: int, data: bytes | PhaseRecord | None, *, removed: bool = False) -> Entry:
    value = data.to_json() if isinstance(data, PhaseRecord) else data
    return Entry(revision, value, removed)


def follow(state: PhaseState, *entries: Entry) -> tuple[PhaseState, list[str]]:
    kinds = []
    for one in entries:
        state, rejection = next_state(state, WHERE, one)
        if rejection is not None:
            assert rejection.key == WHERE
            assert rejection.revision == one.revision
            kinds.append(rejection.kind)
    return state, kinds


def test_invalid_revisions_leave_the_last_valid_record_in_force() -> None:
    state, kinds = follow(FRESH, entry(3, DRAIN), entry(4, b"{not json"), entry(5, b'{"phase":"paused"}'))
    assert (state.record, state.revision, state.latest) == (DRAIN, 3, 5)
    assert kinds == [INVALID, INVALID]
    assert [r.revision for r in state.ignored] == [4, 5]
    state, kinds = follow(state, entry(6, record(Phase.RETIRED, Phase.DRAIN, delete_offsets=True)))
    assert (state.record, kinds) == (DRAIN, [TRANSITION])
    # The next valid move is checked against the last valid record, and clears the ignored list.
    state, kinds = follow(state, entry(7, DRAINED), entry(8, RETIRED))
    assert (state.record, state.revision, state.since, state.ignored, kinds) == (RETIRED, 8, 8, (), [])


def test_a_retired_service_stays_retired() -> None:
    state, _ = follow(FRESH, entry(1, DRAIN), entry(2, DRAINED), entry(3, RETIRED))
    state, kinds = follow(
        state,
        entry(4, record(Phase.SHADOW, Phase.RETIRED)),
        entry(5, None, removed=True),  # kv del / purge
        entry(6, record(Phase.SHADOW, None, forced=True)),  # even forced: retired is final
    )
    assert (state.record, kinds) == (RETIRED, [TRANSITION, TRANSITION, TRANSITION])


def test_a_same_phase_rewrite_keeps_the_phase_it_belongs_to() -> None:
    state, _ = follow(FRESH, entry(1, DRAIN), entry(2, DRAINED))
    assert (state.revision, state.since) == (2, 1)  # reports about the drain begun at 1 still apply
    report = BridgeReport(1, {"h:1": {"svc/copy": ["t/0"]}}, NOW, "h:1")
    assert with_report(DRAIN, 1, report).drained_at == NOW
    assert with_report(DRAIN, 9, report) == DRAIN  # a report about another phase is stale
    assert with_report(RETIRED, 1, report).drained_at == NOW  # a retire's own drained report stays


def test_a_held_service_waits_for_a_valid_record() -> None:
    held = PhaseState(None)
    state, kinds = follow(held, entry(9, b"[]"), entry(10, None, removed=True))
    assert state.held
    assert kinds == [INVALID, TRANSITION]
    forced = PhaseRecord(Phase.SHADOW, changed_by="ops", changed_at=now_text(), reason="r", forced=True)
    state, kinds = follow(state, entry(11, forced))
    assert (state.record, state.revision, kinds) == (forced, 11, [])


async def test_cutover_refuses_to_write_a_record_the_bridges_would_ignore() -> None:
    store = PhaseStore(cast(JetStreamContext, object()))  # refused before anything is sent
    with pytest.raises(BridgeError, match="reason: String should have at most 4096"):
        await store.put("svc", SHADOW.moved_to(Phase.DRAIN, by="ops", reason="x" * 5000), 0)
    with pytest.raises(BridgeError, match="quiet_for"):
        await store.put("svc", SHADOW.moved_to(Phase.DRAIN, by="ops", reason="r", quiet_for=1e9), 0)
