"""`import rabbitmq` on realistic definitions exports: the mapping loads, copies what the legacy queues
receive, translates queue limits, and names in comments everything it cannot translate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge.config import FromRabbitMQ, load_config_text
from bridge.config.model import BridgeConfig
from bridge.dryrun.checks import offline_checks
from bridge.dryrun.report import Severity
from bridge.explain import explain_amqp
from bridge.importers import MappingDocument, import_definitions, render

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "definitions"


def _load(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def _generate(name: str) -> tuple[MappingDocument, str, BridgeConfig]:
    document = import_definitions(_load(name))
    text = render(document)
    return document, text, load_config_text(text, name, {})


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.json")))
def test_every_generated_mapping_dry_runs_clean(name: str) -> None:
    _, _, config = _generate(name)
    findings = offline_checks(config)
    assert [f for f in findings if f.severity in (Severity.ERROR, Severity.WARNING)] == []


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.json")))
def test_every_generated_mapping_validates(name: str) -> None:
    _, _, config = _generate(name)
    assert config.routes()


def test_topic_exchange_shadow_route_carries_the_union_of_binding_keys_once() -> None:
    _, _, config = _generate("shop.json")
    route = config.services["orders"].routes[0]
    assert isinstance(route.from_, FromRabbitMQ)
    assert route.from_.exchange == "orders"
    assert route.from_.type == "topic"
    assert route.from_.bindings == ["order.#", "order.*.created", "order.*.shipped"]  # 'order.#' twice, kept once
    assert route.to == "rmq.orders.{rk}"
    assert len(config.services["orders"].routes) == 1


def test_routing_keys_land_on_the_exchange_subject_and_stream() -> None:
    _, _, config = _generate("shop.json")
    explanation = explain_amqp(config, exchange="orders", routing_key="order.eu.created")
    subjects = {outcome.subject for outcome in explanation.matches}
    assert subjects == {"rmq.orders.order.eu.created"}
    assert not explain_amqp(config, exchange="orders", routing_key="invoice.x").matches


def test_dotted_exchange_names_are_one_escaped_token() -> None:
    _, _, config = _generate("shop.json")
    stream = next(s for s in config.streams if s.name == "RMQ_ORDERS_DLX")
    assert stream.subjects == ["rmq.orders%2Edlx", "rmq.orders%2Edlx.>"]


def test_headers_routes_one_per_distinct_argument_table() -> None:
    document, _, config = _generate("shop.json")
    routes = config.services["billing"].routes
    tables = [r.from_.arguments for r in routes if isinstance(r.from_, FromRabbitMQ)]
    assert tables == [
        {"x-match": "all", "format": "pdf", "kind": "invoice"},
        {"x-match": "any", "kind": "invoice", "urgent": True},
    ]
    assert all(r.to == "rmq.billing" for r in routes)
    assert "invoices-pdf-copy" in document.all_comments()


def test_fanout_exchange_one_route_without_keys() -> None:
    _, _, config = _generate("shop.json")
    (route,) = config.services["cache"].routes
    assert isinstance(route.from_, FromRabbitMQ)
    assert route.from_.type == "fanout"
    assert route.from_.bindings == []
    assert route.to == "rmq.cache"


def _without_regional(definitions: dict[str, Any]) -> dict[str, Any]:
    """shop.json without the orders -> regional -> eu-orders chain (eu-orders has no limits)."""
    definitions["bindings"] = [b for b in definitions["bindings"] if "regional" not in (b["source"], b["destination"])]
    return definitions


def test_queue_limits_become_stream_limits_when_every_bound_queue_has_them() -> None:
    config = load_config_text(render(import_definitions(_without_regional(_load("shop.json")))), "x", {})
    streams = {s.name: s for s in config.streams}
    # order-audit 7d, order-mailer 1d: the stream keeps the longest; max-length only on one queue: unlimited
    assert streams["RMQ_ORDERS"].max_age is not None
    assert streams["RMQ_ORDERS"].max_age.days == 7
    assert streams["RMQ_ORDERS"].max_msgs is None
    assert streams["RMQ_PAYMENTS"].max_msgs == 1000
    assert streams["RMQ_PAYMENTS"].discard == "old"
    assert all(s.storage == "file" for s in config.streams)


def test_reject_publish_overflow_becomes_discard_new() -> None:
    definitions = _without_regional(_load("shop.json"))
    definitions["bindings"] = [b for b in definitions["bindings"] if b["destination"] != "order-audit"]
    config = load_config_text(render(import_definitions(definitions)), "x", {})
    stream = next(s for s in config.streams if s.name == "RMQ_ORDERS")
    assert stream.max_msgs == 50000
    assert stream.discard == "new"
    assert stream.max_bytes == 104857600
    assert stream.max_age is not None
    assert stream.max_age.days == 1


def test_stream_queue_is_read_in_stream_mode_with_its_age_and_size() -> None:
    _, _, config = _generate("shop.json")
    (route,) = config.services["clicks-stream"].routes
    assert isinstance(route.from_, FromRabbitMQ)
    assert route.from_.mode == "stream"
    assert route.from_.queue == "clicks"
    stream = next(s for s in config.streams if s.name == "RMQS_CLICKS")
    assert stream.max_age is not None
    assert stream.max_age.days == 7
    assert stream.max_bytes == 20000000000
    assert "clickstream" not in config.services  # read as the stream queue, not shadowed twice


def test_single_active_consumer_carries_over() -> None:
    _, _, config = _generate("shop.json")
    route = config.services["payments"].routes[0]
    assert isinstance(route.from_, FromRabbitMQ)
    assert route.from_.single_active_consumer is True


def test_comments_name_every_feature_that_does_not_translate() -> None:
    document, text, _ = _generate("shop.json")
    comments = document.all_comments()
    for needle in (
        "x-consistent-hash",  # plugin exchange type
        "priority queue",  # x-max-priority
        "alternate-exchange 'unrouted'",
        "dead-letters to exchange 'orders.dlx'",
        "dead_letters:",
        "x-expires",
        "lazy",
        "quorum queue",
        "exchange-to-exchange binding",
        "queue 'legacy-jobs' has no bindings",
        "x-max-length 50000",  # a limit not applied, said so
    ):
        assert needle in comments, needle
        assert needle in text, needle


def test_comments_sit_above_the_item_they_concern() -> None:
    _, text, _ = _generate("shop.json")
    lines = text.splitlines()
    at = lines.index("  payments:")
    assert "priority queue" in lines[at - 2] or "priority queue" in lines[at - 1]


def test_no_credential_from_the_export_is_copied() -> None:
    _, text, _ = _generate("shop.json")
    assert "password" not in text
    assert "R184F4Fs6JLdo8tFqRjWnkJL2DlAZJupxEqkO" not in text
    assert "guest" not in text
    assert "${AMQP_URL" in text


def test_several_vhosts_get_one_source_each_and_vhost_tokens() -> None:
    _, _, config = _generate("vhosts.json")
    assert {s.vhost for s in config.sources.values()} == {"/", "eu", "us.east"}  # type: ignore[union-attr]
    subjects = sorted(subject for s in config.streams for subject in s.subjects)
    assert "rmq.eu.events.>" in subjects
    assert "rmq.us%2Eeast.events%2Ev2.>" in subjects
    eu = next(s for s in config.streams if s.name == "RMQ_EU_EVENTS")
    assert eu.max_age is not None
    assert eu.duplicate_window <= eu.max_age  # the 60 s TTL is kept 2m, the duplicate window


def test_per_vhost_export_without_vhost_fields() -> None:
    definitions = _load("vhosts.json")
    for section in ("exchanges", "queues", "bindings"):
        definitions[section] = [
            {k: v for k, v in item.items() if k != "vhost"} for item in definitions[section] if item["vhost"] == "eu"
        ]
    config = load_config_text(render(import_definitions(definitions, vhost="eu")), "x", {})
    (source,) = config.sources.values()
    assert source.vhost == "eu"  # type: ignore[union-attr]
    assert config.streams[0].subjects == ["rmq.events", "rmq.events.>"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )


def test_cli_writes_stdout_or_a_file_and_refuses_to_overwrite(tmp_path: Path) -> None:
    result = _cli("import", "rabbitmq", str(DATA / "shop.json"))
    assert result.returncode == 0, result.stderr
    assert "RMQ_ORDERS" in result.stdout
    out = tmp_path / "m.yaml"
    assert _cli("import", "rabbitmq", str(DATA / "shop.json"), "--output", str(out)).returncode == 0
    again = _cli("import", "rabbitmq", str(DATA / "shop.json"), "--output", str(out))
    assert again.returncode == 2
    assert "--force" in again.stderr
    assert _cli("import", "rabbitmq", str(DATA / "shop.json"), "--output", str(out), "--force").returncode == 0
    assert _cli("validate", str(out)).returncode == 0
