"""`nats-bridge dry-run --input`: recorded messages replayed through a small mapping, offline."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bridge.commands import app
from bridge.dryrun import connect as dryrun_connect

# Every broker points at a port nothing listens on: a replay that tried to connect would fail.
MAPPING = """
version: 1
nats: {servers: ["nats://127.0.0.1:1"]}
streams:
  - {name: ORDERS, subjects: ["orders.>"], duplicate_window: 5m}
  - {name: INVENTORY, subjects: ["inventory.>"], duplicate_window: 5m}
sources:
  rabbit: {type: rabbitmq, url: "amqp://guest:guest@127.0.0.1:1/"}
  kafka: {type: kafka, bootstrap_servers: ["127.0.0.1:1"]}
services:
  shop:
    routes:
      - name: orders
        source: rabbit
        from: {exchange: orders, type: topic, bindings: ["order.*.created"]}
        to: "orders.{rk}"
      - name: stock
        source: kafka
        from: {topics: [inventory]}
        to: "inventory.{header:region}"
        on_error: skip
      - name: adjustments
        source: kafka
        from: {topics: [adjustments]}
        to: "inventory.adjustments.{partition}"
"""

WIDE = {"COLUMNS": "400"}  # rich folds long cells at 80 columns; the tests look for whole paths and subjects

ROUTED_AMQP = {
    "amqp": {
        "exchange": "orders",
        "routing_key": "order.eu.created",
        "properties": {"message_id": "m-1", "content_type": "application/json"},
        "headers": {"tenant": "acme"},
        "body": '{"id": 1}',
    }
}
UNROUTED_AMQP = {"amqp": {"exchange": "orders", "routing_key": "order.eu.cancelled", "body": "x"}}
ROUTED_KAFKA = {
    "kafka": {
        "topic": "adjustments",
        "partition": 3,
        "offset": 17,
        "key": "sku-42",
        "value": {"base64": base64.b64encode(b"\x00\x01delta").decode()},
        "headers": [["trace", "t-1"], ["blob", {"base64": base64.b64encode(b"\xff\xfe").decode()}]],
        "timestamp_ms": 1718000000000,
    }
}
UNMAPPABLE_KAFKA = {"kafka": {"topic": "inventory", "offset": 5, "value": "no region header"}}
OVERSIZE_KAFKA = {"kafka": {"topic": "adjustments", "offset": 18, "value": "x" * 5000}}


def _files(tmp_path: Path, lines: list[Any]) -> tuple[Path, Path]:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING)
    records = tmp_path / "records.jsonl"
    records.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return mapping, records


def _run_json(mapping: Path, records: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(app, ["dry-run", str(mapping), "--input", str(records), "--json", *extra])
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture
def replayed(tmp_path: Path) -> tuple[int, dict[str, Any]]:
    lines = [ROUTED_AMQP, UNROUTED_AMQP, ROUTED_KAFKA, "", UNMAPPABLE_KAFKA, OVERSIZE_KAFKA]
    mapping, records = _files(tmp_path, lines)
    return _run_json(mapping, records, "--max-payload", "4096")


def _message(document: dict[str, Any], line: int) -> dict[str, Any]:
    (message,) = [m for m in document["messages"] if m["line"] == line]
    return message


def test_routed_messages_show_subject_msg_id_headers_and_size(replayed: tuple[int, dict[str, Any]]) -> None:
    _, document = replayed
    (amqp,) = _message(document, 1)["routes"]
    assert (amqp["route"], amqp["subject"], amqp["msg_id"], amqp["fate"]) == (
        "shop/orders",
        "orders.order.eu.created",
        "shop/orders/m-1",
        "publish",
    )
    assert amqp["size"] == len('{"id": 1}')
    assert amqp["headers"]["tenant"] == "acme"
    assert amqp["streams"] == ["ORDERS"]
    (kafka,) = _message(document, 3)["routes"]
    assert kafka["subject"] == "inventory.adjustments.3"
    assert kafka["msg_id"] == f"{kafka['route']}/adjustments/3/17"
    assert kafka["size"] == len(b"\x00\x01delta")
    # The exact record is mapped: its timestamp and its binary header travel too.
    assert kafka["headers"]["Kafka-Timestamp"] == "1718000000000"
    assert kafka["headers"]["Kafka-Key"] == "sku-42"
    assert "blob" in kafka["headers"]
    assert kafka["encoded_size"] > kafka["size"]


def test_message_no_binding_matches_is_reported_unrouted_with_the_reason(
    replayed: tuple[int, dict[str, Any]],
) -> None:
    code, document = replayed
    message = _message(document, 2)
    assert message["routed"] is False
    assert message["routes"] == []
    reasons = {miss["route"]: miss["reason"] for miss in message["misses"]}
    assert "order.*.created" in reasons["shop/orders"]
    assert "order.eu.cancelled" in reasons["shop/orders"]
    assert code == 1
    assert any("taken by no route" in f["message"] and "line 2" in f["message"] for f in document["findings"])


def test_unrenderable_template_follows_on_error(replayed: tuple[int, dict[str, Any]]) -> None:
    _, document = replayed
    (verdict,) = _message(document, 5)["routes"]
    assert verdict["route"] == "shop/stock"
    assert (verdict["fate"], verdict["problem"]) == ("skip", "unmappable")
    assert "region" in verdict["detail"]
    assert any(f["subject"] == "shop/stock" and "would be skipped" in f["message"] for f in document["findings"])


def test_message_over_max_payload_is_dead_lettered_as_payload_too_large(
    replayed: tuple[int, dict[str, Any]],
) -> None:
    _, document = replayed
    (verdict,) = _message(document, 6)["routes"]
    assert (verdict["fate"], verdict["problem"]) == ("dead-letter", "payload-too-large")
    assert "max_payload 4096" in verdict["detail"]
    assert document["input"]["max_payload"] == 4096


def test_json_shape(replayed: tuple[int, dict[str, Any]]) -> None:
    code, document = replayed
    assert code == document["exit_code"] == 1
    assert [m["line"] for m in document["messages"]] == [1, 2, 3, 5, 6]  # the blank line 4 is skipped
    assert {"line", "source", "message", "routed", "routes", "misses"} <= set(document["messages"][0])
    route_keys = {"route", "subject", "msg_id", "headers", "size", "encoded_size", "streams", "fate", "problem"}
    assert route_keys <= set(document["messages"][0]["routes"][0])
    assert [m["source"] for m in document["messages"]] == ["amqp", "amqp", "kafka", "kafka", "kafka"]
    assert any(f["check"] == "replay" and f["severity"] == "info" for f in document["findings"])


def test_malformed_line_is_an_error_naming_the_line(tmp_path: Path) -> None:
    mapping, records = _files(tmp_path, [ROUTED_AMQP, '{"kafka": {"topic": "adjustments"', {"kafka": {}}])
    result = CliRunner().invoke(app, ["dry-run", str(mapping), "--input", str(records)], env=WIDE)
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"{records}:2" in result.stdout
    assert f"{records}:3" in result.stdout
    code, document = _run_json(mapping, records)
    assert code == 2
    errors = [f for f in document["findings"] if f["severity"] == "error"]
    assert [f["subject"] for f in errors] == [f"{records}:2", f"{records}:3"]
    assert len(document["messages"]) == 1  # the good line is still replayed


def test_unreadable_input_is_an_error(tmp_path: Path) -> None:
    mapping, _ = _files(tmp_path, [])
    code, document = _run_json(mapping, tmp_path / "missing.jsonl")
    assert code == 2
    assert any("cannot read the input file" in f["message"] for f in document["findings"])


def test_clean_replay_touches_no_broker_and_is_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_probes(*_args: object) -> None:
        raise AssertionError("dry-run --input without --connect must not probe any broker")

    monkeypatch.setattr(dryrun_connect, "probe_all", no_probes)
    mapping, records = _files(tmp_path, [ROUTED_AMQP, ROUTED_KAFKA])
    started = time.monotonic()
    result = CliRunner().invoke(app, ["dry-run", str(mapping), "--input", str(records)], env=WIDE)
    assert time.monotonic() - started < 5  # a connection attempt would take PROBE_TIMEOUT or fail
    assert result.exit_code == 0, result.stdout
    assert "orders.order.eu.created" in result.stdout
    assert "inventory.adjustments.3" in result.stdout
    assert "Nothing was published" in result.stdout


def test_table_shows_unrouted_and_dead_lettered_rows(tmp_path: Path) -> None:
    mapping, records = _files(tmp_path, [UNROUTED_AMQP, OVERSIZE_KAFKA])
    result = CliRunner().invoke(
        app, ["dry-run", str(mapping), "--input", str(records), "--max-payload", "4096"], env=WIDE
    )
    assert result.exit_code == 1
    assert "taken by no route" in result.stdout
    assert "dead-letter (payload-too-large)" in result.stdout


FILTERING = """
version: 1
nats: {servers: ["nats://127.0.0.1:1"]}
streams:
  - {name: LEDGER, subjects: ["ledger.>"]}
sources:
  kafka: {type: kafka, bootstrap_servers: ["127.0.0.1:1"]}
services:
  books:
    routes:
      - name: entries
        source: kafka
        from: {topics: [ledger], tombstones: skip}
        to: "ledger.{partition}"
"""


def test_a_tombstone_the_route_skips_and_a_record_a_reverse_route_wrote_are_filtered_as_the_bridge_filters_them(
    tmp_path: Path,
) -> None:
    """Issue 15: dry-run (and explain) used to say "publish" for both, which the running bridge never copies."""
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(FILTERING)
    records = tmp_path / "records.jsonl"
    lines = [
        {"kafka": {"topic": "ledger", "offset": 1, "key": "a", "value": None}},
        {"kafka": {"topic": "ledger", "offset": 2, "value": "x", "headers": [["nats-bridge-origin", "nats"]]}},
        {"kafka": {"topic": "ledger", "offset": 3, "value": "x"}},
    ]
    records.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    code, document = _run_json(mapping, records)
    fates = [(m["line"], m["routes"][0]["fate"], m["routes"][0]["detail"]) for m in document["messages"]]
    assert fates[0][:2] == (1, "filtered")
    assert "tombstones: skip" in fates[0][2]
    assert fates[1][:2] == (2, "filtered")
    assert "reverse route" in fates[1][2]
    assert fates[2][:2] == (3, "publish")
    assert code == 0, document
    text = CliRunner().invoke(app, ["dry-run", str(mapping), "--input", str(records)], env=WIDE).stdout
    assert "filtered: a tombstone (tombstones: skip)" in text, text
    findings = [finding["message"] for finding in document["findings"]]
    assert any("2 message(s) (lines 1, 2) filtered" in finding for finding in findings), findings
