"""What a route's RabbitMQ source declares before it consumes, and what it must find instead.

A shadow route declares its own durable queue and binds it to the route's exchange as a legacy
consumer's queue would be bound, so it gets a copy of every matching message. A queue or stream
route only checks that its queue exists (a passive declare): the bridge never creates a legacy
queue, which would hide a misspelt name behind an empty queue nobody publishes to.
"""

from __future__ import annotations

from typing import Any

from aio_pika.abc import AbstractChannel

from bridge.config.routes import FromRabbitMQ, RabbitMQMode
from bridge.routing import ExchangeType


async def declare_route_queue(channel: AbstractChannel, subscription: FromRabbitMQ, queue: str) -> None:
    """Declare (shadow) or find (queue, stream) the queue the route consumes."""
    if subscription.effective_mode is not RabbitMQMode.SHADOW:
        await channel.declare_queue(queue, passive=True)  # must exist: never create a legacy queue
        return
    assert subscription.exchange is not None
    exchange = await channel.get_exchange(subscription.exchange, ensure=True)
    arguments: dict[str, Any] = {"x-queue-type": "quorum"} if subscription.queue_type == "quorum" else {}
    if subscription.single_active_consumer:
        arguments["x-single-active-consumer"] = True
    declared = await channel.declare_queue(queue, durable=True, arguments=arguments)
    if subscription.type is ExchangeType.HEADERS:
        await declared.bind(exchange, routing_key="", arguments=dict(subscription.arguments))
    elif subscription.type is ExchangeType.FANOUT:
        await declared.bind(exchange, routing_key="")
    else:
        for key in subscription.bindings:
            await declared.bind(exchange, routing_key=key)
