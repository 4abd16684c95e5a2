"""The consumer planner behind `nats-bridge consumers plan|apply`, offline.

Server configs are built as nats-py reads them off the wire (nanoseconds to seconds, enums as
strings), with the defaults nats-server 2.15 fills in, so the comparison is the real one.
"""

from __future__ import annotations

from typing import Any

from nats.js import api as js_api

from bridge.config.consumers import ConsumerConfig
from bridge.jetstream.consumer_plan import ConsumersPlan, format_consumers_plan, plan_consumers, to_nats_consumer
from bridge.jetstream.plan import Action

SECOND = 1_000_000_000


def wanted(**fields: Any) -> ConsumerConfig:
    return ConsumerConfig.model_validate({"name": "worker", "stream": "ORDERS", **fields})


def on_server(**fields: Any) -> js_api.ConsumerConfig:
    """What nats-server reports for `wanted()`, defaults filled in, with overrides."""
    raw: dict[str, Any] = {
        "name": "worker",
        "durable_name": "worker",
        "deliver_policy": "all",
        "ack_policy": "explicit",
        "ack_wait": 30 * SECOND,
        "max_deliver": -1,
        "replay_policy": "instant",
        "max_waiting": 512,
        "max_ack_pending": 1000,
        "num_replicas": 0,
        "metadata": {"_nats.ver": "2.15.1"},
    }
    raw.update(fields)
    return js_api.ConsumerConfig.from_response(raw)


def plan(consumer: ConsumerConfig, server: js_api.ConsumerConfig | None, *, stream: bool = True) -> ConsumersPlan:
    existing = {(consumer.stream, consumer.name): server} if server is not None else {}
    return plan_consumers([("orders", consumer)], existing, {consumer.stream} if stream else set())


def test_a_missing_consumer_is_created_as_the_file_says() -> None:
    consumer = wanted(filter_subjects=["orders.eu.*"], max_deliver=4, backoff=["1s", "5s"])
    (planned,) = plan(consumer, None).consumers
    assert planned.action is Action.CREATE
    assert planned.target == to_nats_consumer(consumer)
    assert planned.target is not None
    assert planned.target.durable_name == "worker"
    assert planned.target.filter_subject == "orders.eu.*"  # one filter travels as filter_subject
    assert planned.target.ack_wait == 1.0  # the first backoff delay, as the server will hold it
    fields = {change.field: change.file for change in planned.changes}
    assert fields["backoff"] == [1.0, 5.0]
    assert fields["max_ack_pending"] == 1000


def test_a_consumer_whose_stream_is_missing_is_refused() -> None:
    (planned,) = plan(wanted(), None, stream=False).consumers
    assert planned.action is Action.REFUSED
    assert planned.target is None
    assert "`streams apply` it first" in planned.refusals[0].reason


def test_a_consumer_matching_the_file_with_server_defaults_is_unchanged() -> None:
    assert plan(wanted(), on_server()).consumers[0].action is Action.UNCHANGED
    several = wanted(filter_subjects=["orders.b", "orders.a"])
    assert plan(several, on_server(filter_subjects=["orders.a", "orders.b"])).consumers[0].action is Action.UNCHANGED
    one = wanted(filter_subjects=["orders.a"])
    assert plan(one, on_server(filter_subject="orders.a")).consumers[0].action is Action.UNCHANGED


def test_mutable_fields_update_from_the_servers_own_config() -> None:
    server = on_server(max_waiting=64, metadata={"owner": "ops"}, description="by ops")
    (planned,) = plan(
        wanted(max_ack_pending=50, ack_wait="1m", filter_subjects=["orders.a", "orders.b"]), server
    ).consumers
    assert planned.action is Action.UPDATE
    assert [(c.field, c.server, c.file) for c in planned.changes] == [
        ("filter_subjects", [], ["orders.a", "orders.b"]),
        ("ack_wait", 30.0, 60.0),
        ("max_ack_pending", 1000, 50),
    ]
    target = planned.target
    assert target is not None
    assert (target.max_ack_pending, target.ack_wait, target.filter_subjects) == (50, 60.0, ["orders.a", "orders.b"])
    assert (target.max_waiting, target.metadata, target.description) == (64, {"owner": "ops"}, "by ops")  # kept


def test_what_jetstream_fixes_at_creation_is_refused_with_the_reason() -> None:
    (planned,) = plan(wanted(deliver_policy="new", ack_policy="all", max_deliver=3), on_server()).consumers
    assert planned.action is Action.REFUSED
    assert planned.target is None
    reasons = {refusal.field: refusal.reason for refusal in planned.refusals}
    assert set(reasons) == {"deliver_policy", "ack_policy"}  # max_deliver alone could change
    assert "deliver policy can not be updated" in reasons["deliver_policy"]
    assert "write `deliver_policy: all`" in reasons["deliver_policy"]
    start = wanted(deliver_policy="by_start_sequence", start_sequence=7)
    (moved,) = plan(start, on_server(deliver_policy="by_start_sequence", opt_start_seq=3)).consumers
    assert [r.field for r in moved.refusals] == ["start_sequence"]


def test_pull_to_push_is_refused_but_a_push_consumer_may_move_its_subject() -> None:
    push = wanted(delivery="push", deliver_subject="deliver.b", queue_group="g")
    (refused,) = plan(push, on_server()).consumers
    assert [r.field for r in refused.refusals] == ["delivery"]
    assert "can not update pull consumer to push based" in refused.refusals[0].reason
    (moved,) = plan(push, on_server(deliver_subject="deliver.a", deliver_group="g")).consumers
    assert moved.action is Action.UPDATE
    assert [c.field for c in moved.changes] == ["deliver_subject"]


def test_the_description_is_compared_only_when_the_file_gives_one() -> None:
    assert plan(wanted(), on_server(description="ops")).consumers[0].action is Action.UNCHANGED
    (planned,) = plan(wanted(description="fulfilment"), on_server(description="ops")).consumers
    assert [(c.field, c.server, c.file) for c in planned.changes] == [("description", "ops", "fulfilment")]


def test_the_table_shows_values_as_the_file_writes_them() -> None:
    table = format_consumers_plan(plan(wanted(max_deliver=4, backoff=["1s", "1m"]), on_server()))
    assert "ORDERS/worker" in table
    assert "max_deliver       unlimited          4" in table
    assert "backoff           -                  1s, 1m" in table
    assert "ack_wait          30s                1s" in table
    assert table.rstrip().endswith("Consumers the file does not name are left alone; nothing is ever deleted.")
