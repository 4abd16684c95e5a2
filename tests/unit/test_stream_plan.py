"""The stream planner behind `nats-bridge streams plan|apply`, offline.

Server configs are built the way nats-py reads them off the wire (strings for enums,
durations from nanoseconds), so what is compared here is what the real commands compare.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from nats.js import api as js_api

from bridge.config.streams import StreamConfig
from bridge.jetstream.apply import Outcome, apply_plan, format_report
from bridge.jetstream.declare import to_nats_config
from bridge.jetstream.plan import Action, Plan, format_plan, plan_streams, show_value, subjects_collide

ROOT = Path(__file__).resolve().parents[2]
SECOND = 1_000_000_000  # nanoseconds


def wanted(**fields: Any) -> StreamConfig:
    """A mapping-file stream, as the loader would build it."""
    return StreamConfig.model_validate({"name": "ORDERS", "subjects": ["orders.>"], **fields})


def on_server(**fields: Any) -> js_api.StreamConfig:
    """A stream config as nats-server 2.15 reports it for `wanted()` (defaults filled in), with overrides."""
    raw: dict[str, Any] = {
        "name": "ORDERS",
        "subjects": ["orders.>"],
        "retention": "limits",
        "max_consumers": -1,
        "max_msgs": -1,
        "max_bytes": -1,
        "max_age": 0,
        "max_msgs_per_subject": -1,
        "max_msg_size": -1,
        "discard": "old",
        "storage": "file",
        "num_replicas": 1,
        "duplicate_window": 120 * SECOND,
        "compression": "none",
        "allow_direct": False,
        "mirror_direct": False,
        "sealed": False,
        "deny_delete": False,
        "deny_purge": False,
        "allow_rollup_hdrs": False,
        "consumer_limits": {},
        "allow_msg_ttl": False,
        "metadata": {"_nats.level": "1", "_nats.ver": "2.15.1"},
    }
    raw.update(fields)
    return js_api.StreamConfig.from_response(raw)


def only(plan: Plan) -> Any:
    (stream,) = plan.streams
    return stream


# --------------------------------------------------------------------------- create / unchanged


def test_missing_stream_is_created_exactly_as_the_file_says() -> None:
    stream = wanted(max_age="7d", max_bytes="1GiB")
    plan = plan_streams([stream], {})
    planned = only(plan)
    assert planned.action is Action.CREATE
    assert planned.target == to_nats_config(stream)
    fields = {change.field: change for change in planned.changes}
    assert fields["max_age"].file == 7 * 86400
    assert fields["max_bytes"].file == 1 << 30
    assert fields["storage"].file == "file"
    assert all(change.server is None for change in planned.changes)
    assert plan.pending
    assert not plan.refused


def test_a_stream_named_none_on_the_server_is_missing() -> None:
    assert only(plan_streams([wanted()], {"ORDERS": None})).action is Action.CREATE


def test_matching_stream_is_unchanged_whatever_else_the_server_set() -> None:
    server = on_server(allow_direct=True, compression="s2", max_msgs_per_subject=10, description="ops wrote this")
    plan = plan_streams([wanted()], {"ORDERS": server})
    planned = only(plan)
    assert planned.action is Action.UNCHANGED
    assert planned.changes == ()
    assert planned.target is None
    assert not plan.pending
    assert not plan.refused


def test_subject_order_alone_is_no_change() -> None:
    stream = wanted(subjects=["a.>", "b.>"])
    assert only(plan_streams([stream], {"ORDERS": on_server(subjects=["b.>", "a.>"])})).action is Action.UNCHANGED


# --------------------------------------------------------------------------- each changeable field

CHANGEABLE = [
    # (file fields, server fields, plan field, server value, file value)
    ({"subjects": ["orders.>", "refunds.>"]}, {}, "subjects", ["orders.>"], ["orders.>", "refunds.>"]),
    ({"description": "orders"}, {"description": "old text"}, "description", "old text", "orders"),
    ({"description": "orders"}, {}, "description", None, "orders"),
    ({"retention": "interest"}, {}, "retention", "limits", "interest"),
    ({}, {"retention": "interest"}, "retention", "interest", "limits"),
    ({"replicas": 3}, {}, "replicas", 1, 3),
    ({"max_msgs": 1000}, {}, "max_msgs", -1, 1000),
    ({}, {"max_msgs": 1000}, "max_msgs", 1000, -1),
    ({"max_bytes": "1GiB"}, {}, "max_bytes", -1, 1 << 30),
    ({"max_age": "7d"}, {}, "max_age", 0.0, 7 * 86400.0),
    ({"max_msg_size": "1MiB"}, {}, "max_msg_size", -1, 1 << 20),
    ({"duplicate_window": "5m"}, {}, "duplicate_window", 120.0, 300.0),
    ({"discard": "new"}, {}, "discard", "old", "new"),
]


@pytest.mark.parametrize(
    ("file_fields", "server_fields", "field", "server_value", "file_value"),
    CHANGEABLE,
    ids=[f"{case[2]}-{index}" for index, case in enumerate(CHANGEABLE)],
)
def test_each_changeable_field_is_one_update_and_nothing_else(
    file_fields: dict[str, Any], server_fields: dict[str, Any], field: str, server_value: Any, file_value: Any
) -> None:
    server = on_server(**server_fields)
    before = copy.deepcopy(server)
    planned = only(plan_streams([wanted(**file_fields)], {"ORDERS": server}))
    assert planned.action is Action.UPDATE
    assert [(c.field, c.server, c.file) for c in planned.changes] == [(field, server_value, file_value)]
    assert planned.refusals == ()
    # The update is the server's whole config with that one field replaced.
    nats_field = "num_replicas" if field == "replicas" else field
    target = planned.target.as_dict()
    current = before.as_dict()
    assert {key for key in target.keys() | current.keys() if target.get(key) != current.get(key)} == {nats_field}
    assert server == before  # planning never mutates what it was given


def test_update_keeps_every_server_setting_the_file_does_not_have() -> None:
    server = on_server(
        description="set by ops",
        allow_direct=True,
        compression="s2",
        max_msgs_per_subject=5,
        max_consumers=7,
        deny_delete=True,
        allow_rollup_hdrs=True,
        allow_msg_ttl=True,
        metadata={"owner": "payments", "_nats.level": "1"},
        placement={"cluster": "east", "tags": ["ssd"]},
        consumer_limits={"max_ack_pending": 500},
    )
    planned = only(plan_streams([wanted(max_age="7d", max_msgs=1000)], {"ORDERS": server}))
    assert planned.action is Action.UPDATE
    assert [c.field for c in planned.changes] == ["max_msgs", "max_age"]
    target = planned.target
    assert (target.max_age, target.max_msgs) == (7 * 86400, 1000)
    assert target.description == "set by ops"
    assert target.allow_direct is True
    assert target.compression == "s2"
    assert target.max_msgs_per_subject == 5
    assert target.max_consumers == 7
    assert target.deny_delete is True
    assert target.allow_rollup_hdrs is True
    assert target.allow_msg_ttl is True
    assert target.metadata == {"owner": "payments", "_nats.level": "1"}
    assert target.placement == js_api.Placement(cluster="east", tags=["ssd"])
    assert target.consumer_limits == js_api.StreamConsumerLimits(max_ack_pending=500)
    # What goes on the wire: durations in nanoseconds, every kept field present.
    wire = target.as_dict()
    assert wire["max_age"] == 7 * 86400 * SECOND
    assert wire["duplicate_window"] == 120 * SECOND
    assert wire["allow_direct"] is True
    assert wire["max_msgs_per_subject"] == 5
    json.dumps(wire)


def test_update_sends_subjects_in_the_files_order() -> None:
    planned = only(plan_streams([wanted(subjects=["z.>", "a.>"])], {"ORDERS": on_server(subjects=["a.>"])}))
    assert planned.target.subjects == ["z.>", "a.>"]
    assert [(c.field, c.server, c.file) for c in planned.changes] == [("subjects", ["a.>"], ["z.>", "a.>"])]


def test_file_without_description_leaves_the_servers_alone() -> None:
    planned = only(plan_streams([wanted(max_msgs=10)], {"ORDERS": on_server(description="ops")}))
    assert [c.field for c in planned.changes] == ["max_msgs"]
    assert planned.target.description == "ops"


# --------------------------------------------------------------------------- refused


def test_storage_change_is_refused_with_the_reason_and_nothing_to_send() -> None:
    plan = plan_streams([wanted(storage="memory", max_msgs=5)], {"ORDERS": on_server()})
    planned = only(plan)
    assert planned.action is Action.REFUSED
    assert planned.target is None
    (refusal,) = planned.refusals
    assert refusal.field == "storage"
    assert "cannot change a stream's storage type in place" in refusal.reason
    assert "file -> memory" in refusal.reason
    # The whole difference is still shown, so the person sees everything at once.
    assert {c.field for c in planned.changes} == {"storage", "max_msgs"}
    assert plan.refused


@pytest.mark.parametrize(("file_retention", "server_retention"), [("workqueue", "limits"), ("interest", "workqueue")])
def test_retention_to_or_from_workqueue_is_refused(file_retention: str, server_retention: str) -> None:
    planned = only(plan_streams([wanted(retention=file_retention)], {"ORDERS": on_server(retention=server_retention)}))
    assert planned.action is Action.REFUSED
    (refusal,) = planned.refusals
    assert refusal.field == "retention"
    assert "workqueue" in refusal.reason


def test_a_mirror_is_refused() -> None:
    server = on_server(subjects=None, mirror={"name": "UPSTREAM"})
    planned = only(plan_streams([wanted()], {"ORDERS": server}))
    assert planned.action is Action.REFUSED
    assert "mirror of 'UPSTREAM'" in planned.refusals[0].reason


def test_a_sealed_stream_is_refused() -> None:
    server = on_server(sealed=True, discard="new", deny_delete=True, deny_purge=True)
    planned = only(plan_streams([wanted()], {"ORDERS": server}))
    assert planned.action is Action.REFUSED
    assert any(r.field == "sealed" for r in planned.refusals)


def test_discard_old_is_refused_on_a_discard_new_per_subject_stream() -> None:
    server = on_server(discard="new", discard_new_per_subject=True, max_msgs_per_subject=1)
    planned = only(plan_streams([wanted()], {"ORDERS": server}))
    assert planned.action is Action.REFUSED
    assert planned.refusals[0].field == "discard"


def test_new_stream_overlapping_a_server_stream_is_refused() -> None:
    other = on_server(name="LEGACY", subjects=["orders.eu.*"])
    planned = only(plan_streams([wanted()], {"LEGACY": other}))
    assert planned.action is Action.REFUSED
    assert "overlaps 'orders.eu.*' of stream 'LEGACY'" in planned.refusals[0].reason


def test_changed_subjects_overlapping_another_file_stream_are_refused() -> None:
    first = wanted(subjects=["orders.>", "refunds.>"])
    second = wanted(name="REFUNDS", subjects=["refunds.eu"])
    plan = plan_streams([first, second], {"ORDERS": on_server(), "REFUNDS": on_server(name="REFUNDS", subjects=[])})
    assert [s.action for s in plan.streams] == [Action.REFUSED, Action.REFUSED]


# --------------------------------------------------------------------------- streams the file does not name


def test_server_streams_the_file_does_not_name_are_neither_planned_nor_touched() -> None:
    server = {
        "ORDERS": on_server(),
        "KV_nats_bridge_checkpoints": on_server(name="KV_nats_bridge_checkpoints", subjects=["$KV.x.>"]),
        "SOMEONE_ELSES": on_server(name="SOMEONE_ELSES", subjects=["else.>"], storage="memory"),
    }
    before = copy.deepcopy(server)
    plan = plan_streams([wanted(max_msgs=1)], server)
    assert [s.name for s in plan.streams] == ["ORDERS"]
    assert server == before
    text = format_plan(plan) + json.dumps(plan.as_json())
    assert "SOMEONE_ELSES" not in text
    assert "KV_nats_bridge_checkpoints" not in text
    assert "delete" not in json.dumps(plan.as_json())


# --------------------------------------------------------------------------- helpers and output


@pytest.mark.parametrize(
    ("first", "second", "collide"),
    [
        ("a.b", "a.b", True),
        ("a.b", "a.c", False),
        ("a.*", "a.b", True),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        ("a.*", "a.b.c", False),
        ("*.b", "a.*", True),
        (">", "x", True),
        ("a.b.>", "a.*.c", True),
    ],
)
def test_subjects_collide_by_nats_rules(first: str, second: str, collide: bool) -> None:
    assert subjects_collide(first, second) is collide
    assert subjects_collide(second, first) is collide


def test_values_show_as_the_file_writes_them() -> None:
    assert show_value("max_age", 0) == "forever"
    assert show_value("max_age", 604800.0) == "7d"
    assert show_value("duplicate_window", 120.0) == "2m"
    assert show_value("max_bytes", -1) == "unlimited"
    assert show_value("max_bytes", 1 << 30) == "1GiB"
    assert show_value("max_msgs", 1000) == "1000"
    assert show_value("subjects", ["a.>", "b"]) == "a.>, b"
    assert show_value("description", None) == "-"


def test_plan_table_and_json() -> None:
    server = {"ORDERS": on_server(), "KEPT": on_server(name="KEPT", subjects=["kept.>"])}
    plan = plan_streams(
        [
            wanted(max_age="7d", max_msgs=1000),
            wanted(name="KEPT", subjects=["kept.>"]),
            wanted(name="NEW", subjects=["new.>"]),
        ],
        server,
    )
    text = format_plan(plan)
    assert "ORDERS                   update     max_msgs          unlimited          1000" in text
    assert "max_age           forever            7d" in text
    assert "KEPT                     unchanged" in text
    assert "NEW                      create" in text
    assert "1 to create, 1 to update, 1 unchanged, 0 refused." in text
    document = json.loads(json.dumps(plan.as_json()))
    assert document["summary"] == {"create": 1, "update": 1, "unchanged": 1, "refused": 0}
    orders = document["streams"][0]
    assert orders["changes"] == [
        {"field": "max_msgs", "server": -1, "file": 1000},
        {"field": "max_age", "server": 0.0, "file": 604800.0},
    ]


# --------------------------------------------------------------------------- apply's rules, against a recording fake


class RecordingJetStream:
    """The two calls apply makes, recorded; `fail` names streams the 'server' refuses."""

    def __init__(self, fail: frozenset[str] = frozenset()) -> None:
        self.calls: list[tuple[str, js_api.StreamConfig]] = []
        self.fail = fail

    async def add_stream(self, config: js_api.StreamConfig) -> None:
        await self._call("add", config)

    async def update_stream(self, config: js_api.StreamConfig) -> None:
        await self._call("update", config)

    async def _call(self, verb: str, config: js_api.StreamConfig) -> None:
        from nats.js.errors import ServerError

        if config.name in self.fail:
            raise ServerError(code=500, err_code=10074, description="replicas > 1 not supported in non-clustered mode")
        self.calls.append((verb, config))


def mixed_plan() -> Plan:
    return plan_streams(
        [wanted(max_msgs=5), wanted(name="NEW", subjects=["new.>"]), wanted(name="MEM", subjects=["mem.>"])],
        {"ORDERS": on_server(), "MEM": on_server(name="MEM", subjects=["mem.>"], storage="memory")},
    )


async def test_apply_applies_nothing_when_a_stream_is_refused() -> None:
    js = RecordingJetStream()
    report = await apply_plan(js, mixed_plan())  # type: ignore[arg-type]
    assert js.calls == []
    assert [r.outcome for r in report.results] == [Outcome.SKIPPED, Outcome.SKIPPED, Outcome.REFUSED]
    assert not report.ok
    assert "nothing was applied (use --partial" in format_report(report)


async def test_apply_partial_applies_the_others_and_still_reports_the_refusal() -> None:
    js = RecordingJetStream()
    report = await apply_plan(js, mixed_plan(), partial=True)  # type: ignore[arg-type]
    assert [(verb, config.name) for verb, config in js.calls] == [("update", "ORDERS"), ("add", "NEW")]
    assert [r.outcome for r in report.results] == [Outcome.UPDATED, Outcome.CREATED, Outcome.REFUSED]
    assert not report.ok


async def test_apply_stops_at_the_first_server_error() -> None:
    plan = plan_streams([wanted(replicas=3), wanted(name="NEW", subjects=["new.>"])], {"ORDERS": on_server()})
    js = RecordingJetStream(fail=frozenset({"ORDERS"}))
    report = await apply_plan(js, plan)  # type: ignore[arg-type]
    assert js.calls == []
    assert [r.outcome for r in report.results] == [Outcome.FAILED, Outcome.SKIPPED]
    assert report.results[0].error == "replicas > 1 not supported in non-clustered mode (err_code 10074)"
    assert json.loads(json.dumps(report.as_json()))["ok"] is False


# --------------------------------------------------------------------------- the command line, offline


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )


def test_streams_help_lists_show_plan_and_apply() -> None:
    result = run_cli("streams", "--help")
    assert result.returncode == 0
    for word in ("show", "plan", "apply"):
        assert word in result.stdout


def test_streams_file_still_means_show(tmp_path: Path) -> None:
    # No server needed: the missing file is reported by `show`, the default subcommand.
    result = run_cli("streams", str(tmp_path / "nope.yaml"), "--wait-for", "3")
    assert result.returncode == 2
    assert "cannot read the file" in result.stderr
    assert "No such command" not in result.stderr


def test_plan_without_nats_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    text = (ROOT / "mappings" / "kafka-orders.yaml").read_text()
    text = text.replace("${NATS_URL:-nats://127.0.0.1:14222}", "nats://127.0.0.1:9")
    mapping.write_text(text.replace("name: nats-bridge-kafka-orders", "name: x\n  connect_timeout: 1s"))
    for command in ("plan", "apply"):
        result = run_cli("streams", command, str(mapping))
        assert result.returncode == 2, result.stdout + result.stderr
        assert "cannot connect to NATS" in result.stderr
        assert "Traceback" not in result.stderr
