"""Explain a RabbitMQ message or a Kafka record: which routes take it, and why the others do not."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.config.model import BridgeConfig
from bridge.config.routes import FromKafka, FromRabbitMQ, RabbitMQMode
from bridge.decide import DEFAULT_MAX_PAYLOAD
from bridge.explain.legacy import legacy_miss_reason, legacy_routing, mismatches_of
from bridge.explain.outcome import amqp_miss_reason, route_outcome
from bridge.explain.types import Definitions, Explanation
from bridge.message import AmqpOrigin, KafkaOrigin, SourceMessage
from bridge.plan import Plan, compile_plan
from bridge.routing import kafka_topic_matches


def explain_amqp(
    mapping: Plan | BridgeConfig,
    *,
    exchange: str | None,
    routing_key: str,
    headers: Mapping[str, str] | None = None,
    queue: str | None = None,
    body: bytes = b"",
    properties: Mapping[str, Any] | None = None,
    definitions: Definitions | None = None,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
) -> Explanation:
    """Explain a RabbitMQ message published to `exchange` (or found in `queue`); with `definitions`,
    also where RabbitMQ sends it and where that and the mapping disagree (module docstring).
    `mapping` is a compiled Plan, or a config compiled on the way in."""
    plan = compile_plan(mapping)
    config = plan.config
    header_items = tuple((headers or {}).items())
    where = f"exchange '{exchange}'" if exchange is not None else f"queue '{queue}'"
    legacy = None
    if definitions is not None and exchange is not None:
        legacy = legacy_routing(config, definitions, exchange, routing_key, dict(header_items))
    explanation = Explanation(f"RabbitMQ message on {where} with routing key '{routing_key}'", legacy=legacy)
    for compiled in plan:
        route = compiled.config
        if not isinstance(route.from_, FromRabbitMQ):
            continue
        name = compiled.key
        if legacy is not None and definitions is not None:
            reason = legacy_miss_reason(
                config, compiled.service, route, name, legacy.routed, routing_key, dict(header_items)
            )
        else:
            reason = amqp_miss_reason(route.from_, exchange, routing_key, dict(header_items), queue)
        if reason is not None:
            explanation.misses.append((name, reason))
            continue
        origin = AmqpOrigin(
            exchange=exchange or "",
            routing_key=routing_key,
            queue=queue or route.from_.queue,
            properties=dict(properties or {}),
            stream_offset=0 if route.from_.effective_mode is RabbitMQMode.STREAM else None,
        )
        message = SourceMessage(origin=origin, body=body, headers=header_items)
        explanation.matches.append(route_outcome(compiled, message, plan.streams, max_payload=max_payload))
    if not any(isinstance(route.config.from_, FromRabbitMQ) for route in plan):
        explanation.misses.append(("*", "the mapping file has no RabbitMQ routes"))
    if legacy is not None and definitions is not None:
        explanation.mismatches.extend(mismatches_of(config, definitions, legacy, explanation.matches))
    return explanation


def explain_kafka(
    mapping: Plan | BridgeConfig,
    *,
    topic: str,
    key: bytes | None = None,
    partition: int = 0,
    offset: int = 0,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = b"",
    max_payload: int = DEFAULT_MAX_PAYLOAD,
) -> Explanation:
    """Explain a Kafka record on `topic` (at `partition`/`offset`, 0/0 unless given); `mapping`
    is a compiled Plan, or a config compiled on the way in."""
    plan = compile_plan(mapping)
    header_items = tuple((name, value.encode("utf-8")) for name, value in (headers or {}).items())
    explanation = Explanation(f"Kafka record on topic '{topic}' partition {partition} offset {offset}")
    for compiled in plan:
        route = compiled.config
        if not isinstance(route.from_, FromKafka):
            continue
        name = compiled.key
        subscription = route.from_
        if not kafka_topic_matches(topic, subscription.topics, subscription.topic_pattern):
            wanted = (
                f"topics {subscription.topics}"
                if subscription.topics
                else f"topic_pattern '{subscription.topic_pattern}' (must match the whole name)"
            )
            explanation.misses.append((name, f"reads {wanted}, not '{topic}'"))
            continue
        origin = KafkaOrigin(topic=topic, partition=partition, offset=offset, key=key)
        message = SourceMessage(origin=origin, body=body, headers=header_items)
        explanation.matches.append(route_outcome(compiled, message, plan.streams, max_payload=max_payload))
    if not any(isinstance(route.config.from_, FromKafka) for route in plan):
        explanation.misses.append(("*", "the mapping file has no Kafka routes"))
    return explanation
