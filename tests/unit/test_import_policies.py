"""`import rabbitmq` on estates whose limits live in policies, whose traffic enters through chains of
exchange-to-exchange bindings or is spread by hash exchanges, and exports that would copy nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge.config import FromRabbitMQ, load_config_text
from bridge.config.model import BridgeConfig
from bridge.explain import explain_amqp
from bridge.importers import import_definitions, render
from bridge.importers.rabbitmq import NothingToCopyError

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "definitions"


def _load(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def _config(definitions: dict[str, Any]) -> tuple[str, BridgeConfig]:
    text = render(import_definitions(definitions))
    return text, load_config_text(text, "x", {})


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )


# --------------------------------------------------------------------------- a. nothing copied is an error


def test_a_hash_exchange_producers_publish_to_is_not_shadowed_and_nothing_to_copy_is_refused() -> None:
    definitions = _load("estate-consistent-hash.json")
    definitions["bindings"] = [b for b in definitions["bindings"] if b["destination_type"] == "queue"]
    with pytest.raises(NothingToCopyError) as raised:
        import_definitions(definitions)
    assert "take a share of the messages" in str(raised.value)


def test_cli_exits_2_with_the_reason_and_writes_nothing(tmp_path: Path) -> None:
    definitions = _load("estate-consistent-hash.json")
    definitions["bindings"] = [b for b in definitions["bindings"] if b["destination_type"] == "queue"]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(definitions))
    out = tmp_path / "m.yaml"
    result = _cli("import", "rabbitmq", str(path), "-o", str(out))
    assert result.returncode == 2
    assert "nothing to copy" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_an_empty_export_is_refused() -> None:
    with pytest.raises(NothingToCopyError):
        import_definitions({"exchanges": [], "queues": [], "bindings": []})


# --------------------------------------------------------------------------- b, c. chains and hashing


def test_fanout_into_consistent_hash_is_copied_at_the_fanout_with_the_hashing_explained() -> None:
    text, config = _config(_load("estate-consistent-hash.json"))
    (route,) = config.services["events"].routes
    assert isinstance(route.from_, FromRabbitMQ)
    assert (route.from_.exchange, route.from_.type) == ("events", "fanout")
    assert "events-sharded" not in config.services  # a shadow there would take a share, not a copy
    assert "by a hash of the routing key" in text
    assert "partition" in text


def test_three_deep_chain_is_shadowed_at_the_entry_with_composed_keys() -> None:
    text, config = _config(_load("estate-exchange-chain.json"))
    assert list(config.services) == ["ingress"]
    (route,) = config.services["ingress"].routes
    assert isinstance(route.from_, FromRabbitMQ)
    assert route.from_.exchange == "ingress"
    assert route.from_.bindings == ["audit.#", "eu.#"]
    assert "exchange-to-exchange" in text
    assert "headers) selects by arguments" in text  # the headers step cannot be a topic binding: said so
    for key, taken in (("eu.ops.alert", True), ("eu.billing.x", True), ("us.orders.1", False), ("audit.a", True)):
        assert bool(explain_amqp(config, exchange="ingress", routing_key=key).matches) is taken, key


def test_chain_keys_are_intersected_through_topic_and_direct_steps() -> None:
    definitions = _load("estate-exchange-chain.json")
    definitions["bindings"] = [
        b for b in definitions["bindings"] if b["destination"] in ("regions", "eu-ops", "eu-alerts")
    ]
    _, config = _config(definitions)
    (route,) = config.services["ingress"].routes
    assert isinstance(route.from_, FromRabbitMQ)
    assert route.from_.bindings == ["eu.ops.alert"]  # eu.# then eu.ops.alert then direct eu.ops.alert


def test_a_chain_that_can_never_match_copies_nothing() -> None:
    definitions = _load("estate-exchange-chain.json")
    for binding in definitions["bindings"]:
        if binding["destination"] == "eu-alerts":
            binding["routing_key"] = "us.ops.alert"  # the direct step wants what the topic step never passes
    definitions["bindings"] = [
        b for b in definitions["bindings"] if b["destination"] in ("regions", "eu-ops", "eu-alerts")
    ]
    with pytest.raises(NothingToCopyError):
        import_definitions(definitions)


def test_shop_regional_queue_is_copied_at_orders() -> None:
    text, config = _config(_load("shop.json"))
    assert "regional" not in config.services
    assert explain_amqp(config, exchange="orders", routing_key="order.eu.x").matches
    assert "'orders' -[order.eu.#]-> 'regional'" in text


# --------------------------------------------------------------------------- d, e. policies, retry queues


def test_policies_pick_the_highest_priority_and_operator_policies_take_the_smaller_limit() -> None:
    text, config = _config(_load("estate-retry-policies.json"))
    streams = {s.name: s for s in config.streams}
    # order-work: policy 'work-dlx' (priority 5) beats 'cap-everything'; operator policy caps at 50000.
    # order-log: x-max-length 300000, policy 200000, operator 50000 -> 50000.
    assert streams["RMQ_ORDERS"].max_msgs == 50000
    assert "dead-letters to exchange 'orders.retry'" in text  # the DLX comes from a policy
    assert "dead-letter-exchange 'orders.retry' from policy 'work-dlx'" in text
    assert "max-length 50000 from operator policy 'ops-cap'" in text


def test_policy_apply_to_and_pattern() -> None:
    definitions = _load("estate-retry-policies.json")
    definitions["policies"] = [
        {
            "vhost": "/",
            "name": "ex",
            "pattern": "order",
            "apply-to": "exchanges",
            "priority": 9,
            "definition": {"message-ttl": 1000},
        },
        {
            "vhost": "/",
            "name": "quorum-only",
            "pattern": "^order-",
            "apply-to": "quorum_queues",
            "priority": 1,
            "definition": {"message-ttl": 600000},
        },
        {
            "vhost": "/",
            "name": "log",
            "pattern": "log$",
            "apply-to": "classic_queues",
            "priority": 1,
            "definition": {"message-ttl": 900000},
        },
    ]
    definitions["operator_policies"] = []
    _, config = _config(definitions)
    stream = next(s for s in config.streams if s.name == "RMQ_ORDERS")
    assert stream.max_age is not None
    assert stream.max_age.total_seconds() == 900  # work 10m (quorum policy), log 15m (classic policy): longest


def test_retry_queue_ttl_is_no_max_age() -> None:
    text, config = _config(_load("estate-retry-policies.json"))
    retry = next(s for s in config.streams if s.name == "RMQ_ORDERS_RETRY")
    assert retry.max_age is None  # the old import wrote max_age: 2m: dead letters gone after two minutes
    assert "retry or delay queue" in text


def test_ttl_into_a_parking_queue_is_still_retention() -> None:
    _, config = _config(_load("shop.json"))
    # order-audit: TTL 7d dead-lettering into orders-dead (a parking queue) stays a retention limit
    definitions = _load("shop.json")
    definitions["bindings"] = [b for b in definitions["bindings"] if "regional" not in (b["source"], b["destination"])]
    _, config = _config(definitions)
    stream = next(s for s in config.streams if s.name == "RMQ_ORDERS")
    assert stream.max_age is not None
    assert stream.max_age.days == 7
