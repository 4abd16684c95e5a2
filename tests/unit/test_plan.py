"""compile_plan: a mapping file's routes compiled once, the boundary every command starts from."""

from __future__ import annotations

from pathlib import Path

import pytest

import bridge
from bridge.config.loader import load_config
from bridge.errors import BridgeError
from bridge.plan import Plan, compile_plan

MAPPING = """
version: 1
nats: {servers: ["nats://127.0.0.1:4222"]}
streams: [{name: ORDERS, subjects: ["orders.>"]}, {name: AUDIT, subjects: ["audit.>"]}]
sources:
  kafka: {type: kafka, bootstrap_servers: ["127.0.0.1:9092"], cluster_name: east}
  rabbit: {type: rabbitmq, url: "amqp://127.0.0.1:5672/"}
services:
  shop:
    routes:
      - {name: orders, source: kafka, from: {topics: [orders]}, to: "orders.{partition}"}
      - {name: audit, source: rabbit, from: {exchange: audit, bindings: ["#"]}, to: "audit.{rk}"}
  billing:
    routes:
      - {name: invoices, source: kafka, from: {topics: [invoices]}, to: "orders.invoices.{partition}"}
"""


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    path = tmp_path / "mapping.yaml"
    path.write_text(MAPPING)
    return compile_plan(load_config(path))


def test_every_route_is_compiled_once_in_file_order(plan: Plan) -> None:
    assert [route.key for route in plan] == ["shop/orders", "shop/audit", "billing/invoices"]
    assert [stream.name for stream in plan.streams] == ["ORDERS", "AUDIT"]
    assert compile_plan(plan) is plan  # a plan is not compiled twice


def test_a_route_carries_its_sources_msg_id_qualifier(plan: Plan) -> None:
    """The same as the running bridge: CompiledRoute.of applies the source's cluster name."""
    assert plan.route("shop/orders").cluster_name == plan.config.sources["kafka"].msg_id_cluster
    assert plan.route("shop/orders").cluster_name is not None
    assert plan.route("shop/audit").cluster_name is None


def test_routes_by_service_and_unknown_names(plan: Plan) -> None:
    assert [route.key for route in plan.of_service("billing")] == ["billing/invoices"]
    assert plan.of_service(None) == plan.routes
    with pytest.raises(BridgeError, match=r"no service 'nope' .*services: billing, shop"):
        plan.of_service("nope")
    with pytest.raises(KeyError):
        plan.route("shop/nope")


def test_explain_takes_a_plan_or_a_config_and_says_the_same(plan: Plan) -> None:
    from_plan = bridge.explain_kafka(plan, topic="orders", key=b"k", partition=1, offset=4).as_json()
    from_config = bridge.explain_kafka(plan.config, topic="orders", key=b"k", partition=1, offset=4).as_json()
    assert from_plan == from_config
    [match] = from_plan["matches"]
    assert match["subject"] == "orders.1"
