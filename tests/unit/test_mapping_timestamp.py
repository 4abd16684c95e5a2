"""`{timestamp}` in Msg-Id and header templates renders the source's own timestamp."""

from __future__ import annotations

from datetime import UTC, datetime

from bridge.config import load_config_text
from bridge.mapping import CompiledRoute
from bridge.message import AmqpOrigin, KafkaOrigin, SourceMessage

MAPPING = """
sources:
  k: {type: kafka, bootstrap_servers: ["k:9092"]}
  r: {type: rabbitmq, url: "amqp://r/"}
services:
  svc:
    routes:
      - {name: kafka, source: k, from: {topics: [t]}, to: "t.{partition}", msg_id: "{topic}-{timestamp}/{offset}"}
      - {name: amqp, source: r, from: {exchange: x, bindings: ["#"]}, to: "x.{rk}", msg_id: "x{timestamp}/{message_id}"}
"""


def _routes() -> dict[str, CompiledRoute]:
    config = load_config_text(MAPPING, "m.yaml", {})
    return {route.name: CompiledRoute.compile(service, route) for service, route in config.routes()}


def test_kafka_timestamp_is_the_records_milliseconds() -> None:
    message = SourceMessage(KafkaOrigin("t", 0, 5, key=None, timestamp_ms=1_700_000_000_123), b"v")
    assert _routes()["kafka"].map(message).msg_id == "t-1700000000123/5"


def test_amqp_timestamp_is_the_property_in_epoch_seconds() -> None:
    sent = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
    origin = AmqpOrigin("x", "a.b", properties={"timestamp": sent.replace(tzinfo=None), "message_id": "m"})
    assert _routes()["amqp"].map(SourceMessage(origin, b"v")).msg_id == f"x{int(sent.timestamp())}/m"
