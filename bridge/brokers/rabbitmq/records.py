"""A delivery as the pipeline sees it: one conversion for the bridge's source and for the
commands that read a queue themselves (dry-run's sample, verify, repair)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiormq.abc import DeliveredMessage

from bridge.message import AmqpOrigin, SourceMessage

# pamqp's property names -> the AMQP names used in AmqpOrigin.properties and headers.
_PROPERTY_NAMES = {
    "content_type": "content_type",
    "content_encoding": "content_encoding",
    "delivery_mode": "delivery_mode",
    "priority": "priority",
    "correlation_id": "correlation_id",
    "reply_to": "reply_to",
    "expiration": "expiration",
    "message_id": "message_id",
    "timestamp": "timestamp",
    "message_type": "type",
    "user_id": "user_id",
    "app_id": "app_id",
}
STREAM_OFFSET_HEADER = "x-stream-offset"


def stream_offset_of(delivered: DeliveredMessage) -> tuple[int | None, dict[str, Any]]:
    """A stream delivery's offset, and its headers without the offset header RabbitMQ adds."""
    headers = dict(delivered.header.properties.headers or {})
    raw = headers.pop(STREAM_OFFSET_HEADER, None)
    return (raw if isinstance(raw, int) else None), headers


def amqp_message(
    delivered: DeliveredMessage, queue: str | None, headers: Mapping[str, Any], stream_offset: int | None
) -> SourceMessage:
    """A delivery as the pipeline sees it: the AMQP properties under aio-pika's names."""
    delivery = delivered.delivery
    properties = delivered.header.properties
    values: dict[str, Any] = {}
    for attribute, name in _PROPERTY_NAMES.items():
        value = getattr(properties, attribute, None)
        if value is not None:
            values[name] = value
    origin = AmqpOrigin(
        exchange=delivery.exchange or "",  # type: ignore[union-attr]
        routing_key=delivery.routing_key or "",  # type: ignore[union-attr]
        queue=queue,
        properties=values,
        redelivered=bool(delivery.redelivered),  # type: ignore[union-attr]
        stream_offset=stream_offset,
    )
    return SourceMessage(origin, delivered.body, tuple(headers.items()))


def direct_message(
    exchange: str,
    routing_key: str,
    queue: str | None,
    properties: dict[str, Any],
    headers: Mapping[str, Any] | None,
    redelivered: bool,
    body: bytes,
) -> SourceMessage:
    """What `amqp_message` makes, from the fields direct.py decodes (the properties already under
    aio-pika's names, only those present): no DeliveredMessage or pamqp objects on the way."""
    origin = AmqpOrigin(exchange, routing_key, queue, properties, redelivered, None)
    return SourceMessage(origin, body, tuple(headers.items()) if headers else ())
