"""Hypothesis fuzzing of everything the bridge reads from a file: mapping files (`validate`,
`explain`), RabbitMQ definitions exports (`import rabbitmq`), Kafka topic lists (`import kafka`,
its broker replaced by the generated topics) and recorded messages (`dry-run --input`).

Whatever the input, each command must end with exit 0, 1 or 2, raise nothing past the CLI
(CliRunner would catch it as `result.exception`), print no traceback, and stay within a time
and memory bound. The inputs are half well-formed, half hostile: the interesting failures are
in documents that are almost right (a binding whose `routing_key` is null, a record whose
partition is a string) and in the shapes that blow up parsers (aliases, deep nesting, huge
numbers, lone surrogates).

Settings: a fixed number of examples, derandomized (CI runs the same inputs every time), no
per-example deadline (a busy 2-core machine must not flake) but a generous wall-clock bound
checked by the test itself, and no example database written into the work tree.
"""

from __future__ import annotations

import copy
import json
import resource
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
import typer.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from typer.testing import CliRunner, Result

from bridge.commands import app
from bridge.commands import imports as import_cli
from bridge.importers.kafka import TopicInfo

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "mappings" / "shop.yaml"

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SECONDS_PER_EXAMPLE = 10.0  # a real answer takes milliseconds; a blow-up takes minutes
MEMORY_GROWTH_KIB = 300 * 1024  # ru_maxrss is in KiB on Linux


@pytest.fixture(scope="module", autouse=True)
def _command_built_once() -> Iterator[None]:
    """typer builds the click command on every CliRunner.invoke (25 ms for this app); once is enough."""
    command = typer.main.get_command(app)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typer.testing, "_get_command", lambda _app: command)
        yield


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """One folder for every example (hypothesis runs many examples per test function)."""
    with tempfile.TemporaryDirectory(prefix="fuzz-") as folder:
        yield Path(folder)


def invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    """Run the CLI in-process and check the three promises: exit code, no exception, bounded."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    result = CliRunner().invoke(app, args, env=env)
    elapsed = time.monotonic() - started
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    output = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{args}: raised {result.exception!r}\n{output[-2000:]}"
    )
    assert result.exit_code in (0, 1, 2), f"{args}: exit {result.exit_code}\n{output[-2000:]}"
    assert "Traceback" not in output, output[-2000:]
    assert elapsed < SECONDS_PER_EXAMPLE, f"{args}: took {elapsed:.1f}s"
    assert grown < MEMORY_GROWTH_KIB, f"{args}: memory grew by {grown // 1024} MiB"
    return result


# --------------------------------------------------------------------------- values

TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from("\ud800\udfff"), max_size=12
)
WORDS = st.sampled_from(
    ["orders", "order.#", "*.created", "", "None", "a.b", "x-match", "all", "any", "queue", "exchange", "/", "v h"]
)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 2**63, 2**63 - 1, 10**30, 1e30, 1.5]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT, WORDS)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT | WORDS, inner, max_size=4), max_leaves=20
)


def maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the well-formed value, sometimes anything at all: a document with ten fields is
    then often whole, and otherwise wrong in one or two places, as real broken files are."""
    return st.one_of(value, value, value, value, value, value, value, JSON_VALUES)


# --------------------------------------------------------------------------- mapping files

YAML_PIECES = st.sampled_from(
    [
        "version: 1\n",
        "sources:\n  k: {type: kafka, bootstrap_servers: ['k:9092']}\n",
        "sources:\n  r: {type: rabbitmq, url: 'amqp://u:${P}@h/'}\n",
        "streams:\n  - {name: S, subjects: ['t.>'], max_age: 7d}\n",
        "streams:\n  - {name: S, subjects: ['t.>'], max_msgs: 1e29, max_bytes: true}\n",
        "services:\n  s:\n    routes:\n      - {name: a, source: k, from: {topics: [t]}, to: 't.{partition}'}\n",
        "services:\n  s:\n    routes:\n      - {name: a, source: r, from: {exchange: e, type: headers, "
        "arguments: &x {a: [*x]}}, to: 'e'}\n",
        "a: &a [1, 2]\nb: &b [*a, *a, *a, *a]\nc: [*b, *b, *b, *b]\n",
        "x: &r [1, *r]\n",
        "nats: {servers: ['nats://u:pw@h:4222'], user: u, password: '${P:-hunter2}'}\n",
        "  max_age: 1000000000d\n",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n",
        "v: " + "9" * 5000 + "\n",
        'v: "\\ud800"\n',
        "? [a, b]\n: c\n",
        "v: !!binary aGk=\n",
        "v: 2024-13-45\n",
        "%YAML 1.1\n---\nv: yes\n",
        "- a\n- b\n",
        "\t\x00\x85\ufeff",
        "&a\n",
        "*a\n",
        "<<: *a\n",
    ]
)
YAML_TEXTS = st.one_of(
    st.lists(YAML_PIECES, max_size=6).map("".join),
    st.text(alphabet=st.sampled_from(list("[]{}&*:-,!|>'\"#%@`?\n \tab01.\\")), max_size=200),
)


@FUZZ
@given(text=YAML_TEXTS)
def test_validate_and_explain_any_mapping_file(workdir: Path, text: str) -> None:
    path = workdir / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    invoke(["validate", str(path)], env={"P": "secret"})
    invoke(["explain", str(path), "--topic", "t", "--key", "k"], env={"P": "secret"})


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a parsed document, containers included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


SHOP_DATA = YAML(typ="safe").load(SHOP.read_text())
SHOP_PATHS = _paths(SHOP_DATA)[1:]


def _replaced(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    document = copy.deepcopy(SHOP_DATA)
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return document


# The example mapping with one value anywhere replaced by anything: the validators meet every
# type in every place, as a person editing a real file produces them.
MUTATED_SHOP = st.builds(_replaced, st.sampled_from(SHOP_PATHS), JSON_VALUES | YAML_PIECES)


@FUZZ
@given(document=MUTATED_SHOP)
def test_validate_dry_run_and_explain_a_mutated_example(workdir: Path, document: dict[str, Any]) -> None:
    path = workdir / "mutated.yaml"
    path.write_text(json.dumps(document), encoding="utf-8", errors="surrogatepass")
    invoke(["validate", str(path)])
    invoke(["dry-run", str(path), "--json"])
    invoke(["explain", str(path), "--exchange", "billing", "--routing-key", "x", "--header", "format=pdf"])


# --------------------------------------------------------------------------- import rabbitmq

EXCHANGE = st.fixed_dictionaries(
    {"name": maybe(WORDS), "vhost": maybe(st.just("/")), "type": maybe(st.sampled_from(["topic", "headers", "x-x"]))},
    optional={"arguments": maybe(st.dictionaries(WORDS, JSON_VALUES, max_size=2)), "internal": maybe(st.booleans())},
)
QUEUE_ARGUMENTS = st.dictionaries(
    st.sampled_from(
        ["x-message-ttl", "x-max-length", "x-max-length-bytes", "x-max-age", "x-queue-type", "x-overflow", "x-expires"]
    ),
    st.one_of(NUMBERS, st.sampled_from(["stream", "quorum", "7D", "99999999999999999999Y", "reject-publish", "1000"])),
    max_size=4,
)
QUEUE = st.fixed_dictionaries(
    {"name": maybe(WORDS), "vhost": maybe(st.just("/"))},
    optional={"arguments": maybe(QUEUE_ARGUMENTS), "durable": maybe(st.booleans())},
)
BINDING = st.fixed_dictionaries(
    {"source": maybe(WORDS), "destination": maybe(WORDS), "routing_key": maybe(WORDS)},
    optional={
        "destination_type": maybe(st.sampled_from(["queue", "exchange"])),
        "arguments": maybe(st.dictionaries(WORDS, JSON_VALUES, max_size=3)),
        "vhost": maybe(st.just("/")),
    },
)
DEFINITIONS = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "exchanges": maybe(st.lists(EXCHANGE, max_size=4)),
            "queues": maybe(st.lists(QUEUE, max_size=4)),
            "bindings": maybe(st.lists(BINDING, max_size=6)),
        },
    ),
    JSON_VALUES,
)
RAW_JSON = st.sampled_from(
    ["[" * 5000, '{"exchanges": ' * 100 + "1", '{"exchanges": NaN}', "1" * 5000, '"\\ud800"', "\xff", ""]
)


@FUZZ
@given(document=DEFINITIONS | RAW_JSON)
def test_import_rabbitmq_any_definitions(workdir: Path, document: Any) -> None:
    path = workdir / "definitions.json"
    text = document if isinstance(document, str) else json.dumps(document)
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    invoke(["import", "rabbitmq", str(path)])


# --------------------------------------------------------------------------- import kafka (offline)

TOPIC_NAMES = st.text(alphabet=st.sampled_from(list("abz09._-")), min_size=1, max_size=30)
TOPIC_CONFIGS = st.dictionaries(
    st.sampled_from(["retention.ms", "retention.bytes", "cleanup.policy"]),
    st.one_of(
        st.integers(min_value=-(2**64), max_value=2**64).map(str),
        st.sampled_from(["-1", "9223372036854775807", "compact", "delete,compact", "x", "1e30", "9" * 5000]),
    ),
)
TOPICS = st.lists(
    st.builds(TopicInfo, TOPIC_NAMES, st.integers(min_value=0, max_value=10_000), TOPIC_CONFIGS), max_size=5
)


@FUZZ
@given(topics=TOPICS)
def test_import_kafka_any_topics(topics: list[TopicInfo]) -> None:
    async def read_topics(bootstrap: str, pattern: str | None = None) -> list[TopicInfo]:
        return topics

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(import_cli, "read_topics", read_topics)
        invoke(["import", "kafka", "--bootstrap", "127.0.0.1:1"])


# --------------------------------------------------------------------------- dry-run --input

BYTES_FIELD = maybe(st.one_of(TEXT, st.builds(lambda b: {"base64": b}, st.sampled_from(["aGk=", "!!", ""]))))
KAFKA_RECORD = st.fixed_dictionaries(
    {"topic": maybe(st.sampled_from(["orders", "inventory.adjustments", "x"]))},
    optional={
        "partition": maybe(st.integers(min_value=-1, max_value=2**70)),
        "offset": maybe(st.integers(min_value=-1, max_value=2**70)),
        "key": BYTES_FIELD,
        "value": BYTES_FIELD,
        "headers": maybe(st.lists(st.tuples(TEXT, BYTES_FIELD).map(list), max_size=3)),
        "timestamp_ms": maybe(st.integers(min_value=-(2**70), max_value=2**70)),
    },
)
AMQP_RECORD = st.fixed_dictionaries(
    {"exchange": maybe(st.sampled_from(["orders", "billing", ""])), "routing_key": maybe(WORDS)},
    optional={
        "queue": maybe(WORDS),
        "properties": maybe(st.dictionaries(st.sampled_from(["message_id", "content_type", "priority"]), SCALARS)),
        "headers": maybe(st.dictionaries(TEXT, JSON_VALUES, max_size=3)),
        "body": BYTES_FIELD,
    },
)
LINES = st.one_of(
    st.builds(lambda record: json.dumps({"kafka": record}), KAFKA_RECORD),
    st.builds(lambda record: json.dumps({"amqp": record}), AMQP_RECORD),
    st.builds(json.dumps, JSON_VALUES),
    st.sampled_from(['{"kafka": ' * 3000, '{"amqp": {"exchange": "\\ud800", "routing_key": ""}}', "\xff\xfe", "NaN"]),
)


@FUZZ
@given(lines=st.lists(LINES, max_size=6))
def test_dry_run_replays_any_input(workdir: Path, lines: list[str]) -> None:
    records = workdir / "records.jsonl"
    records.write_bytes("\n".join(lines).encode("utf-8", errors="surrogatepass"))
    invoke(["dry-run", str(SHOP), "--input", str(records), "--json"])
