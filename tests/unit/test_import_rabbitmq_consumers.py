"""`import rabbitmq` writes one durable consumer per legacy queue: filters from its bindings (exact where
NATS can say it, the narrowest covering filter otherwise), limits from its arguments, comments for
what JetStream has no equivalent of, and a file whose consumers dry-run without errors."""

from __future__ import annotations

from typing import Any

from bridge.config import load_config_text
from bridge.config.consumers import ConsumerConfig
from bridge.config.model import BridgeConfig
from bridge.dryrun.checks import offline_checks
from bridge.dryrun.report import Finding, Severity
from bridge.importers import MappingDocument, import_definitions, render
from bridge.importers.rabbitmq.prefetch import with_consumer_prefetch
from bridge.routing.filters import consumer_filters, generalise
from bridge.routing.shapes import filter_shape

ESTATE: dict[str, Any] = {
    "exchanges": [
        {"name": "events", "type": "topic", "durable": True},
        {"name": "events.dlx", "type": "fanout", "durable": True},
        {"name": "invoices", "type": "headers", "durable": True},
    ],
    "queues": [
        {
            "name": "payments",
            "durable": True,
            "arguments": {
                "x-queue-type": "quorum",
                "x-delivery-limit": 4,
                "x-dead-letter-exchange": "events.dlx",
                "x-consumer-timeout": 600000,
            },
        },
        {"name": "audit.trail", "durable": True, "arguments": {"x-max-length": 200}},
        {"name": "regional", "durable": True, "arguments": {}},
        {
            "name": "parked",
            "durable": True,
            "arguments": {},
            "consumer_details": [{"prefetch_count": 10}, {"prefetch_count": 15}],
        },
        {"name": "pdf", "durable": True, "arguments": {}},
        {"name": "urgent", "durable": True, "arguments": {}},
    ],
    "bindings": [
        {"source": "events", "destination": "payments", "destination_type": "queue", "routing_key": "payment.#"},
        {"source": "events", "destination": "audit.trail", "destination_type": "queue", "routing_key": "a.#.b"},
        {"source": "events", "destination": "regional", "destination_type": "queue", "routing_key": "*.eu"},
        {"source": "events", "destination": "regional", "destination_type": "queue", "routing_key": "order.*"},
        {"source": "events.dlx", "destination": "parked", "destination_type": "queue", "routing_key": ""},
        {
            "source": "invoices",
            "destination": "pdf",
            "destination_type": "queue",
            "routing_key": "",
            "arguments": {"x-match": "all", "format": "pdf"},
        },
        {
            "source": "invoices",
            "destination": "urgent",
            "destination_type": "queue",
            "routing_key": "",
            "arguments": {"x-match": "any", "urgent": True},
        },
    ],
}


def _imported() -> tuple[MappingDocument, BridgeConfig]:
    document = import_definitions(ESTATE)
    return document, load_config_text(render(document), "estate.json", {})


def _consumer(config: BridgeConfig, service: str, name: str) -> ConsumerConfig:
    return next(c for c in config.services[service].consumers if c.name == name)


def _consumer_findings(config: BridgeConfig) -> list[Finding]:
    return [f for f in offline_checks(config) if f.check in ("coverage", "inexact", "wider", "legacy-headers")]


def test_one_consumer_per_queue_in_the_service_that_copies_it() -> None:
    _, config = _imported()
    assert [c.name for c in config.services["events"].consumers] == ["payments", "audit-trail", "regional"]
    assert [c.name for c in config.services["events-dlx"].consumers] == ["parked"]
    assert [c.name for c in config.services["invoices"].consumers] == ["pdf", "urgent"]
    payments = _consumer(config, "events", "payments")
    assert payments.stream == "RMQ_EVENTS"
    assert payments.replaces is not None
    assert payments.replaces.queue == "payments"
    assert payments.replaces.bindings == ["payment.#"]
    assert payments.filter_subjects == ["rmq.events.payment", "rmq.events.payment.>"]


def test_quorum_delivery_limit_consumer_timeout_and_prefetch_become_limits() -> None:
    document, config = _imported()
    payments = _consumer(config, "events", "payments")
    assert payments.max_deliver == 5  # x-delivery-limit counts redeliveries; max_deliver counts the first too
    assert payments.ack_wait is not None
    assert payments.ack_wait.total_seconds() == 600
    assert _consumer(config, "events-dlx", "parked").max_ack_pending == 25  # 10 + 15, summed over consumers
    assert _consumer(config, "events", "audit-trail").max_ack_pending == 200  # from x-max-length
    assert _consumer(config, "events", "regional").max_ack_pending is None  # unknown: JetStream's default
    max_deliver_note = document.comments[("services", "events", "consumers", 0, "max_deliver")]
    assert "x-delivery-limit 4" in max_deliver_note[0]


def test_dead_lettering_is_explained_on_the_consumer() -> None:
    document, _ = _imported()
    notes = "\n".join(document.comments[("services", "events", "consumers", 0)])
    assert "dead-letters to exchange 'events.dlx'" in notes
    assert "MAX_DELIVERIES" in notes


def test_a_hash_in_the_middle_takes_the_narrowest_covering_filter_and_says_so() -> None:
    document, config = _imported()
    audit = _consumer(config, "events", "audit-trail")
    assert audit.filter_subjects == ["rmq.events.a.>"]
    notes = "\n".join(document.comments[("services", "events", "consumers", 1, "filter_subjects")])
    assert "wider than the queue's binding" in notes


def test_overlapping_bindings_of_one_queue_merge_into_one_filter() -> None:
    document, config = _imported()
    regional = _consumer(config, "events", "regional")
    assert regional.filter_subjects == ["rmq.events.*.*"]  # '*.eu' and 'order.*' overlap on 'order.eu'
    notes = "\n".join(document.comments[("services", "events", "consumers", 2, "filter_subjects")])
    assert "refuses overlapping filters" in notes


def test_headers_queues_name_their_route_and_read_the_exchange_subject() -> None:
    _, config = _imported()
    pdf, urgent = config.services["invoices"].consumers
    assert pdf.replaces is not None
    assert urgent.replaces is not None
    assert (pdf.replaces.route, urgent.replaces.route) == ("pdf", "urgent")
    assert pdf.filter_subjects == ["rmq.invoices"]


def test_consumer_checks_find_no_error_and_warn_only_where_the_comments_say() -> None:
    _, config = _imported()
    findings = _consumer_findings(config)
    assert [f for f in findings if f.severity is Severity.ERROR] == []
    warned = {(f.check, f.subject) for f in findings if f.severity is Severity.WARNING}
    assert warned == {("inexact", "events/audit-trail"), ("wider", "events/regional")}


def test_filters_drop_covered_ones_and_generalise_partial_overlaps() -> None:
    chosen = consumer_filters([filter_shape("x.a.*"), filter_shape("x.a.b"), filter_shape("x.>")])
    assert chosen.filters == ["x.>"]
    assert chosen.merged == []
    assert generalise("x.a.*", "x.*.b") == "x.*.*"
    assert generalise("x.a.>", "x.*.b.c") == "x.*.>"


def test_a_policy_delivery_limit_counts_for_quorum_queues_only() -> None:
    estate = {
        **ESTATE,
        "policies": [
            {
                "vhost": "/",
                "name": "retries",
                "pattern": "^(payments|regional|quorate)$",
                "apply-to": "queues",
                "definition": {"delivery-limit": 9},
                "priority": 0,
            }
        ],
    }
    estate["queues"] = [*ESTATE["queues"], {"name": "quorate", "arguments": {"x-queue-type": "quorum"}}]
    estate["bindings"] = [
        *ESTATE["bindings"],
        {"source": "events", "destination": "quorate", "destination_type": "queue", "routing_key": "q"},
    ]
    config = load_config_text(render(import_definitions(estate)), "policies.json", {})
    assert _consumer(config, "events", "payments").max_deliver == 5  # its own x-delivery-limit 4 wins
    assert _consumer(config, "events", "quorate").max_deliver == 10  # the policy's 9 redeliveries
    assert _consumer(config, "events", "regional").max_deliver is None  # a classic queue: RabbitMQ ignores it


def test_prefetch_read_live_is_folded_into_the_export() -> None:
    folded = with_consumer_prefetch(ESTATE, {("/", "payments"): [5, 20], ("/", "gone"): [1]})
    config = load_config_text(render(import_definitions(folded)), "folded.json", {})
    assert _consumer(config, "events", "payments").max_ack_pending == 25
    assert "consumer_details" not in ESTATE["queues"][0]  # the export itself is left as it was
