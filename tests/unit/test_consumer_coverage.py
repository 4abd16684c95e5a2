"""Does a consumer receive what the legacy queue or group it `replaces` received? (validate, dry-run)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.config import load_config_text
from bridge.dryrun.consumers import check_consumers
from bridge.dryrun.report import Finding, Severity
from bridge.routing.shapes import MANY, ONE, Lit, filter_shape, within_shapes


def findings(consumer: dict[str, Any], *, bindings: list[str] | None = None, **route: Any) -> list[Finding]:
    rabbit = {
        "name": "events",
        "source": "rabbit",
        "from": {"exchange": "orders", "bindings": bindings or ["order.*.*", "a.#.b", "audit.#"]},
        "to": "orders.{rk}",
        **route,
    }
    kafka = {
        "name": "ledger",
        "source": "kafka",
        "from": {"topics": ["pay", "refunds"]},
        "to": "pay.{topic}.{partition}",
    }
    document = {
        "version": 1,
        "streams": [{"name": "ORDERS", "subjects": ["orders", "orders.>"]}, {"name": "PAY", "subjects": ["pay.>"]}],
        "sources": {
            "rabbit": {"type": "rabbitmq", "url": "amqp://127.0.0.1/"},
            "kafka": {"type": "kafka", "bootstrap_servers": ["127.0.0.1:9092"]},
        },
        "services": {"orders": {"routes": [rabbit, kafka], "consumers": [{"name": "worker", **consumer}]}},
    }
    return check_consumers(load_config_text(json.dumps(document), "test.yaml", {}))


def by_check(found: list[Finding]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for finding in found:
        grouped.setdefault(f"{finding.severity.value}/{finding.check}", []).append(finding.message)
    return grouped


def test_exact_filters_for_a_queues_bindings_are_clean() -> None:
    consumer = {
        "stream": "ORDERS",
        "filter_subjects": ["orders.order.eu.*", "orders.audit", "orders.audit.>"],
        "replaces": {"queue": "eu-orders", "bindings": ["order.eu.*", "audit.#"]},
    }
    assert findings(consumer) == []


def test_a_binding_the_filters_miss_is_an_error_with_the_exact_filters() -> None:
    consumer = {
        "stream": "ORDERS",
        "filter_subjects": ["orders.audit.>"],
        "replaces": {"queue": "auditors", "bindings": ["audit.#"]},
    }
    (finding,) = findings(consumer)
    assert (finding.severity, finding.check, finding.subject) == (Severity.ERROR, "coverage", "orders/worker")
    assert "misses some of what queue 'auditors' received through binding 'audit.#'" in finding.message
    assert "exact: orders.audit, orders.audit.>" in finding.message  # `#` also matches zero words


def test_a_binding_with_a_hash_in_the_middle_is_named_inexact() -> None:
    consumer = {
        "stream": "ORDERS",
        "filter_subjects": ["orders.a.>"],
        "replaces": {"queue": "ab", "bindings": ["a.#.b"]},
    }
    found = by_check(findings(consumer))
    assert list(found) == ["warning/inexact"]  # covered, and not also called "wider"
    (message,) = found["warning/inexact"]
    assert "binding 'a.#.b' of queue 'ab' has no exact NATS filter" in message
    assert "such as orders.a.>" in message


def test_an_inexact_binding_left_uncovered_says_which_filter_takes_it() -> None:
    consumer = {"stream": "ORDERS", "filter_subjects": ["orders.order.*.*"], "replaces": {"queue": "q"}}
    found = by_check(findings(consumer))
    assert set(found) == {"error/coverage", "warning/inexact"}
    messages = " | ".join(found["error/coverage"])
    assert "binding 'a.#.b'" in messages
    assert "a filter that takes it: orders.a.>" in messages
    assert "binding 'audit.#'" in messages


def test_a_filter_wider_than_the_legacy_subscription_is_a_warning() -> None:
    consumer = {
        "stream": "ORDERS",
        "filter_subjects": ["orders.order.>"],
        "replaces": {"queue": "q", "bindings": ["order.*.*"]},
    }
    found = by_check(findings(consumer))
    assert list(found) == ["warning/wider"]
    assert "filter 'orders.order.>' also takes subjects queue 'q' never received" in found["warning/wider"][0]


def test_a_binding_the_route_is_not_bound_with_is_not_in_the_stream() -> None:
    consumer = {
        "stream": "ORDERS",
        "filter_subjects": ["orders.invoice.>"],
        "replaces": {"queue": "q", "bindings": ["invoice.*"]},
    }
    found = by_check(findings(consumer))
    assert "route 'events' does not copy all of what queue 'q' receives through binding 'invoice.*'" in " ".join(
        found["error/coverage"]
    )


def test_a_groups_topics_become_the_routes_subjects() -> None:
    exact = {"stream": "PAY", "filter_subjects": ["pay.pay.*"], "replaces": {"group": "ledger", "topics": ["pay"]}}
    assert findings(exact) == []
    missing = {"stream": "PAY", "filter_subjects": ["pay.pay.*"], "replaces": {"group": "ledger"}}
    (finding,) = findings(missing)
    assert "misses what group 'ledger' received through topic 'refunds'" in finding.message
    assert "exact: pay.refunds.*" in finding.message
    unread = {"stream": "PAY", "filter_subjects": ["pay.>"], "replaces": {"group": "ledger", "topics": ["chargebacks"]}}
    assert "does not read topic 'chargebacks'" in findings(unread)[0].message


def test_a_consumer_without_replaces_or_filters_reads_its_whole_stream_unchecked() -> None:
    assert findings({"stream": "ORDERS"}) == []
    whole = by_check(findings({"stream": "ORDERS", "replaces": {"queue": "q", "bindings": ["order.*.*"]}}))
    assert list(whole) == ["warning/wider"]  # the stream's own subjects are its filters


@pytest.mark.parametrize(
    ("shape", "others", "inside"),
    [
        ((Lit("a"), MANY, Lit("b")), [filter_shape("a.>")], True),
        (filter_shape("a.>"), [(Lit("a"), MANY, Lit("b"))], False),
        ((Lit("a"), MANY), [filter_shape("a"), filter_shape("a.>")], True),
        ((Lit("a"), MANY), [filter_shape("a.>")], False),
        (filter_shape("a.*.c"), [(Lit("a"), MANY, Lit("c"))], True),
        ((Lit("a"), ONE), [filter_shape("a.b"), filter_shape("a.c")], False),
        ((MANY,), [(ONE, MANY)], False),
    ],
)
def test_within_shapes(shape: tuple[Any, ...], others: list[tuple[Any, ...]], inside: bool) -> None:
    assert within_shapes(shape, others) is inside
