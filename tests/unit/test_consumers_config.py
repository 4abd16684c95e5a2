"""A service's `consumers:` in the mapping file: what loads, and what nats-server would refuse,
refused here first with the line it is on."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.config import load_config_text
from bridge.config.consumers import ConsumerConfig
from bridge.errors import ConfigError, ConfigIssue


def mapping(consumers: list[dict[str, Any]], *, streams: list[dict[str, Any]] | None = None, **service: Any) -> str:
    """A mapping file (JSON is YAML, one key a line so errors have lines) with one RabbitMQ and one Kafka route."""
    document = {
        "version": 1,
        "streams": streams
        if streams is not None
        else [
            {"name": "ORDERS", "subjects": ["orders.>"]},
            {"name": "PAY", "subjects": ["pay.*"]},
        ],
        "sources": {
            "rabbit": {"type": "rabbitmq", "url": "amqp://127.0.0.1/"},
            "kafka": {"type": "kafka", "bootstrap_servers": ["127.0.0.1:9092"]},
        },
        "services": {
            "orders": {
                "routes": [
                    {
                        "name": "events",
                        "source": "rabbit",
                        "from": {"exchange": "orders", "bindings": ["order.*.*"]},
                        "to": "orders.{rk}",
                    },
                    {"name": "payments", "source": "kafka", "from": {"topics": ["payments"]}, "to": "pay.{partition}"},
                ],
                "consumers": consumers,
                **service,
            }
        },
    }
    return json.dumps(document, indent=2)


def issues_of(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "test.yaml", {})
    return caught.value.issues


def one_issue(consumer: dict[str, Any], **kwargs: Any) -> ConfigIssue:
    (issue,) = issues_of(mapping([consumer], **kwargs))
    return issue


def worker(**fields: Any) -> dict[str, Any]:
    return {"name": "worker", "stream": "ORDERS", **fields}


def test_a_full_consumer_loads_with_durations_as_the_file_writes_them() -> None:
    config = load_config_text(
        mapping(
            [
                worker(
                    filter_subjects=["orders.order.eu.*"],
                    max_deliver=5,
                    backoff=["1s", "10s", "1m"],
                    max_ack_pending=100,
                    replaces={"queue": "orders-worker"},
                ),
                {
                    "name": "audit",
                    "stream": "ORDERS",
                    "ack_wait": "2m",
                    "delivery": "push",
                    "deliver_subject": "deliver.audit",
                    "queue_group": "auditors",
                },
            ]
        ),
        "test.yaml",
        {},
    )
    pull, push = config.services["orders"].consumers
    assert [delay.total_seconds() for delay in pull.backoff] == [1, 10, 60]
    assert pull.effective_ack_wait == 1.0  # JetStream waits the first backoff delay
    assert push.effective_ack_wait == 120.0
    assert ConsumerConfig(name="x", stream="S").effective_ack_wait == 30.0  # nats-server's default


def test_unknown_key_in_a_consumer_is_refused_on_its_line() -> None:
    text = mapping([worker(max_deliverr=3)])
    issue = one_issue(worker(max_deliverr=3))
    assert issue.path == "services.orders.consumers[0].max_deliverr"
    assert "unknown key 'max_deliverr'" in issue.message
    assert text.splitlines()[issue.line - 1].strip().startswith('"max_deliverr"')


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"backoff": ["1s", "2s"], "max_deliver": 2}, "JetStream needs 'max_deliver' greater than that"),
        ({"backoff": ["1s"]}, "JetStream needs 'max_deliver' greater than that"),  # absent is unlimited: refused too
        ({"backoff": ["1s", "2s"], "max_deliver": 3, "ack_wait": "30s"}, "leave 'ack_wait' out"),
        ({"deliver_policy": "by_start_sequence"}, "'start_sequence' goes with"),
        ({"start_sequence": 5}, "'start_sequence' goes with"),
        ({"deliver_policy": "by_start_time", "start_time": "2026-01-01T00:00:00"}, "timezone"),
        ({"deliver_policy": "last_per_subject"}, "needs 'filter_subjects'"),
        ({"ack_policy": "none", "max_ack_pending": 10}, "mean nothing with 'ack_policy: none'"),
        ({"delivery": "push"}, "needs 'deliver_subject'"),
        ({"delivery": "push", "deliver_subject": "deliver.>"}, "not a literal NATS subject"),
        ({"queue_group": "workers"}, "are for 'delivery: push'"),
        ({"filter_subjects": ["orders.>", "orders.eu.*"]}, "overlaps 'orders.>'"),
        ({"filter_subjects": ["orders..x"]}, "not a valid NATS subject filter"),
        ({"name": "a.b"}, "should match pattern"),
        ({"replaces": {"queue": "q", "group": "g"}}, "exactly one of 'queue'"),
        ({"replaces": {"queue": "q", "topics": ["t"]}}, "'topics' is for a Kafka group"),
    ],
)
def test_what_nats_server_would_refuse_is_refused_at_load(fields: dict[str, Any], words: str) -> None:
    issue = one_issue(worker(**fields))
    assert words in issue.message
    assert issue.path.startswith("services.orders.consumers[0]")


def test_a_filter_its_stream_does_not_capture_is_located() -> None:
    issue = one_issue(worker(filter_subjects=["orders.eu.*", "billing.>"]))
    assert issue.path == "services.orders.consumers[0].filter_subjects[1]"
    assert "'billing.>' is not captured by stream 'ORDERS' (orders.>)" in issue.message


def test_a_filter_wider_than_its_stream_is_only_partly_captured() -> None:
    issue = one_issue({"name": "w", "stream": "PAY", "filter_subjects": ["pay.>"]})
    assert "'pay.>' is only partly captured by stream 'PAY' (pay.*)" in issue.message


def test_the_stream_must_be_declared() -> None:
    issue = one_issue(worker(stream="NOPE"))
    assert issue.path == "services.orders.consumers[0].stream"
    assert "stream 'NOPE' is not declared (known: ORDERS, PAY)" in issue.message


def test_a_durable_name_is_unique_per_stream_across_services_and_reverse_routes() -> None:
    issues = issues_of(
        mapping(
            [worker(), worker(), {"name": "nats-bridge-reverse-orders-back", "stream": "ORDERS"}],
            reverse=[{"name": "back", "stream": "ORDERS", "to": {"source": "rabbit", "exchange": "orders"}}],
        )
    )
    messages = {issue.path: issue.message for issue in issues}
    assert "already the name of consumer orders/worker" in messages["services.orders.consumers[1].name"]
    assert "already the name of reverse route orders/back" in messages["services.orders.consumers[2].name"]
    # The same name on another stream is another consumer.
    load_config_text(mapping([worker(), {"name": "worker", "stream": "PAY"}]), "test.yaml", {})


def test_a_work_queue_stream_takes_explicit_acks_from_all_and_filters_apart() -> None:
    streams = [
        {"name": "ORDERS", "subjects": ["orders.>"], "retention": "workqueue"},
        {"name": "PAY", "subjects": ["pay.*"]},
    ]
    issues = issues_of(
        mapping(
            [
                worker(ack_policy="all", deliver_policy="new"),
                {"name": "second", "stream": "ORDERS", "filter_subjects": ["orders.eu.>"]},
            ],
            streams=streams,
        )
    )
    messages = " | ".join(issue.message for issue in issues)
    assert "work queue: JetStream needs explicit acks" in messages
    assert "work queue: JetStream needs 'deliver_policy: all'" in messages
    assert "'orders/second' overlaps 'orders/worker'" in messages


def test_replaces_finds_its_route_or_says_which_to_name() -> None:
    issue = one_issue(worker(replaces={"group": "g", "route": "events"}))
    assert "route 'events' reads rabbitmq, but group 'g' is kafka's" in issue.message
    issue = one_issue(worker(replaces={"queue": "q", "route": "nope"}))
    assert "the service has no route 'nope' (its routes: events, payments)" in issue.message
    # One route of the broker: no need to name it.
    load_config_text(mapping([worker(replaces={"queue": "q"})]), "test.yaml", {})
