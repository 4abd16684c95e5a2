"""Routing one message through a definitions export as RabbitMQ does (`bridge.importers.topology_routing`):
each exchange type, exchange-to-exchange chains (the three-deep export), cycles, alternate exchanges
(argument and policy), hash exchanges reported as a choice, the default exchange, refusals, and bounds."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest

from bridge.importers.topology import Topology
from bridge.importers.topology_paths import Path as RoutePath
from bridge.importers.topology_paths import Routed, Tap
from bridge.importers.topology_routing import CYCLE, MAX_PATHS, feeding_exchanges, route_message
from bridge.routing import topic_matches

DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "definitions"


def exchange(name: str, kind: str = "topic", **arguments: Any) -> dict[str, Any]:
    return {"name": name, "vhost": "/", "type": kind, "arguments": arguments}


def queue(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "vhost": "/", "arguments": arguments}


def bind(source: str, destination: str, key: str = "", to: str = "queue", **arguments: Any) -> dict[str, Any]:
    return {
        "source": source,
        "vhost": "/",
        "destination": destination,
        "destination_type": to,
        "routing_key": key,
        "arguments": arguments,
    }


def topology(exchanges: list[dict[str, Any]], bindings: list[dict[str, Any]], **extra: Any) -> Topology:
    queues = sorted({b["destination"] for b in bindings if b["destination_type"] == "queue"})
    document = {"exchanges": exchanges, "queues": [queue(q) for q in queues], "bindings": bindings, **extra}
    return Topology(document)


def route(
    topo: Topology, at: str, key: str = "", headers: dict[str, object] | None = None, taps: list[Tap] | None = None
) -> Routed:
    return route_message(topo, "/", at, key, headers, taps or [])


def load(name: str) -> Topology:
    return Topology(json.loads((DATA / name).read_text()))


def chain_text(path: RoutePath) -> list[str]:
    return [f"{hop.source}>{hop.destination}" for hop in path.hops]


# --------------------------------------------------------------------------- one exchange of each type


def test_direct_exchange_routes_on_the_whole_key() -> None:
    topo = topology([exchange("x", "direct")], [bind("x", "a", "order.created"), bind("x", "b", "order.*")])
    assert route(topo, "x", "order.created").queues == ("a",)
    assert route(topo, "x", "order.*").queues == ("b",)  # a direct key is no pattern
    assert route(topo, "x", "order.shipped").queues == ()


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("order.eu.created", ("all", "eu", "star")),
        ("order", ("all",)),  # `#` takes zero words
        ("", ()),  # zero words: only `#` alone would take it
        ("order..created", ("all", "star")),  # an empty word is a word for `*`
        ("audit.x.error", ("errors",)),
        ("error", ("errors",)),
    ],
)
def test_topic_exchange_matches_star_and_hash_as_rabbitmq(key: str, expected: tuple[str, ...]) -> None:
    topo = topology(
        [exchange("x")],
        [
            bind("x", "all", "order.#"),
            bind("x", "star", "order.*.created"),
            bind("x", "eu", "order.eu.*"),
            bind("x", "errors", "#.error"),
        ],
    )
    assert route(topo, "x", key).queues == tuple(sorted(expected))


def test_topic_routing_agrees_with_the_projects_topic_matching() -> None:
    patterns = ["#", "*", "a.#", "#.b", "a.*.b", "*.#", "a.#.b", "", "a", "a..b"]
    topo = topology([exchange("x")], [bind("x", f"q{i}", pattern) for i, pattern in enumerate(patterns)])
    words = ["a", "b", ""]
    for size in range(4):
        for parts in itertools.product(words, repeat=size):
            key = ".".join(parts)
            expected = tuple(sorted(f"q{i}" for i, pattern in enumerate(patterns) if topic_matches(pattern, key)))
            assert route(topo, "x", key).queues == expected, key


def test_fanout_takes_everything_and_a_queue_bound_twice_gets_one_copy() -> None:
    topo = topology([exchange("x", "fanout")], [bind("x", "a"), bind("x", "b", "ignored"), bind("x", "a", "again")])
    routed = route(topo, "x", "whatever")
    assert routed.queues == ("a", "b")
    assert len(routed.paths) == 2


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"format": "pdf", "kind": "invoice"}, ("all", "any", "any-x")),
        ({"format": "pdf"}, ("any",)),
        ({"kind": "invoice", "x-source": "erp"}, ("all-x", "any", "any-x")),
        ({"format": "pdf", "kind": "invoice", "x-source": "erp"}, ("all", "all-x", "any", "any-x")),
        ({}, ()),
    ],
)
def test_headers_exchange_x_match_modes_and_x_arguments(headers: dict[str, object], expected: tuple[str, ...]) -> None:
    topo = topology(
        [exchange("h", "headers")],
        [
            # `x-source` is ignored by all/any (RabbitMQ skips x- arguments), tested by the -with-x modes.
            bind("h", "all", **{"x-match": "all", "format": "pdf", "kind": "invoice", "x-source": "erp"}),
            bind("h", "any", **{"x-match": "any", "format": "pdf", "kind": "invoice"}),
            bind("h", "all-x", **{"x-match": "all-with-x", "kind": "invoice", "x-source": "erp"}),
            bind("h", "any-x", **{"x-match": "any-with-x", "kind": "invoice", "x-source": "erp"}),
        ],
    )
    assert route(topo, "h", "", headers).queues == tuple(sorted(expected))


def test_headers_binding_rabbitmq_would_refuse_is_ignored_and_said() -> None:
    topo = topology([exchange("h", "headers")], [bind("h", "q", **{"x-match": "some", "a": "1"})])
    routed = route(topo, "h", "", {"a": "1"})
    assert routed.queues == ()
    assert any("x-match must be one of" in note for note in routed.notes)


# --------------------------------------------------------------------------- exchange-to-exchange chains


@pytest.mark.parametrize(
    ("key", "headers", "queues", "chain"),
    [
        ("eu.orders.new", {}, ("eu-orders",), ["ingress>regions", "regions>eu-orders"]),
        ("eu.orders", {}, ("eu-orders",), ["ingress>regions", "regions>eu-orders"]),
        ("eu.ops.alert", {}, ("eu-alerts",), ["ingress>regions", "regions>eu-ops", "eu-ops>eu-alerts"]),
        (
            "eu.billing.inv",
            {"format": "pdf"},
            ("eu-invoices-pdf",),
            ["ingress>regions", "regions>eu-billing", "eu-billing>eu-invoices-pdf"],
        ),
        ("audit.login", {}, ("audit",), ["ingress>audit"]),
        ("us.orders.1", {}, (), []),
        ("eu.ops.warning", {}, (), []),
    ],
)
def test_three_deep_chain_of_topic_headers_and_direct_exchanges(
    key: str, headers: dict[str, object], queues: tuple[str, ...], chain: list[str]
) -> None:
    routed = route(load("estate-exchange-chain.json"), "ingress", key, headers)
    assert routed.queues == queues
    assert routed.possible_queues == ()
    if chain:
        (path,) = [p for p in routed.paths if p.stop is None]
        assert chain_text(path) == chain


def test_chain_says_where_a_message_stops() -> None:
    routed = route(load("estate-exchange-chain.json"), "ingress", "eu.billing.inv", {"format": "doc"})
    assert routed.queues == ()
    (path,) = routed.paths
    assert chain_text(path) == ["ingress>regions", "regions>eu-billing"]
    assert path.stop == "no binding matches"
    assert routed.exchanges == ("eu-billing", "ingress", "regions")
    assert routed.types["eu-billing"] == "headers"
    assert any("RabbitMQ drops it" in note for note in routed.notes)


def test_a_cycle_of_exchange_bindings_ends_and_each_queue_gets_one_copy() -> None:
    topo = topology(
        [exchange("a", "fanout"), exchange("b", "fanout"), exchange("c", "topic")],
        [
            bind("a", "b", to="exchange"),
            bind("b", "a", to="exchange"),
            bind("b", "c", to="exchange"),
            bind("c", "a", "#", to="exchange"),
            bind("c", "q", "k"),
            bind("a", "q2"),
        ],
    )
    routed = route(topo, "a", "k")
    assert routed.queues == ("q", "q2")
    assert {tuple(chain_text(p)) for p in routed.paths if p.stop is None} == {("a>b", "b>c", "c>q"), ("a>q2",)}
    cut = [p for p in routed.paths if p.stop == CYCLE]
    assert {p.hops[-1].destination for p in cut} == {"a"}
    assert route(topo, "b", "k").queues == ("q", "q2")  # entering the cycle elsewhere reaches the same


def test_a_diamond_reaches_its_queue_once_with_both_paths_listed() -> None:
    topo = topology(
        [exchange("top", "fanout"), exchange("l", "fanout"), exchange("r", "fanout"), exchange("bottom", "fanout")],
        [
            bind("top", "l", to="exchange"),
            bind("top", "r", to="exchange"),
            bind("l", "bottom", to="exchange"),
            bind("r", "bottom", to="exchange"),
            bind("bottom", "q"),
        ],
    )
    routed = route(topo, "top")
    assert routed.queues == ("q",)
    assert len(routed.paths) == 2


# --------------------------------------------------------------------------- alternate exchanges


def test_alternate_exchange_gets_what_no_binding_takes() -> None:
    topo = topology(
        [exchange("orders", "topic", **{"alternate-exchange": "unrouted"}), exchange("unrouted", "fanout")],
        [bind("orders", "work", "order.#"), bind("unrouted", "lost")],
    )
    assert route(topo, "orders", "order.x").queues == ("work",)
    routed = route(topo, "orders", "invoice.x")
    assert routed.queues == ("lost",)
    (path,) = routed.paths
    assert [hop.via for hop in path.hops] == ["alternate-exchange", ""]


def test_alternate_exchange_from_a_policy_and_the_argument_wins() -> None:
    exchanges = [exchange("orders"), exchange("by-policy", "fanout"), exchange("by-argument", "fanout")]
    bindings = [bind("orders", "work", "order.#"), bind("by-policy", "p"), bind("by-argument", "a")]
    policy = {
        "vhost": "/",
        "name": "ae",
        "pattern": "^orders$",
        "apply-to": "exchanges",
        "definition": {"alternate-exchange": "by-policy"},
    }
    assert route(topology(exchanges, bindings, policies=[policy]), "orders", "x").queues == ("p",)
    exchanges[0] = exchange("orders", **{"alternate-exchange": "by-argument"})
    assert route(topology(exchanges, bindings, policies=[policy]), "orders", "x").queues == ("a",)


def test_an_exchange_binding_that_leads_nowhere_still_counts_as_routed() -> None:
    # RabbitMQ asks the alternate only when the exchange itself found no destination at all.
    topo = topology(
        [exchange("a", **{"alternate-exchange": "ae"}), exchange("inner", "direct"), exchange("ae", "fanout")],
        [bind("a", "inner", "#", to="exchange"), bind("inner", "q", "nope"), bind("ae", "lost")],
    )
    assert route(topo, "a", "k").queues == ()


def test_a_tap_that_takes_the_message_keeps_it_from_the_alternate() -> None:
    topo = topology(
        [exchange("orders", **{"alternate-exchange": "unrouted"}), exchange("unrouted", "fanout")],
        [bind("orders", "work", "order.#"), bind("unrouted", "lost")],
    )
    tap = Tap("orders", "svc/shadow", (("#", {}),))
    routed = route(topo, "orders", "invoice.x", taps=[tap])
    assert routed.queues == ()
    assert routed.routes == ("svc/shadow",)


# --------------------------------------------------------------------------- hash exchanges


def test_fanout_into_consistent_hash_is_a_choice_not_a_guess() -> None:
    routed = route(load("estate-consistent-hash.json"), "events", "k1")
    assert routed.queues == ()
    assert routed.possible_queues == ("events-shard-0", "events-shard-1", "events-shard-2")
    (path,) = routed.paths
    assert chain_text(path) == ["events>events-sharded"]
    assert path.choice is not None
    assert path.choice.basis == "a hash of the routing key"
    assert [hop.destination for hop in path.choice.options] == ["events-shard-0", "events-shard-1", "events-shard-2"]


def test_hash_on_a_header_and_modulus_hash_and_a_single_binding() -> None:
    topo = topology(
        [
            exchange("by-header", "x-consistent-hash", **{"hash-header": "customer"}),
            exchange("mod", "x-modulus-hash"),
            exchange("one", "x-consistent-hash"),
        ],
        [
            bind("by-header", "h1", "1"),
            bind("by-header", "h2", "2"),
            bind("mod", "m1"),
            bind("mod", "m2"),
            bind("one", "only", "1"),
        ],
    )
    (path,) = route(topo, "by-header", "k").paths
    assert path.choice is not None
    assert path.choice.basis == "a hash of the header 'customer'"
    assert route(topo, "mod", "k").possible_queues == ("m1", "m2")
    assert route(topo, "one", "k").queues == ("only",)  # a ring of one: every message lands there


def test_what_lies_behind_a_hash_choice_is_only_possible() -> None:
    topo = topology(
        [exchange("h", "x-consistent-hash"), exchange("behind", "fanout")],
        [bind("h", "direct-q", "1"), bind("h", "behind", "1", to="exchange"), bind("behind", "deep")],
    )
    routed = route(topo, "h", "k")
    assert routed.queues == ()
    assert routed.possible_queues == ("deep", "direct-q")


# --------------------------------------------------------------------------- the default exchange, refusals


def test_default_exchange_delivers_to_the_queue_named_by_the_key() -> None:
    topo = topology([exchange("x")], [bind("x", "jobs", "#")])
    assert route(topo, "", "jobs").queues == ("jobs",)
    routed = route(topo, "", "nope")
    assert routed.queues == ()
    assert routed.paths[0].stop == "no queue named 'nope' in the export"


def test_refusals_name_the_reason() -> None:
    topo = load("estate-exchange-chain.json")
    internal = route(topo, "regions", "eu.orders.1")
    assert internal.refused is not None
    assert "internal" in internal.refused
    assert internal.paths == ()
    missing = route(topo, "nowhere", "k")
    assert missing.refused is not None
    assert "404 NOT_FOUND" in missing.refused
    other = route_message(load("vhosts.json"), "/", "events.v2", "user.signup")
    assert other.refused is not None
    assert "it is in vhost 'us.east'" in other.refused
    assert route_message(load("vhosts.json"), "us.east", "events.v2", "user.signup").queues == ("events",)


def test_builtin_exchanges_route_without_being_in_the_export() -> None:
    topo = topology([], [bind("amq.topic", "q", "a.#")])
    assert route(topo, "amq.topic", "a.b").queues == ("q",)


def test_a_retry_queue_says_where_its_messages_come_back() -> None:
    routed = route(load("estate-retry-policies.json"), "orders.retry", "order.eu.created")
    assert routed.queues == ("order-retry",)
    assert (
        "queue 'order-retry' dead-letters a message (expired after its message-ttl of 2m, rejected, or dropped by a "
        "length limit) into exchange 'orders', which routes it to order-log, order-work"
    ) in routed.notes


def test_plugin_and_unknown_exchanges_are_said_not_guessed() -> None:
    topo = topology(
        [
            exchange("entry", "fanout"),
            exchange("delayed", "x-delayed-message", **{"x-delayed-type": "direct"}),
            exchange("jms", "x-jms-topic"),
        ],
        [
            bind("entry", "delayed", to="exchange"),
            bind("entry", "jms", to="exchange"),
            bind("entry", "ghost", to="exchange"),
            bind("delayed", "later", "k"),
            bind("jms", "j"),
        ],
    )
    routed = route(topo, "entry", "k")
    assert routed.queues == ("later",)
    stops = {p.hops[-1].destination: p.stop for p in routed.paths if p.stop}
    assert stops == {"jms": "not modelled (see the notes)", "ghost": "not in the export"}
    assert any("x-delayed-message" in note for note in routed.notes)


# --------------------------------------------------------------------------- upstream, bounds


def test_feeding_exchanges_follow_bindings_and_alternates_back() -> None:
    topo = load("estate-exchange-chain.json")
    assert feeding_exchanges(topo, "/", "eu-billing") == {"regions", "ingress"}
    assert feeding_exchanges(topo, "/", "ingress") == set()
    shop = load("shop.json")
    assert feeding_exchanges(shop, "/", "unrouted") == {"orders"}


def test_a_long_chain_and_a_dense_mesh_stay_bounded() -> None:
    names = [f"e{i}" for i in range(3000)]
    chain = topology(
        [exchange(name, "fanout") for name in names],
        [bind(a, b, to="exchange") for a, b in itertools.pairwise(names)] + [bind(names[-1], "end")],
    )
    started = time.monotonic()
    routed = route(chain, "e0")
    assert routed.queues == ("end",)  # the reach is exact; the listed path is cut
    assert routed.paths[0].stop is not None
    assert "not followed" in routed.paths[0].stop
    mesh_names = [f"m{i}" for i in range(40)]
    mesh = topology(
        [exchange(name, "fanout") for name in mesh_names],
        [bind(a, b, to="exchange") for a in mesh_names for b in mesh_names if a != b]
        + [bind(name, f"q-{name}") for name in mesh_names],
    )
    routed = route(mesh, "m0")
    assert len(routed.queues) == 40
    assert len(routed.paths) == MAX_PATHS
    assert routed.more_paths
    assert time.monotonic() - started < 10
