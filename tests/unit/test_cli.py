"""The CLI as a person meets it: exit codes, file:line errors, no tracebacks, no secrets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "mappings" / "shop.yaml"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=ROOT,
    )


def test_validate_accepts_the_example() -> None:
    result = run_cli("validate", str(SHOP))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_validate_reports_file_line_and_hint_and_exits_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    text = SHOP.read_text().replace('bindings: ["order.#"]', 'bindngs: ["order.#"]')
    broken.write_text(text)
    line = text.splitlines().index('          bindngs: ["order.#"]') + 1
    result = run_cli("validate", str(broken))
    assert result.returncode == 2
    assert f"{broken}:{line}:11: services.orders.routes[0].from.bindngs: unknown key 'bindngs'" in result.stderr
    assert "did you mean 'bindings'?" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_validate_json_lists_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 2\nsources: {}\nservices: {}\n")
    result = run_cli("validate", "--json", str(broken))
    assert result.returncode == 2
    document = json.loads(result.stdout)
    assert document["valid"] is False
    assert document["errors"][0]["line"] == 1
    assert document["errors"][0]["path"] == "version"


@pytest.mark.parametrize(
    "content",
    ["", "just a string\n", "- a\n- b\n", "a: [\n", "\x00\x01binary", "services: {x: {routes: []}}\n"],
    ids=["empty", "scalar", "list", "unclosed", "binary", "empty-routes"],
)
def test_validate_never_prints_a_traceback(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    result = run_cli("validate", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert str(path) in result.stderr


def test_validate_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("validate", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr
    assert "cannot read the file" in result.stderr


def test_explain_topic_routing_key(tmp_path: Path) -> None:
    result = run_cli("explain", str(SHOP), "--exchange", "orders", "--routing-key", "order.eu.created")
    assert result.returncode == 0, result.stderr
    assert "route orders/order-events" in result.stdout
    assert "subject      orders.order.eu.created" in result.stdout
    assert "stream       ORDERS" in result.stdout
    assert "strategy content-hash" in result.stdout


def test_explain_json_for_kafka_record() -> None:
    result = run_cli(
        "explain",
        str(SHOP),
        "--topic",
        "inventory.adjustments",
        "--key",
        "sku 42",
        "--partition",
        "3",
        "--offset",
        "17",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    (match,) = document["matches"]
    assert match["route"] == "inventory/adjustments"
    assert match["subject"] == "inventory.adjustments.sku%2042"
    assert match["msg_id"] == "inventory/adjustments/inventory.adjustments/3/17"
    assert match["streams"] == ["INVENTORY"]
    assert match["headers"]["Kafka-Key"] == "sku 42"
    assert match["headers"]["Shop-Source"] == "kafka/inventory.adjustments"


def test_explain_says_why_nothing_matches() -> None:
    result = run_cli("explain", str(SHOP), "--exchange", "orders", "--routing-key", "invoice.created")
    assert result.returncode == 1
    assert "No route takes this message." in result.stdout
    assert "orders/order-events: topic binding key(s) 'order.#' do not match routing key 'invoice.created'" in (
        result.stdout
    )


def test_explain_headers_exchange_any() -> None:
    result = run_cli(
        "explain",
        str(SHOP),
        "--exchange",
        "billing",
        "--routing-key",
        "",
        "--header",
        "format=pdf",
        "--message-id",
        "inv-1",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    (match,) = json.loads(result.stdout)["matches"]
    assert match["subject"] == "billing.invoices.pdf"
    assert match["msg_id"] == "billing/invoices/inv-1"
    assert match["msg_id_strategy"] == "message-id"


def test_explain_needs_one_kind_of_message() -> None:
    result = run_cli("explain", str(SHOP), "--exchange", "orders", "--topic", "x")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_schema_is_json_schema() -> None:
    result = run_cli("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "nats-bridge mapping file"
    assert {"nats", "streams", "sources", "services"} <= set(schema["properties"])


def test_help_shows_no_secret_from_environment() -> None:
    env = {"PATH": "/usr/bin:/bin", "NATS_PASSWORD": "hunter2-secret", "AMQP_URL": "amqp://u:hunter2@h/"}
    for args in (["--help"], ["validate", "--help"], ["explain", "--help"]):
        result = run_cli(*args, env=env)
        assert result.returncode == 0
        assert "hunter2" not in result.stdout + result.stderr
