"""Which places `dry-run --sample` reads, worked out from the mapping file (pure)."""

from __future__ import annotations

from bridge.brokers.kafka.sample import sample_topics
from bridge.brokers.rabbitmq.sample import sample_places
from bridge.config import load_config_text
from bridge.routing import ExchangeType

MAPPING = """
sources:
  kafka: {type: kafka, bootstrap_servers: ["k:9092"]}
  rabbit: {type: rabbitmq, url: "amqp://r/"}
services:
  svc:
    routes:
      - {name: a, source: kafka, from: {topics: [orders, gone]}, to: "a.{partition}"}
      - {name: b, source: kafka, from: {topic_pattern: "pay-.*"}, to: "b.{partition}"}
      - {name: c, source: rabbit, from: {exchange: ex, bindings: ["x.#"]}, to: "c.{rk}"}
      - {name: d, source: rabbit, from: {exchange: direct-ex, type: direct, bindings: [k1]}, to: "d.{rk}"}
      - {name: e, source: rabbit, from: {exchange: direct-ex, type: direct, bindings: [k2]}, to: "e.{rk}"}
      - {name: f, source: rabbit, from: {queue: s1, mode: stream}, to: "f"}
      - {name: g, source: rabbit, from: {queue: work}, to: "g.{rk}"}
"""


def test_kafka_topics_are_the_existing_ones_the_routes_read_patterns_matched_whole() -> None:
    config = load_config_text(MAPPING, "m.yaml", {})
    existing = ["orders", "pay-eu", "pay-eu.retry", "xpay-1", "__consumer_offsets", "other"]
    assert sample_topics("kafka", list(config.routes()), existing) == ["orders", "pay-eu", "pay-eu.retry"]


def test_rabbitmq_places_group_exchanges_and_leave_drained_queues_alone() -> None:
    config = load_config_text(MAPPING, "m.yaml", {})
    places = sample_places("rabbit", list(config.routes()))
    assert places.exchanges == {"ex": (ExchangeType.TOPIC, {"x.#"}), "direct-ex": (ExchangeType.DIRECT, {"k1", "k2"})}
    assert places.streams == {"s1"}
    assert places.queues == {"work": "svc/g"}
