"""`nats-bridge explain --definitions`: the message routed as RabbitMQ routes it in the legacy estate
(the exports in tests/data/definitions), beside the routes of the mapping `import rabbitmq` made from
the same export (run here, through the CLI), and the cases where the two disagree flagged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from bridge.commands import app

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "definitions"


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "400"})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


def imported(export: Path, tmp_path: Path) -> Path:
    """The mapping `import rabbitmq` writes for `export`."""
    mapping = tmp_path / f"{export.stem}.yaml"
    result = invoke("import", "rabbitmq", str(export), "-o", str(mapping), "--force")
    assert result.exit_code == 0, result.output
    return mapping


def explain(export: Path, mapping: Path, exchange: str, key: str, *extra: str) -> Result:
    return invoke(
        "explain", str(mapping), "--exchange", exchange, "--routing-key", key, "--definitions", str(export), *extra
    )


def explain_json(export: Path, mapping: Path, exchange: str, key: str, *extra: str) -> dict[str, Any]:
    result = explain(export, mapping, exchange, key, *extra, "--json")
    document: dict[str, Any] = json.loads(result.stdout)
    return document


# A hand-written mapping: one route shadowing every message of exchange 'orders'.
ORDERS_EVERYTHING = """\
version: 1
nats: {servers: ['nats://127.0.0.1:4222']}
streams: [{name: ALL, subjects: ['all', 'all.>']}]
sources: {rabbit: {type: rabbitmq, url: 'amqp://127.0.0.1:5672/'}}
services:
  orders:
    routes:
      - name: everything
        source: rabbit
        from: {exchange: orders, type: topic, bindings: ['#']}
        to: 'all.{rk}'
"""


@pytest.fixture
def chain(tmp_path: Path) -> tuple[Path, Path]:
    export = DATA / "estate-exchange-chain.json"
    return export, imported(export, tmp_path)


def test_a_message_through_the_three_deep_chain_shows_its_path_and_the_route_that_copies_it(
    chain: tuple[Path, Path],
) -> None:
    export, mapping = chain
    result = explain(export, mapping, "ingress", "eu.ops.alert")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"RabbitMQ, as {export} describes it (vhost '/'):" in out
    assert (
        "  'ingress' (topic) -[eu.#]-> 'regions' (topic) -[eu.ops.alert]-> 'eu-ops' (direct) "
        "-[eu.ops.alert]-> queue 'eu-alerts'"
    ) in out
    assert "  'ingress' (topic) -[eu.ops.alert]-> bridge route ingress/shadow" in out  # the key that matched
    assert "  legacy queues: eu-alerts" in out
    assert "route ingress/shadow  (source 'rabbitmq')" in out
    assert "subject      rmq.ingress.eu.ops.alert" in out
    assert "NOT COPIED" not in out
    assert "NO LEGACY QUEUE" not in out
    # The legacy section comes before the routes, as the message travels.
    assert out.index("legacy queues") < out.index("\nroute ingress/shadow")


def test_a_headers_step_after_a_topic_entry_is_copied_though_no_legacy_queue_gets_it(
    chain: tuple[Path, Path],
) -> None:
    export, mapping = chain
    result = explain(export, mapping, "ingress", "eu.billing.inv", "--header", "format=doc")
    assert result.exit_code == 0
    assert "'regions' (topic) -[eu.billing.*]-> 'eu-billing' (headers): no binding matches" in result.stdout
    assert "legacy queues: none" in result.stdout
    assert "COPIED, NO LEGACY QUEUE: ingress/shadow stores it, but RabbitMQ delivers it to no legacy queue" in (
        result.stdout
    )
    document = explain_json(export, mapping, "ingress", "eu.billing.inv", "--header", "format=doc")
    assert [m["kind"] for m in document["mismatches"]] == ["no-legacy-queue"]
    assert document["legacy"]["queues"] == []
    pdf = explain_json(export, mapping, "ingress", "eu.billing.inv", "--header", "format=pdf")
    assert pdf["legacy"]["queues"] == ["eu-invoices-pdf"]
    assert pdf["mismatches"] == []


def test_json_carries_the_paths_queues_and_routes(chain: tuple[Path, Path]) -> None:
    export, mapping = chain
    document = explain_json(export, mapping, "ingress", "eu.orders.new")
    legacy = document["legacy"]
    assert legacy["definitions"] == str(export)
    assert (legacy["vhost"], legacy["exchange"], legacy["routing_key"], legacy["refused"]) == (
        "/",
        "ingress",
        "eu.orders.new",
        None,
    )
    assert legacy["queues"] == ["eu-orders"]
    assert legacy["without_bridge"] == {"queues": ["eu-orders"], "possible_queues": []}
    first = legacy["paths"][0]
    assert [(h["from"], h["via"], h["to"], h["to_kind"]) for h in first["hops"]] == [
        ("ingress", "eu.#", "regions", "exchange"),
        ("regions", "*.orders.#", "eu-orders", "queue"),
    ]
    assert [match["route"] for match in document["matches"]] == ["ingress/shadow"]
    assert document["mismatches"] == []


def test_an_internal_exchange_refuses_the_publish(chain: tuple[Path, Path]) -> None:
    export, mapping = chain
    result = explain(export, mapping, "regions", "eu.orders.1")
    assert result.exit_code == 1
    assert "exchange 'regions' is internal: RabbitMQ refuses a client's publish to it" in result.stdout
    assert "ingress/shadow: RabbitMQ refuses the publish (see above)" in result.stdout


def test_published_downstream_of_the_shadow_is_not_copied(tmp_path: Path) -> None:
    # The chain export, with its middle exchange open to producers (the case the import warns about).
    definitions = json.loads((DATA / "estate-exchange-chain.json").read_text())
    for item in definitions["exchanges"]:
        item["internal"] = False
    export = tmp_path / "open-chain.json"
    export.write_text(json.dumps(definitions))
    mapping = imported(export, tmp_path)
    result = explain(export, mapping, "regions", "eu.orders.1")
    assert result.exit_code == 1
    assert "  'regions' (topic) -[*.orders.#]-> queue 'eu-orders'" in result.stdout
    assert (
        "NOT COPIED: published into 'regions', downstream of where the bridge shadows ('ingress'): legacy queue "
        "'eu-orders' gets it, no route copies it. If producers publish to 'regions', add a shadow route on it."
    ) in result.stdout
    assert "ingress/shadow: copies exchange 'ingress', which this message does not pass through" in result.stdout
    document = explain_json(export, mapping, "regions", "eu.orders.1")
    assert [m["kind"] for m in document["mismatches"]] == ["not-copied"]
    # Two steps down: the direct exchange behind regions.
    deep = explain(export, mapping, "eu-ops", "eu.ops.alert")
    assert "downstream of where the bridge shadows ('ingress')" in deep.stdout


def test_consistent_hash_is_one_of_its_queues_copied_at_the_fanout(tmp_path: Path) -> None:
    export = DATA / "estate-consistent-hash.json"
    mapping = imported(export, tmp_path)
    result = explain(export, mapping, "events", "user-42")
    assert result.exit_code == 0
    assert (
        "  'events' (fanout) --> 'events-sharded' (x-consistent-hash) -[hash]-> one of: queue 'events-shard-0', "
        "queue 'events-shard-1', queue 'events-shard-2' (by a hash of the routing key)"
    ) in result.stdout
    assert "  legacy queues: one of events-shard-0, events-shard-1, events-shard-2 (picked by a hash)" in result.stdout
    assert "route events/shadow" in result.stdout
    assert "NOT COPIED" not in result.stdout
    document = explain_json(export, mapping, "events", "user-42")
    assert document["legacy"]["possible_queues"] == ["events-shard-0", "events-shard-1", "events-shard-2"]
    choice = document["legacy"]["paths"][0]["choice"]
    assert (choice["exchange"], choice["by"]) == ("events-sharded", "a hash of the routing key")
    # Straight into the hash exchange: RabbitMQ delivers it to a shard; nothing copies it.
    direct = explain(export, mapping, "events-sharded", "user-42")
    assert direct.exit_code == 1
    assert "NOT COPIED: published into 'events-sharded', downstream of where the bridge shadows ('events')" in (
        direct.stdout
    )
    assert "would take a share, not a copy" in direct.stdout


def test_policies_and_retry_queues(tmp_path: Path) -> None:
    export = DATA / "estate-retry-policies.json"
    mapping = imported(export, tmp_path)
    work = explain(export, mapping, "orders", "order.eu.created")
    assert work.exit_code == 0
    assert "  legacy queues: order-log, order-work" in work.stdout
    # dead-letter-exchange comes from policy work-dlx
    assert (
        "note: queue 'order-work' dead-letters a message (rejected, or dropped by a length limit) into exchange "
        "'orders.retry', which routes it to order-retry"
    ) in work.stdout
    retry = explain(export, mapping, "orders.retry", "order.eu.created")
    # the retry queue's messages come back into 'orders', where the bridge shadows them again
    assert "into exchange 'orders', which routes it to order-log, order-work" in retry.stdout
    assert "route orders-retry/shadow" in retry.stdout
    unrouted = explain(export, mapping, "orders", "invoice.1")
    assert unrouted.exit_code == 1
    assert "'orders' (topic): no binding matches" in unrouted.stdout
    assert "RabbitMQ drops it" in unrouted.stdout
    assert "NOT COPIED" not in unrouted.stdout


def test_alternate_exchange_in_the_shop_export(tmp_path: Path) -> None:
    export = DATA / "shop.json"
    mapping = imported(export, tmp_path)
    result = explain(export, mapping, "orders", "invoice.x")
    assert "  'orders' (topic) -[alternate-exchange]-> 'unrouted' (fanout): no bindings" in result.stdout
    eu = explain(export, mapping, "orders", "order.eu.created")
    assert "  'orders' (topic) -[order.eu.#]-> 'regional' (topic) -[#]-> queue 'eu-orders'" in eu.stdout
    assert "  legacy queues: eu-orders, order-audit, order-mailer" in eu.stdout
    regional = explain(export, mapping, "regional", "order.eu.created")
    assert "downstream of where the bridge shadows ('orders')" in regional.stdout


def test_a_shadow_route_that_takes_what_went_to_the_alternate_exchange_is_flagged(tmp_path: Path) -> None:
    definitions = {
        "exchanges": [
            {"name": "orders", "type": "topic", "arguments": {"alternate-exchange": "unrouted"}},
            {"name": "unrouted", "type": "fanout"},
        ],
        "queues": [{"name": "work"}, {"name": "lost"}],
        "bindings": [
            {"source": "orders", "destination": "work", "destination_type": "queue", "routing_key": "order.#"},
            {"source": "unrouted", "destination": "lost", "destination_type": "queue", "routing_key": ""},
        ],
    }
    export = tmp_path / "ae.json"
    export.write_text(json.dumps(definitions))
    mapping = tmp_path / "everything.yaml"
    mapping.write_text(ORDERS_EVERYTHING)
    result = explain(export, mapping, "orders", "invoice.x")
    assert result.exit_code == 0
    assert "CHANGED BY THE BRIDGE: without it RabbitMQ delivers this message to legacy queue 'lost'" in result.stdout
    assert "COPIED, NO LEGACY QUEUE" in result.stdout
    document = explain_json(export, mapping, "orders", "invoice.x")
    assert document["legacy"]["without_bridge"]["queues"] == ["lost"]
    assert document["legacy"]["queues"] == []
    assert {m["kind"] for m in document["mismatches"]} == {"changed-by-bridge", "no-legacy-queue"}


def test_a_route_on_a_downstream_exchange_takes_what_arrives_through_the_binding(tmp_path: Path) -> None:
    # Hand-written: the route shadows 'regional' (behind 'orders'): its queue gets what the binding brings.
    export = DATA / "shop.json"
    mapping = tmp_path / "regional.yaml"
    mapping.write_text(
        "version: 1\n"
        "nats: {servers: ['nats://127.0.0.1:4222']}\n"
        "streams: [{name: EU, subjects: ['eu', 'eu.>']}]\n"
        "sources: {rabbit: {type: rabbitmq, url: 'amqp://127.0.0.1:5672/'}}\n"
        "services:\n"
        "  eu:\n"
        "    routes:\n"
        "      - name: regional\n"
        "        source: rabbit\n"
        "        from: {exchange: regional, type: topic, bindings: ['#']}\n"
        "        to: 'eu.{rk}'\n"
    )
    result = explain(export, mapping, "orders", "order.eu.created")
    assert result.exit_code == 0
    assert "'orders' (topic) -[order.eu.#]-> 'regional' (topic) -[#]-> bridge route eu/regional" in result.stdout
    assert "route eu/regional" in result.stdout
    assert "Amqp-Exchange     orders" in result.stdout  # delivered with the exchange it was published to
    other = explain(export, mapping, "orders", "order.us.created")
    assert "eu/regional: copies exchange 'regional', which this message does not pass through" in other.stdout
    # Without the export, explain cannot see the binding (as before).
    plain = invoke("explain", str(mapping), "--exchange", "orders", "--routing-key", "order.eu.created")
    assert plain.exit_code == 1


def test_a_queue_the_mapping_reads_takes_what_reaches_it_and_an_unshadowed_exchange_is_not_copied(
    tmp_path: Path,
) -> None:
    export = DATA / "shop.json"
    clicks = explain(export, imported(export, tmp_path), "clickstream", "page.view")
    assert clicks.exit_code == 0
    assert "route clicks-stream/stream" in clicks.stdout  # a stream-mode route on the queue RabbitMQ fills
    cache = explain(export, ROOT / "mappings" / "shop.yaml", "cache", "x")
    assert cache.exit_code == 1
    assert (
        "NOT COPIED: legacy queues 'cache-invalidate-a', 'cache-invalidate-b' get it, but no route copies it: "
        "no route shadows 'cache' or an exchange on its way. If producers publish to 'cache', add a shadow route on it."
    ) in cache.stdout
    unmatched = explain(export, ROOT / "mappings" / "shop.yaml", "orders", "invoice.created")
    assert "orders/order-events: topic binding key(s) 'order.#' do not match routing key 'invoice.created'" in (
        unmatched.stdout
    )


def test_vhosts(tmp_path: Path) -> None:
    export = DATA / "vhosts.json"
    mapping = imported(export, tmp_path)
    eu = explain(export, mapping, "events", "user.created", "--vhost", "eu")
    assert eu.exit_code == 0
    assert "(vhost 'eu')" in eu.stdout
    assert "route eu-events/shadow" in eu.stdout
    assert "events/shadow: reads vhost '/', not 'eu'" in eu.stdout
    wrong = explain(export, mapping, "events.v2", "user.signup")
    assert "exchange 'events.v2' is not in the export's vhost '/' (it is in vhost 'us.east')" in wrong.stdout
    right = explain(export, mapping, "events.v2", "user.signup", "--vhost", "us.east")
    assert right.exit_code == 0
    assert "  legacy queues: events" in right.stdout


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read it"),
        ("{not json", "not JSON"),
        ('{"exchanges": 3}', "exchanges: must be a list of objects"),
        ('{"bindings": [{"source": "x"}]}', "bindings[0].destination: missing"),
        ("[1, 2]", "must be a JSON object"),
    ],
    ids=["missing", "not-json", "bad-section", "bad-binding", "not-an-object"],
)
def test_bad_definitions_are_one_error_naming_the_file(tmp_path: Path, content: str | None, problem: str) -> None:
    export = tmp_path / "definitions.json"
    if content is not None:
        export.write_text(content)
    mapping = imported(DATA / "shop.json", tmp_path)
    result = explain(export, mapping, "orders", "order.eu.created")
    assert result.exit_code == 2
    first = result.output.splitlines()[0]
    assert first.startswith(f"error: {export}: ")
    assert problem in first


def test_definitions_need_an_exchange(tmp_path: Path) -> None:
    mapping = imported(DATA / "shop.json", tmp_path)
    result = invoke(
        "explain", str(mapping), "--queue", "payments", "--routing-key", "x", "--definitions", str(DATA / "shop.json")
    )
    assert result.exit_code == 2
    assert "--definitions routes a message published to an exchange" in result.output


def test_odd_arguments_in_an_export_never_make_a_traceback(tmp_path: Path) -> None:
    # Shapes check_definitions lets through (argument values are the broker's business) but RabbitMQ
    # would refuse or ignore: each is said or skipped, and explain answers.
    definitions = {
        "exchanges": [
            {"name": "orders", "type": "topic", "arguments": {"alternate-exchange": 7}},
            {"name": "h", "type": "headers", "arguments": {"alternate-exchange": "missing"}},
            {"name": "hash", "type": "x-consistent-hash", "arguments": {"hash-header": ["a", "list"]}},
            {"name": "loop", "type": "fanout"},
        ],
        "queues": [
            {"name": "q", "arguments": {"x-dead-letter-exchange": "orders", "x-dead-letter-routing-key": 3}},
            {"name": "r", "arguments": {"x-dead-letter-exchange": 5}},
        ],
        "bindings": [
            {"source": "orders", "destination": "q", "destination_type": "queue", "routing_key": "#"},
            {"source": "orders", "destination": "h", "destination_type": "exchange", "routing_key": "#"},
            {"source": "orders", "destination": "hash", "destination_type": "exchange", "routing_key": "#"},
            {"source": "orders", "destination": "loop", "destination_type": "exchange", "routing_key": "#"},
            {"source": "loop", "destination": "loop", "destination_type": "exchange"},
            {"source": "loop", "destination": "orders", "destination_type": "exchange"},
            {"source": "h", "destination": "r", "destination_type": "queue", "arguments": {"x-match": 5, "a": "1"}},
            {"source": "hash", "destination": "q", "destination_type": "queue", "routing_key": "x"},
            {"source": "hash", "destination": "r", "destination_type": "queue", "routing_key": "y"},
        ],
    }
    export = tmp_path / "odd.json"
    export.write_text(json.dumps(definitions))
    mapping = tmp_path / "orders.yaml"
    mapping.write_text(ORDERS_EVERYTHING)
    result = explain(export, mapping, "orders", "k", "--header", "a=1")
    assert result.exit_code == 0, result.output
    assert "x-match must be one of" in result.stdout
    assert "a cycle" in result.stdout
    assert "  legacy queues: q; and one of r (picked by a hash)" in result.stdout
    document = explain_json(export, mapping, "orders", "k", "--header", "a=1")
    assert document["legacy"]["queues"] == ["q"]


def _one_route(tmp_path: Path, exchange: str, kind: str, bindings: str) -> Path:
    """ORDERS_EVERYTHING's one route moved to `exchange`, declared of type `kind` with `bindings`."""
    mapping = tmp_path / f"{exchange}-{kind}.yaml"
    route_from = f"from: {{exchange: {exchange}, type: {kind}, {bindings}}}"
    mapping.write_text(ORDERS_EVERYTHING.replace("from: {exchange: orders, type: topic, bindings: ['#']}", route_from))
    return mapping


def test_rabbitmq_matches_a_shadow_queue_by_the_exchanges_type_not_the_routes(tmp_path: Path) -> None:
    export = DATA / "shop.json"
    # 'cache' is a fanout exchange: the shadow queue bound with 'x.#' gets every message all the same.
    mapping = _one_route(tmp_path, "cache", "topic", "bindings: ['x.#']")
    assert "from: {exchange: cache, type: topic, bindings: ['x.#']}" in mapping.read_text()
    taken = explain(export, mapping, "cache", "other.key")
    assert taken.exit_code == 0
    assert "'cache' (fanout) --> bridge route orders/everything" in taken.stdout
    assert "NOT COPIED" not in taken.stdout
    # 'payments' is direct: a topic-looking key is compared whole there.
    direct = _one_route(tmp_path, "payments", "topic", "bindings: ['payment.#']")
    missed = explain(export, direct, "payments", "payment.captured")
    assert missed.exit_code == 1
    assert (
        "orders/everything: binds to exchange 'payments' as a topic exchange, but the export has it as direct, "
        "and there its bindings do not take this message"
    ) in missed.stdout
    assert "NOT COPIED: legacy queue 'payments' gets it" in missed.stdout


def test_a_shadow_route_on_a_hash_exchange_takes_a_share_not_a_copy(tmp_path: Path) -> None:
    export = DATA / "estate-consistent-hash.json"
    mapping = _one_route(tmp_path, "events-sharded", "direct", "bindings: ['1']")
    result = explain(export, mapping, "events", "k")
    assert result.exit_code == 1
    assert "one of: queue 'events-shard-0', queue 'events-shard-1', queue 'events-shard-2', bridge route" in (
        result.stdout
    )
    assert "orders/everything: its shadow queue on exchange 'events-sharded' is one choice of a hash exchange" in (
        result.stdout
    )


def test_vhost_needs_the_export() -> None:
    result = invoke(
        "explain", str(ROOT / "mappings" / "shop.yaml"), "--exchange", "orders", "--routing-key", "x", "--vhost", "eu"
    )
    assert result.exit_code == 2
    assert "--vhost is the vhost of --definitions" in result.output
