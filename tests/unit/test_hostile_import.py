"""Issue 14, hostile and real-world input to `nats-bridge import`: one test per finding.

A malformed definitions export is a list of errors naming each key, exit 2 — never a
traceback, and never a mapping built on a wrong guess (a binding on the text `None`). The
export is read within the input bounds; the output folder may be missing. Kafka retention
configs beyond what JetStream can hold become no limit, with a comment.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from bridge.commands import app
from bridge.commands import imports as import_cli
from bridge.importers import TopicInfo, import_topics

ROOT = Path(__file__).resolve().parents[2]
EXCHANGE = {"name": "orders", "vhost": "/", "type": "topic"}
QUEUE = {"name": "q", "vhost": "/", "arguments": {}}
BINDING = {"source": "orders", "vhost": "/", "destination": "q", "destination_type": "queue", "routing_key": "o.#"}


def export(**changes: Any) -> dict[str, Any]:
    """A small valid export (one exchange, queue and binding) with sections replaced."""
    return {"exchanges": [EXCHANGE], "queues": [QUEUE], "bindings": [BINDING], **changes}


def run_import(tmp_path: Path, document: Any, *extra: str) -> Result:
    path = tmp_path / "definitions.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return CliRunner().invoke(app, ["import", "rabbitmq", str(path), *extra], env={"COLUMNS": "400"})


def assert_refused(result: Result, *expected: str) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for text in expected:
        assert text in result.output, result.output


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (export(exchanges=None), "exchanges: must be a list of objects, not null"),
        (export(exchanges={"name": "orders"}), "exchanges: must be a list of objects, not an object"),
        (export(exchanges=[1, 2]), "exchanges[0]: must be an object, not the number 1"),
        (export(bindings=[{**BINDING, "destination": None}]), "bindings[0].destination: must be text, not null"),
        (export(bindings=[{"source": "orders", "routing_key": "o.#"}]), "bindings[0].destination: missing"),
        (export(queues=[{**QUEUE, "arguments": [1, 2]}]), "queues[0].arguments: must be an object, not a list"),
        (
            export(queues=[{**QUEUE, "arguments": {"x-message-ttl": 1e30}}]),
            "queues[0].arguments.x-message-ttl: must be a whole number, not the number 1e+30",
        ),
        (
            export(queues=[{**QUEUE, "arguments": {"x-max-length": 2**63}}]),
            "queues[0].arguments.x-max-length: 9223372036854775808 is out of range",
        ),
        (
            export(queues=[{**QUEUE, "arguments": {"x-queue-type": "stream", "x-max-age": "99999999999Y"}}]),
            "queues[0].arguments.x-max-age: 99999999999Y is longer than JetStream can keep messages",
        ),
        (export(bindings=[{**BINDING, "routing_key": None}]), "bindings[0].routing_key: must be text, not null"),
        (export(queues=[{**QUEUE, "durable": "false"}]), "queues[0].durable: must be true or false, not text"),
        ([1, 2], "the document must be a JSON object"),
    ],
)
def test_a_malformed_export_is_errors_naming_keys(tmp_path: Path, document: Any, expected: str) -> None:
    assert_refused(run_import(tmp_path, document), "definitions.json: " + expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[" * 100_000, "nested deeper than 32 levels"),
        ('{"exchanges": [' + "[" * 40 + "]" * 40 + "]}", "exchanges[0][0][0]"),
        ('{"exchanges": [{"name": "\\ud800", "type": "topic"}]}', "exchanges[0].name: a lone surrogate"),
        ('{"exchanges": NaN}', "NaN is not a JSON number"),
        ('{"exchanges": ' + "1" * 5000 + "}", "Exceeds the limit (4300 digits)"),
    ],
    ids=["deep", "deep-item", "surrogate", "nan", "digits"],
)
def test_json_beyond_the_bounds_is_refused(tmp_path: Path, text: str, expected: str) -> None:
    assert_refused(run_import(tmp_path, text), expected)


def test_writing_into_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    output = tmp_path / "missing" / "rabbit.yaml"
    result = run_import(tmp_path, export(), "-o", str(output))
    assert_refused(result, f"error: cannot write {output}: No such file or directory")


def test_a_prefix_that_is_no_subject_is_a_usage_error(tmp_path: Path) -> None:
    assert_refused(run_import(tmp_path, export(), "--prefix", "a b.>"), "is not a literal NATS subject")


def test_the_valid_export_still_imports(tmp_path: Path) -> None:
    result = run_import(tmp_path, export())
    assert result.exit_code == 0, result.output
    assert "bindings: [o.#]" in result.output


def test_dev_zero_as_definitions_is_refused_quickly() -> None:
    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    result = subprocess.run(
        [sys.executable, "-m", "bridge", "import", "rabbitmq", "/dev/zero"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
        preexec_fn=limited,
    )
    assert result.returncode == 2
    assert "error: /dev/zero: the file is larger than 67108864 bytes, the limit" in result.stderr


def test_kafka_retention_beyond_jetstream_is_no_limit_with_a_comment() -> None:
    forever = TopicInfo("orders", 3, {"retention.ms": "9223372036854775807", "retention.bytes": str(2**62)})
    document = import_topics([forever], "k:9092")
    stream = document.data["streams"][0]
    assert "max_age" not in stream
    assert "max_bytes" not in stream
    assert "longer than JetStream can keep messages" in document.all_comments()
    assert "more than a stream can count (int64): no max_bytes" in document.all_comments()


def test_import_kafka_with_retention_beyond_jetstream_exits_0(monkeypatch: pytest.MonkeyPatch) -> None:
    async def read_topics(bootstrap: str, pattern: str | None = None) -> list[TopicInfo]:
        return [TopicInfo("orders", 1, {"retention.ms": str(2**63 - 1)})]

    monkeypatch.setattr(import_cli, "read_topics", read_topics)
    result = CliRunner().invoke(app, ["import", "kafka", "--bootstrap", "127.0.0.1:1"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 0, result.output
