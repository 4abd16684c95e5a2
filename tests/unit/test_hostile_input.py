"""Issue 14, hostile and real-world input: one test per finding for mapping files and the CLI.

Each of these inputs used to end in a traceback, a hang, hundreds of megabytes, or silent
acceptance of a value JetStream refuses. Each must now be one clear error naming the file and
line (or key), exit 2, within a second; the ones that used to hang or exhaust memory run in
a child process with a time and memory limit, so that a regression fails instead of stalling.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from bridge.commands import app
from bridge.config import load_config
from bridge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
ENV_MAX_INPUT_BYTES = "NATS_BRIDGE_MAX_INPUT_BYTES"  # spelled out: the README promises this name
SHOP = ROOT / "mappings" / "shop.yaml"

VALID = """version: 1
sources:
  k: {type: kafka, bootstrap_servers: ["k:9092"]}
streams:
  - {name: S, subjects: ["t.>"]STREAM}
services:
  s:
    routes:
      - {name: a, source: k, from: {topics: [t]}, to: "t.{partition}"}
"""


def valid(stream_fields: str = "") -> str:
    """A valid mapping file, with `stream_fields` (`, max_msgs: 1`) added to its stream on line 5."""
    return VALID.replace("STREAM", stream_fields)


def laughs(indent: str = "", levels: int = 9) -> str:
    """The billion laughs: each level is nine aliases of the one before (9**levels leaves)."""
    lines = [f'{indent}a: &a ["lol"]']
    for level in range(levels):
        name, previous = chr(ord("b") + level), chr(ord("a") + level)
        lines.append(f"{indent}{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\n"


HEADERS_LAUGHS = """version: 1
sources:
  r: {type: rabbitmq, url: "amqp://h/"}
streams:
  - {name: E, subjects: ["e"]}
services:
  s:
    routes:
      - name: a
        source: r
        to: e
        from:
          exchange: e
          type: headers
          arguments:
""" + laughs(indent=" " * 12)


def limited() -> None:
    """In the child: at most 1 GiB of address space, so a blow-up fails fast instead of swapping."""
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def run_bounded(*args: str, seconds: float = 30, stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process with a time and memory limit; a timeout fails the test."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "bridge", *args],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=seconds,
            check=False,
            cwd=ROOT,
            preexec_fn=limited,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"nats-bridge {' '.join(args)} did not finish within {seconds}s")


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[Result, float]:
    started = time.monotonic()
    result = CliRunner().invoke(app, list(args), env=env)
    return result, time.monotonic() - started


def assert_clean_error(result: Result, *expected: str) -> None:
    """Exit 2, no exception past the CLI, no traceback, and every expected text in the output."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for text in expected:
        assert text in result.output, result.output


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def issues(path: Path) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    return "\n".join(str(issue) for issue in raised.value.issues)


# --------------------------------------------------------------------------- bounded parsing


@pytest.mark.parametrize(
    ("text", "command", "line"),
    [
        (laughs(), ["validate"], 6),
        (laughs(), ["explain", "--topic", "t"], 6),
        (HEADERS_LAUGHS, ["dry-run"], 21),
    ],
    ids=["validate", "explain", "dry-run-headers-arguments"],
)
def test_billion_laughs_is_refused_at_its_line_quickly(
    tmp_path: Path, text: str, command: list[str], line: int
) -> None:
    path = write(tmp_path, text)
    started = time.monotonic()
    result = run_bounded(command[0], str(path), *command[1:])
    assert time.monotonic() - started < 15  # the process start is most of it
    assert result.returncode == 2, result.stderr
    assert f"{path}:{line}:" in result.stderr
    assert "aliases expand to more than 100000 nodes" in result.stderr
    assert "Traceback" not in result.stderr


def test_aliases_that_stay_small_still_work(tmp_path: Path) -> None:
    text = valid().replace("streams:\n", "defaults: &d {max_age: 7d}\nstreams:\n")
    assert "unknown key 'defaults'" in issues(write(tmp_path, text))  # parsed, and only the key is wrong


@pytest.mark.parametrize(
    "text",
    ["version: " + "[" * 300 + "]" * 300 + "\n", "".join("  " * i + f"k{i}:\n" for i in range(300))],
    ids=["flow", "block"],
)
def test_deep_nesting_is_an_error_not_a_recursion_error(tmp_path: Path, text: str) -> None:
    result, seconds = invoke("validate", str(write(tmp_path, text)))
    assert_clean_error(result, "nested deeper than 64 levels")
    assert seconds < 1


def test_a_recursive_alias_is_refused_not_turned_into_null(tmp_path: Path) -> None:
    text = valid(", description: &r [1, *r]")
    expected = "m.yaml:5:54: alias '*r' is inside the node it refers to (a recursive alias)"
    assert expected in issues(write(tmp_path, text))


def test_the_size_limit_names_the_variable_that_raises_it(tmp_path: Path) -> None:
    path = write(tmp_path, valid(", description: '" + "x" * 2000 + "'"))
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={ENV_MAX_INPUT_BYTES: "1KiB"})
    assert f"larger than 1024 bytes, the limit; set {ENV_MAX_INPUT_BYTES} to raise it" in str(raised.value)
    load_config(path, env={ENV_MAX_INPUT_BYTES: "1MiB"})


def test_dev_zero_as_a_mapping_file_is_refused_quickly() -> None:
    result = run_bounded("validate", "/dev/zero")
    assert result.returncode == 2, result.stderr
    assert "/dev/zero:1:1: the file is larger than" in result.stderr


# --------------------------------------------------------------------------- values JetStream cannot hold


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("max_age: 1000000000d", "streams[0].max_age: '1000000000d' is longer than the longest duration"),
        ("max_age: .inf", "streams[0].max_age: 'inf' is longer than the longest duration"),
        ("max_age: 1e20", "streams[0].max_age: '1e+20' is longer than the longest duration"),
        ("max_age: 300000d", "streams[0].max_age: '300000d' is longer than the longest duration"),
        ("max_msgs: 9223372036854775808", "streams[0].max_msgs: Input should be less than or equal to"),
        ("max_msgs: 1e29", "streams[0].max_msgs: Input should be a valid integer"),
        ("max_msgs: true", "streams[0].max_msgs: Input should be a valid integer"),
        ("max_msgs: " + "9" * 300, "streams[0].max_msgs: Input should be less than or equal to"),
        ("max_bytes: true", "streams[0].max_bytes: expected a number, not true/false"),
        ("max_bytes: 9EiB", "streams[0].max_bytes: 10376293541461622784 bytes is more than JetStream can count"),
        ("max_msg_size: 4GiB", "streams[0].max_msg_size: 4294967296 bytes is more than a JetStream message"),
        ("replicas: true", "streams[0].replicas: Input should be a valid integer"),
        ("duplicate_window: 1e20", "streams[0].duplicate_window: '1e+20' is longer than the longest duration"),
    ],
)
def test_limits_jetstream_cannot_hold_are_refused_at_validate(tmp_path: Path, field: str, message: str) -> None:
    result, seconds = invoke("validate", str(write(tmp_path, valid(", " + field))))
    assert_clean_error(result, "m.yaml:5:", message)
    assert seconds < 1


def test_the_longest_duration_jetstream_holds_is_accepted(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, valid(", max_age: 106751d")), env={})
    assert config.streams[0].max_age is not None
    assert config.streams[0].max_age.days == 106751


def test_true_is_not_version_1(tmp_path: Path) -> None:
    text = valid().replace("version: 1", "version: true")
    assert "version: expected a number, not true/false" in issues(write(tmp_path, text))


def test_a_number_of_5000_digits_is_an_error_at_its_line(tmp_path: Path) -> None:
    assert "m.yaml:5:44: cannot read this value: Exceeds the limit" in issues(
        write(tmp_path, valid(", max_msgs: " + "9" * 5000))
    )


def test_a_lone_surrogate_is_an_error_at_its_line(tmp_path: Path) -> None:
    result, _ = invoke("validate", str(write(tmp_path, valid(', description: "\\ud800"'))))
    assert_clean_error(result, "m.yaml:5:", "lone surrogate")


def test_a_huge_outage_budget_is_a_usage_error(tmp_path: Path) -> None:
    result, _ = invoke("dry-run", str(SHOP), "--outage-budget", "1000000000d", env={"COLUMNS": "400"})
    assert_clean_error(result, "longer than the longest duration JetStream can hold")


def test_a_secret_file_that_never_ends_is_refused(tmp_path: Path) -> None:
    text = valid().replace("sources:", "nats: {token: '${file:/dev/zero}'}\nsources:")
    result = run_bounded("validate", str(write(tmp_path, text)))  # a child: unbounded, it would eat the memory
    assert result.returncode == 2
    assert "nats.token: secret file '/dev/zero' is larger than 65536 bytes" in result.stderr


# --------------------------------------------------------------------------- output errors


def test_schema_to_a_full_disk_is_one_line_and_exit_2() -> None:
    with Path("/dev/full").open("w") as full:
        result = run_bounded("schema", stdout=full.fileno())
    assert result.returncode == 2
    assert result.stderr == "error: cannot write the output: No space left on device\n"
