"""`explain`: which routes take a given message, and exactly what each would publish.

It runs the same matching (`bridge.routing`) and mapping (`bridge.mapping`) code as the
live bridge, offline, so its answer is the bridge's behaviour rather than a description
of it. Routes that do not take the message are listed with the reason, because "why
didn't my message arrive" is the question people bring to this command.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.config.model import (
    BridgeConfig,
    FromKafka,
    FromRabbitMQ,
    KafkaSource,
    RabbitMQMode,
    RouteConfig,
)
from bridge.mapping import CompiledRoute, MappingError
from bridge.message import AmqpOrigin, KafkaOrigin, SourceMessage
from bridge.routing import ExchangeType, exchange_matches, kafka_topic_matches
from bridge.streams import streams_capturing


@dataclass(frozen=True, slots=True)
class RouteOutcome:
    """What one matching route would do with the message."""

    route: str
    source: str
    subject: str | None
    msg_id: str | None
    msg_id_strategy: str
    msg_id_reason: str
    headers: Mapping[str, str]
    size: int
    streams: tuple[str, ...]
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "source": self.source,
            "subject": self.subject,
            "msg_id": self.msg_id,
            "msg_id_strategy": self.msg_id_strategy,
            "msg_id_reason": self.msg_id_reason,
            "headers": dict(self.headers),
            "size": self.size,
            "streams": list(self.streams),
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Explanation:
    """Every route's verdict on one message."""

    message: str
    matches: list[RouteOutcome] = field(default_factory=list)
    misses: list[tuple[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "matches": [outcome.as_json() for outcome in self.matches],
            "misses": [{"route": route, "reason": reason} for route, reason in self.misses],
        }


def explain_amqp(
    config: BridgeConfig,
    *,
    exchange: str | None,
    routing_key: str,
    headers: Mapping[str, str] | None = None,
    queue: str | None = None,
    body: bytes = b"",
    properties: Mapping[str, Any] | None = None,
) -> Explanation:
    """Explain a RabbitMQ message published to `exchange` (or found in `queue`)."""
    header_items = tuple((headers or {}).items())
    where = f"exchange '{exchange}'" if exchange is not None else f"queue '{queue}'"
    explanation = Explanation(f"RabbitMQ message on {where} with routing key '{routing_key}'")
    for service, route in config.routes():
        if not isinstance(route.from_, FromRabbitMQ):
            continue
        name = f"{service}/{route.name}"
        reason = _amqp_miss_reason(route.from_, exchange, routing_key, dict(header_items), queue)
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
        explanation.matches.append(route_outcome(config, service, route, message))
    if not any(isinstance(route.from_, FromRabbitMQ) for _, route in config.routes()):
        explanation.misses.append(("*", "the mapping file has no RabbitMQ routes"))
    return explanation


def explain_kafka(
    config: BridgeConfig,
    *,
    topic: str,
    key: bytes | None = None,
    partition: int = 0,
    offset: int = 0,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = b"",
) -> Explanation:
    """Explain a Kafka record on `topic` (at `partition`/`offset`, 0/0 unless given)."""
    header_items = tuple((name, value.encode("utf-8")) for name, value in (headers or {}).items())
    explanation = Explanation(f"Kafka record on topic '{topic}' partition {partition} offset {offset}")
    for service, route in config.routes():
        if not isinstance(route.from_, FromKafka):
            continue
        name = f"{service}/{route.name}"
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
        explanation.matches.append(route_outcome(config, service, route, message))
    if not any(isinstance(route.from_, FromKafka) for _, route in config.routes()):
        explanation.misses.append(("*", "the mapping file has no Kafka routes"))
    return explanation


def _amqp_miss_reason(
    subscription: FromRabbitMQ,
    exchange: str | None,
    routing_key: str,
    headers: Mapping[str, str],
    queue: str | None,
) -> str | None:
    """None when the route takes the message, else why not, in the user's terms."""
    mode = subscription.effective_mode
    if mode is not RabbitMQMode.SHADOW:
        if queue is not None and queue == subscription.queue:
            return None
        if queue is not None:
            return f"consumes queue '{subscription.queue}', not '{queue}'"
        return (
            f"consumes queue '{subscription.queue}' ({mode} mode): which messages reach it depends on "
            "bindings on the broker; ask with --queue"
        )
    if queue is not None and exchange is None:
        return f"copies exchange '{subscription.exchange}' (shadow mode), not a queue"
    if exchange != subscription.exchange:
        return f"copies exchange '{subscription.exchange}', not '{exchange}'"
    if exchange_matches(subscription.type, subscription.bindings, subscription.arguments, routing_key, headers):
        return None
    if subscription.type is ExchangeType.HEADERS:
        return f"headers binding {dict(subscription.arguments)} does not match headers {dict(headers)}"
    keys = ", ".join(f"'{key}'" for key in subscription.bindings)
    return f"{subscription.type} binding key(s) {keys} do not match routing key '{routing_key}'"


def route_outcome(config: BridgeConfig, service: str, route: RouteConfig, message: SourceMessage) -> RouteOutcome:
    """What `run` would publish for this message on this route: the bridge's own mapping code,
    so explain, dry-run replays and samples can never disagree with a running bridge."""
    source = config.sources[route.source]
    cluster = source.cluster_name if isinstance(source, KafkaSource) else None
    compiled = CompiledRoute.compile(service, route, cluster)
    choice = compiled.msg_id_choice(message)
    try:
        outbound = compiled.map(message)
    except MappingError as error:
        return RouteOutcome(
            route=compiled.key,
            source=route.source,
            subject=None,
            msg_id=None,
            msg_id_strategy=choice.strategy,
            msg_id_reason=choice.reason,
            headers={},
            size=len(message.body or b""),
            streams=(),
            error=f"{error} (on_error: {route.on_error})",
        )
    streams = tuple(stream.name for stream in streams_capturing(outbound.subject, config.streams))
    return RouteOutcome(
        route=compiled.key,
        source=route.source,
        subject=outbound.subject,
        msg_id=outbound.msg_id,
        msg_id_strategy=choice.strategy,
        msg_id_reason=choice.reason,
        headers=outbound.headers,
        size=len(outbound.payload),
        streams=streams,
    )


def format_explanation(explanation: Explanation) -> str:
    """The human-readable report `nats-bridge explain` prints."""
    lines = [explanation.message, ""]
    if not explanation.matches:
        lines.append("No route takes this message.")
    for outcome in explanation.matches:
        lines.append(f"route {outcome.route}  (source '{outcome.source}')")
        if outcome.error is not None:
            lines.append(f"  cannot be mapped: {outcome.error}")
            lines.append("")
            continue
        if outcome.streams:
            stream_note = ", ".join(outcome.streams)
            if len(outcome.streams) > 1:
                stream_note += "  (more than one stream captures it: JetStream will refuse it)"
        else:
            stream_note = "none declared in this file captures it"
        lines += [
            f"  subject      {outcome.subject}",
            f"  stream       {stream_note}",
            f"  Nats-Msg-Id  {outcome.msg_id}",
            f"               strategy {outcome.msg_id_strategy}: {outcome.msg_id_reason}",
            f"  size         {outcome.size} bytes",
            "  headers",
        ]
        width = max((len(name) for name in outcome.headers), default=0)
        lines += [f"    {name.ljust(width)}  {value}" for name, value in outcome.headers.items()]
        lines.append("")
    if explanation.misses:
        lines.append("Routes that do not take it:")
        lines += [f"  {route}: {reason}" for route, reason in explanation.misses]
    return "\n".join(lines).rstrip() + "\n"
