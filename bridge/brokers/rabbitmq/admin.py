"""Read-only and clean-up requests on RabbitMQ for a route, made from outside any running bridge:
a queue's depth (a passive declare) and the deletion of the bridge's own shadow queue."""

from __future__ import annotations

import contextlib
from typing import Any

import aiormq

from bridge.brokers.base import Backlog
from bridge.brokers.rabbitmq.client import open_connection
from bridge.config.routes import FromRabbitMQ
from bridge.config.sources import RabbitMQSource
from bridge.errors import RabbitMQConnectError
from bridge.routing import ExchangeType

BACKLOG_TIMEOUT = 10.0
RETIRE_TIMEOUT = 15.0


async def queue_depth(source: RabbitMQSource, queue: str) -> Backlog:
    """The queue's ready messages."""
    try:
        connection = await open_connection(source, connect_timeout=BACKLOG_TIMEOUT)
    except RabbitMQConnectError as error:
        return Backlog(error=str(error))
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return Backlog({queue: int(declared.declaration_result.message_count or 0)})
    except aiormq.exceptions.ChannelNotFoundEntity:
        return Backlog(note=f"queue '{queue}' does not exist")
    except (aiormq.exceptions.AMQPError, ConnectionError) as error:
        return Backlog(error=f"queue '{queue}': {error}")
    finally:
        with contextlib.suppress(aiormq.exceptions.AMQPError, OSError, RuntimeError):
            await connection.close()


def shadow_bindings(subscription: FromRabbitMQ) -> list[tuple[str, dict[str, Any] | None]]:
    """(routing key, arguments) of each binding the bridge declared for its shadow queue."""
    if subscription.type is ExchangeType.HEADERS:
        return [("", dict(subscription.arguments))]
    if subscription.type is ExchangeType.FANOUT:
        return [("", None)]
    return [(key, None) for key in subscription.bindings]


async def delete_shadow_queue(source: RabbitMQSource, queue: str, subscription: FromRabbitMQ) -> str:
    """Unbind first, so nothing is routed to the queue any more (RabbitMQ 3.10 closes the
    connection of a publisher whose message is routed to a quorum queue being deleted, which
    made a reverse route write a message twice); then delete it if it is empty: a message in it
    arrived after the service was reported drained and is still the legacy side's."""
    quorum = subscription.queue_type == "quorum"
    try:
        connection = await open_connection(source, connect_timeout=RETIRE_TIMEOUT)
    except RabbitMQConnectError as error:
        return f"could not delete shadow queue '{queue}': {error}"
    try:
        channel = await connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return f"shadow queue '{queue}' was already gone"
        assert subscription.exchange is not None  # shadow mode has one
        for key, arguments in shadow_bindings(subscription):
            await declared.unbind(subscription.exchange, routing_key=key, arguments=arguments)
        declared = await channel.declare_queue(queue, passive=True)
        waiting = declared.declaration_result.message_count or 0
        if waiting:
            return f"kept shadow queue '{queue}': it still holds {waiting} message(s) that arrived after the drain"
        channel = await connection.channel()
        # Quorum queues refuse if_empty (RabbitMQ 3.x): there the depth read just above is the
        # check, and all instances stopped consuming before the clean-up started.
        await channel.queue_delete(queue, if_empty=not quorum)
    except (aiormq.exceptions.AMQPError, ConnectionError) as error:
        return f"could not delete shadow queue '{queue}': {error}"
    else:
        return f"deleted shadow queue '{queue}'"
    finally:
        with contextlib.suppress(aiormq.exceptions.AMQPError, OSError, RuntimeError):
            await connection.close()
