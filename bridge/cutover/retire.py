"""What retiring a service removes: only what the bridge itself created.

- A shadow queue (the bridge's own copy of an exchange) is deleted, but only when empty:
  a message in it arrived after the service was reported drained and is still the legacy
  side's, so it is kept and named instead.
- A Kafka consumer group's offsets (the bridge's own group) are deleted only when asked
  (`cutover --to retired --delete-offsets`), together with the route's checkpoints: a group
  later recreated under that name must not inherit "already stored" positions.
- Queues a route drains and stream queues it reads belong to the legacy side: left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiormq
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.admin import DeleteGroupsRequest

from bridge.config.model import (
    BridgeConfig,
    FromKafka,
    FromRabbitMQ,
    KafkaSource,
    RabbitMQMode,
    RabbitMQSource,
    RouteConfig,
)
from bridge.routing import ExchangeType
from bridge.sources.kafka import default_group, kafka_client_options
from bridge.sources.rabbitmq import RabbitMQConnectError, open_connection, shadow_queue_name

log = logging.getLogger(__name__)

GROUP_NOT_EMPTY = 68  # Kafka error code: members (another bridge instance) are still in the group
TIMEOUT = 15.0


async def retire_route(config: BridgeConfig, service: str, route: RouteConfig, *, delete_offsets: bool) -> str:
    """Remove what the bridge created for one route; a sentence saying what was done."""
    source = config.sources[route.source]
    subscription = route.from_
    if isinstance(subscription, FromRabbitMQ) and isinstance(source, RabbitMQSource):
        if subscription.effective_mode is not RabbitMQMode.SHADOW:
            return f"left {subscription.effective_mode} queue '{subscription.queue}' alone: it is the legacy side's"
        queue = subscription.queue or shadow_queue_name(service, route.name)
        return await _delete_shadow_queue(source, queue, subscription)
    assert isinstance(subscription, FromKafka)
    assert isinstance(source, KafkaSource)
    group = subscription.group or default_group(service, route.name)
    if not delete_offsets:
        return f"kept consumer group '{group}' and its offsets (retire with --delete-offsets to remove them)"
    return await _delete_group(source, group)


def _bindings(subscription: FromRabbitMQ) -> list[tuple[str, dict[str, Any] | None]]:
    """(routing key, arguments) of each binding the bridge declared for its shadow queue."""
    if subscription.type is ExchangeType.HEADERS:
        return [("", dict(subscription.arguments))]
    if subscription.type is ExchangeType.FANOUT:
        return [("", None)]
    return [(key, None) for key in subscription.bindings]


async def _delete_shadow_queue(source: RabbitMQSource, queue: str, subscription: FromRabbitMQ) -> str:
    """Unbind first, so nothing is routed to the queue any more (RabbitMQ 3.10 closes the
    connection of a publisher whose message is routed to a quorum queue being deleted, which
    made a reverse route write a message twice); then delete it if it is empty."""
    quorum = subscription.queue_type == "quorum"
    try:
        connection = await open_connection(source, connect_timeout=TIMEOUT)
    except RabbitMQConnectError as error:
        return f"could not delete shadow queue '{queue}': {error}"
    try:
        channel = await connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return f"shadow queue '{queue}' was already gone"
        assert subscription.exchange is not None  # shadow mode has one
        for key, arguments in _bindings(subscription):
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


async def _delete_group(source: KafkaSource, group: str, attempts: int = 10) -> str:
    """DeleteGroups (aiokafka's admin client has no call for it; the request is in its protocol
    module). Retried while other bridge instances are still leaving the group."""
    admin = AIOKafkaAdminClient(**kafka_client_options(source, client_suffix="-retire"))
    try:
        await asyncio.wait_for(admin.start(), TIMEOUT)
        for attempt in range(attempts):
            coordinator = await admin.find_coordinator(group)
            response = await admin._send_request(
                DeleteGroupsRequest([group]), coordinator
            )  # private: no public DeleteGroups
            ((_, code),) = response.results
            if code == 0:
                return f"deleted consumer group '{group}' and its offsets"
            if code == GROUP_NOT_EMPTY and attempt + 1 < attempts:
                await asyncio.sleep(2.0)
                continue
            error = for_code(code)
            return f"could not delete consumer group '{group}': {error.__name__}"
    except (KafkaError, OSError, TimeoutError) as error:
        return f"could not delete consumer group '{group}': {error or type(error).__name__}"
    finally:
        with contextlib.suppress(KafkaError, OSError, TimeoutError, RuntimeError):
            await admin.close()
    return f"could not delete consumer group '{group}'"
