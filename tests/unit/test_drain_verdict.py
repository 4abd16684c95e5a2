"""The drained verdict across instances: drained only once reports of instances that owned them
cover every lane of every route (pure logic of bridge.cutover.drain; the integration test
tests/integration/test_drain_coverage.py runs it with two bridges on real brokers)."""

from __future__ import annotations

from bridge.config.services import Phase
from bridge.cutover.drain import WHOLE, lanes_text, next_drain_record, uncovered, without
from bridge.cutover.phases import PhaseRecord

ROUTE = "svc/copy"
QUEUE = "svc/orders"
DRAIN = PhaseRecord(phase=Phase.DRAIN)


def test_uncovered_lists_per_route_what_no_report_covers() -> None:
    required = {ROUTE: {"t/0", "t/1"}, QUEUE: {WHOLE}}
    assert uncovered(required, {}) == {ROUTE: {"t/0", "t/1"}, QUEUE: {WHOLE}}
    reports = {"a": {ROUTE: ["t/0"]}, "b": {ROUTE: ["t/1"], QUEUE: [WHOLE]}}
    assert uncovered(required, reports) == {}
    assert uncovered(required, {"a": {ROUTE: ["t/0"], QUEUE: [WHOLE]}}) == {ROUTE: {"t/1"}}


def test_without_takes_lanes_out_of_every_report_and_drops_what_is_left_empty() -> None:
    reports = {"a": {ROUTE: ["t/0", "t/1"]}, "b": {ROUTE: ["t/1"]}}
    assert without(reports, {ROUTE: {"t/1"}}) == {"a": {ROUTE: ["t/0"]}}


def test_an_instance_owning_nothing_never_makes_a_service_drained() -> None:
    """The finding: its backlog is 'unknown', read as 0, so it is quiet; it must vouch for nothing."""
    owner_busy = DRAIN
    record, missing = next_drain_record(
        owner_busy, "idle", {ROUTE: set()}, {ROUTE: {"t/0", "t/1"}}, quiet=True, active=False
    )
    assert record.drained_at is None
    assert record.drain_reports == {}
    assert missing == {ROUTE: {"t/0", "t/1"}}


def test_drained_once_the_owners_reports_cover_every_partition() -> None:
    required = {ROUTE: {"t/0", "t/1"}}
    record, missing = next_drain_record(DRAIN, "a", {ROUTE: {"t/0"}}, required, quiet=True, active=False)
    assert (record.drained_at, missing) == (None, {ROUTE: {"t/1"}})
    assert record.drain_reports == {"a": {ROUTE: ["t/0"]}}
    record, missing = next_drain_record(record, "b", {ROUTE: {"t/1"}}, required, quiet=True, active=False)
    assert missing == {}
    assert record.drained_at is not None
    assert record.drained_by == "b"


def test_a_queue_is_covered_by_one_instance() -> None:
    record, missing = next_drain_record(DRAIN, "a", {QUEUE: {WHOLE}}, {QUEUE: {WHOLE}}, quiet=True, active=False)
    assert missing == {}
    assert record.drained_by == "a"


def test_messages_on_an_owned_lane_withdraw_every_report_of_it_and_the_verdict() -> None:
    required = {ROUTE: {"t/0", "t/1"}}
    drained = PhaseRecord(
        phase=Phase.DRAIN,
        drained_at="2026-01-01T00:00:00Z",
        drained_by="a",
        # 'gone' owned t/1 before a rebalance (or died); 'b' owns it now.
        drain_reports={"a": {ROUTE: ["t/0"]}, "gone": {ROUTE: ["t/1"]}},
    )
    record, missing = next_drain_record(drained, "b", {ROUTE: {"t/1"}}, required, quiet=False, active=True)
    assert record.drain_reports == {"a": {ROUTE: ["t/0"]}}
    assert record.drained_at is None
    assert missing == {ROUTE: {"t/1"}}


def test_a_quiet_instance_keeps_what_it_reported_before_a_rebalance() -> None:
    required = {ROUTE: {"t/0", "t/1"}}
    before = PhaseRecord(phase=Phase.DRAIN, drain_reports={"a": {ROUTE: ["t/0", "t/1"]}})
    # Mid-rebalance 'a' owns nothing for a moment: its report still holds, the verdict too.
    record, missing = next_drain_record(before, "a", {ROUTE: set()}, required, quiet=True, active=False)
    assert record.drain_reports == before.drain_reports
    assert missing == {}


def test_an_instance_that_does_not_know_every_partition_yet_leaves_the_verdict_alone() -> None:
    drained = PhaseRecord(phase=Phase.DRAIN, drained_at="2026-01-01T00:00:00Z", drained_by="a")
    record, missing = next_drain_record(drained, "new", {}, None, quiet=False, active=False)
    assert (record, missing) == (drained, None)


def test_the_record_with_reports_survives_json() -> None:
    record = PhaseRecord(phase=Phase.DRAIN, drain_reports={"a": {ROUTE: ["t/0"]}})
    assert PhaseRecord.from_json(record.to_json()) == record
    assert PhaseRecord.from_json(b'{"phase": "drain"}').drain_reports == {}  # written by an older bridge


def test_lanes_text_names_a_few() -> None:
    assert lanes_text({ROUTE: {"t/1", "t/0"}, QUEUE: {WHOLE}}) == "svc/copy: t/0, t/1; svc/orders: *"
    assert lanes_text({ROUTE: {f"t/{i}" for i in range(12)}}, limit=2) == "svc/copy: t/0, t/1 and 10 more"
