"""`import rabbitmq` on estates whose limits live in policies, whose traffic enters through chains of
exchange-to-exchange bindings or is spread by hash exchanges, and exports that would copy nothing."""

from __future__ import annotations

import functools
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge.config import FromRabbitMQ, load_config_text
from bridge.config.model import BridgeConfig
from bridge.errors import NothingToCopyError
from bridge.explain import explain_amqp
from bridge.importers import import_definitions, render
from bridge.importers.binding_keys import topic_intersection, topic_intersections
from bridge.routing import topic_matches

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
    first, *reasons = result.stderr.splitlines()
    assert first == (
        f"error: {path}: nothing to copy: no legacy queue's traffic can be shadowed, so the mapping would "
        "copy no message; nothing written"
    )  # the project's one error line, not typer's box
    assert len(reasons) == 1
    assert reasons[0].startswith("  - NOT MAPPED: exchange 'events-sharded' is a x-consistent-hash exchange")
    assert not out.exists()


def test_cli_nothing_to_copy_in_an_empty_export(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text(json.dumps({"exchanges": [], "queues": [], "bindings": []}))
    result = _cli("import", "rabbitmq", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {path}: nothing to copy: no legacy queue's traffic can be shadowed, so the mapping would "
        "copy no message; nothing written",
        "  - the export has no exchanges, queues or bindings",
    ]


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
    # eu.# then *.orders.# is eu.orders.# (one pattern, exact); the headers step after eu.billing.* cannot
    # be a topic binding: that one is a superset, said so. Nothing else: eu.# alone reaches no queue.
    assert route.from_.bindings == ["audit.#", "eu.orders.#", "eu.billing.*", "eu.ops.alert"]
    assert "exchange-to-exchange" in text
    assert "headers) selects by arguments" in text
    assert "no single topic pattern" not in text
    for key, taken in (
        ("eu.ops.alert", True),
        ("eu.billing.x", True),
        ("eu.orders", True),
        ("eu.orders.new.x", True),
        ("us.orders.1", False),
        ("audit.a", True),
        ("eu.misc", False),
        ("eu.ops.warning", False),
        ("eu", False),
        ("eu.billing.x.y", False),
    ):
        assert bool(explain_amqp(config, exchange="ingress", routing_key=key).matches) is taken, key


# Patterns of up to three words over two literals, both wildcards and the empty word, against every
# routing key of up to four words over three literals and the empty word.
_WORDS = ["a", "b", "*", "#", ""]
_PATTERNS = sorted({".".join(words) for n in range(4) for words in itertools.product(_WORDS, repeat=n)})
_KEYS = sorted({".".join(words) for n in range(5) for words in itertools.product(["a", "b", "c", ""], repeat=n)})


@functools.cache
def _matched(pattern: str) -> frozenset[str]:
    return frozenset(key for key in _KEYS if topic_matches(pattern, key))


def test_topic_intersections_match_exactly_the_keys_both_patterns_match() -> None:
    exact = 0
    for left, right in itertools.product(_PATTERNS, repeat=2):
        both = _matched(left) & _matched(right)
        patterns = topic_intersections(left, right)
        if patterns is not None:  # None: too many to write (a superset is bound instead)
            assert frozenset().union(*map(_matched, patterns)) == both, (left, right, patterns)
        key, is_exact = topic_intersection(left, right)
        if is_exact:
            exact += 1
            assert (_matched(key) if key is not None else frozenset()) == both, (left, right, key)
        else:
            assert key == left  # the entry's own key: a superset of both
    assert exact > 0.9 * len(_PATTERNS) ** 2


def test_topic_intersections_of_long_keys_stay_bounded() -> None:
    many = ".".join(["#", "*"] * 63)
    assert topic_intersections(many, ".".join(["*", "#"] * 63)) is None
    assert topic_intersections(".".join(["#"] * 127), ".".join(["*"] * 127)) == [".".join(["*"] * 127)]
    assert topic_intersections("a." * 200 + "#", "#") is None  # longer than a routing key can be


def test_topic_steps_whose_patterns_meet_in_one_pattern_are_bound_exactly() -> None:
    definitions = _load("estate-exchange-chain.json")
    definitions["bindings"] = [b for b in definitions["bindings"] if b["destination"] in ("regions", "eu-orders")]
    text, config = _config(definitions)
    (route,) = config.services["ingress"].routes
    assert isinstance(route.from_, FromRabbitMQ)
    assert route.from_.bindings == ["eu.orders.#"]
    assert "superset" not in text


def test_topic_steps_that_meet_in_several_patterns_stay_a_declared_superset() -> None:
    definitions = _load("estate-exchange-chain.json")
    for binding in definitions["bindings"]:
        if binding["destination"] == "regions":
            binding["routing_key"] = "#.eu.#"  # with *.orders.#: eu.orders.#, *.orders.#.eu.#: two patterns
    definitions["bindings"] = [b for b in definitions["bindings"] if b["destination"] in ("regions", "eu-orders")]
    text, config = _config(definitions)
    (route,) = config.services["ingress"].routes
    assert isinstance(route.from_, FromRabbitMQ)
    assert route.from_.bindings == ["#.eu.#"]
    assert "no single topic pattern matches what both '#.eu.#' and '*.orders.#' match" in text
    assert "(a superset)" in text


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


def test_the_stream_a_retry_queue_feeds_back_into_keeps_msg_ids_through_the_delay() -> None:
    text, config = _config(_load("estate-retry-policies.json"))
    streams = {s.name: s for s in config.streams}
    # order-retry sends failed messages back into `orders` 2m (its TTL) after they failed: with the
    # default 2m window their first copy's Msg-Id would have left it, and each retry would be stored again.
    assert streams["RMQ_ORDERS"].duplicate_window.total_seconds() == 240  # the TTL + the default 2m
    assert streams["RMQ_ORDERS_RETRY"].duplicate_window.total_seconds() == 120  # nothing comes back into it
    assert "queue 'order-retry' is a retry queue: each message it holds comes back into exchange 'orders' 2m" in text
    assert "with the Msg-Id of the copy made when it was first published there" in text
    assert "It covers ONE trip through the retry queue" in text


def test_a_retry_window_never_outgrows_max_age() -> None:
    definitions = _load("estate-retry-policies.json")
    definitions["policies"][1]["definition"]["message-ttl"] = 3_600_000  # an hour's delay
    for queue in definitions["queues"]:
        if queue["name"] in ("order-work", "order-log"):
            queue["arguments"]["x-message-ttl"] = 600_000  # `orders`' stream keeps 10 minutes
        if queue["name"] == "order-work":  # expired work is parked, not retried: its TTL stays retention
            queue["arguments"]["x-dead-letter-exchange"] = "orders.parking"
    text, config = _config(definitions)
    stream = next(s for s in config.streams if s.name == "RMQ_ORDERS")
    assert stream.max_age is not None
    assert stream.max_age.total_seconds() == 600
    assert stream.duplicate_window.total_seconds() == 600  # JetStream refuses a window over max_age
    assert "Capped at max_age 10m" in text


def test_a_retry_queue_with_a_dead_letter_routing_key_says_content_hashes_differ() -> None:
    definitions = _load("estate-retry-policies.json")
    definitions["policies"][1]["definition"]["dead-letter-routing-key"] = "order.retried.created"
    text, config = _config(definitions)
    stream = next(s for s in config.streams if s.name == "RMQ_ORDERS")
    assert stream.duplicate_window.total_seconds() == 240
    assert "comes back with routing key 'order.retried.created', so a content hash differs" in text


def test_ttl_into_a_parking_queue_is_still_retention() -> None:
    _, config = _config(_load("shop.json"))
    # order-audit: TTL 7d dead-lettering into orders-dead (a parking queue) stays a retention limit
    definitions = _load("shop.json")
    definitions["bindings"] = [b for b in definitions["bindings"] if "regional" not in (b["source"], b["destination"])]
    _, config = _config(definitions)
    stream = next(s for s in config.streams if s.name == "RMQ_ORDERS")
    assert stream.max_age is not None
    assert stream.max_age.days == 7
