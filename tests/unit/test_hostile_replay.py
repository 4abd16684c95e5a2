"""Issue 14, hostile input to `dry-run --input`: a line nested deeply, holding a lone surrogate
or otherwise beyond the bounds is an error naming its line, and the other lines are still
replayed; a line that never ends (`/dev/zero`) ends the replay at the line size limit."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bridge.commands import app

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "mappings" / "shop.yaml"
ROUTED = json.dumps({"amqp": {"exchange": "orders", "routing_key": "order.eu.created", "body": "{}"}})


def replay(tmp_path: Path, lines: list[str], env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    records = tmp_path / "records.jsonl"
    records.write_bytes("\n".join(lines).encode("utf-8", errors="surrogatepass") + b"\n")
    result = CliRunner().invoke(app, ["dry-run", str(SHOP), "--input", str(records), "--json"], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result.exit_code, json.loads(result.stdout)


def errors(document: dict[str, Any]) -> dict[str, str]:
    """The error findings by subject (`file:line`)."""
    return {f["subject"]: f["message"] for f in document["findings"] if f["severity"] == "error"}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"amqp": ' * 5000 + "{}" + "}" * 5000, "nested deeper than 32 levels"),
        ('{"kafka": {"topic": "t", "headers": [' + "[" * 40 + "]" * 40 + "]}}", "kafka.headers[0][0]"),
        ('{"amqp": {"exchange": "o", "routing_key": "\\ud800", "body": ""}}', "amqp.routing_key: a lone surrogate"),
        ('{"amqp": {"exchange": "o", "routing_key": "x", "headers": {"\\udfff": 1}}}', "a key holds a lone surrogate"),
        ('{"kafka": {"topic": "t", "offset": ' + "9" * 5000 + "}}", "Exceeds the limit (4300 digits)"),
        ('{"kafka": {"topic": "t", "offset": NaN}}', "NaN is not a JSON number"),
    ],
    ids=["deep", "deep-headers", "surrogate", "surrogate-key", "digits", "nan"],
)
def test_a_hostile_line_is_an_error_and_the_rest_is_replayed(tmp_path: Path, line: str, expected: str) -> None:
    code, document = replay(tmp_path, [ROUTED, line, ROUTED])
    assert code == 2
    problems = errors(document)
    assert expected in problems[f"{tmp_path / 'records.jsonl'}:2"]
    assert [message["line"] for message in document["messages"]] == [1, 3]


def test_a_line_over_the_size_limit_ends_the_replay_there(tmp_path: Path) -> None:
    long_line = json.dumps({"kafka": {"topic": "t", "value": "x" * 5000}})
    code, document = replay(tmp_path, [ROUTED, long_line, ROUTED], env={"NATS_BRIDGE_MAX_INPUT_BYTES": "4KiB"})
    assert code == 2
    message = errors(document)[f"{tmp_path / 'records.jsonl'}:2"]
    assert "the line is larger than 4096 bytes, the limit; set NATS_BRIDGE_MAX_INPUT_BYTES" in message
    assert "the rest of the file was not read" in message
    assert [m["line"] for m in document["messages"]] == [1]


def test_a_bad_size_setting_is_an_error_naming_the_variable(tmp_path: Path) -> None:
    records = tmp_path / "records.jsonl"
    records.write_text(ROUTED + "\n")
    env = {"NATS_BRIDGE_MAX_INPUT_BYTES": "lots"}
    result = CliRunner().invoke(app, ["dry-run", str(SHOP), "--input", str(records)], env=env)
    assert result.exit_code == 2
    assert "NATS_BRIDGE_MAX_INPUT_BYTES='lots' is not a size" in result.output


def test_dev_zero_as_input_ends_quickly() -> None:
    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    result = subprocess.run(
        [sys.executable, "-m", "bridge", "dry-run", str(SHOP), "--input", "/dev/zero", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
        preexec_fn=limited,
    )
    assert result.returncode == 2, result.stderr
    (finding,) = [f for f in json.loads(result.stdout)["findings"] if f["severity"] == "error"]
    assert finding["subject"] == "/dev/zero:1"
    assert "the line is larger than 8388608 bytes" in finding["message"]
