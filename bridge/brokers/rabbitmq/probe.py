"""`dry-run --connect` on RabbitMQ: connect (not robust: no reconnect), then per route a *passive*
declare of the exchange (shadow) or queue (queue/stream mode), each on its own channel because a
404 closes the channel. A passive declare never creates anything. The shadow queue is looked up
the same way, only to say whether `run` will declare it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import aio_pika
import aiormq

from bridge.brokers.base import Level, Look
from bridge.brokers.rabbitmq.client import amqp_url, open_connection
from bridge.brokers.rabbitmq.names import shadow_queue_name
from bridge.config.routes import FromRabbitMQ, RabbitMQMode, RouteConfig
from bridge.config.sources import RabbitMQSource
from bridge.errors import RabbitMQConnectError
from bridge.logs import redact_url


async def probe_rabbitmq(
    name: str,
    source: RabbitMQSource,
    routes: Sequence[tuple[str, RouteConfig]],
    *,
    seconds: float,
    scrub: Callable[[str], str],
) -> list[Look]:
    """Connect to one RabbitMQ source and passively look up what its routes read."""
    shown = redact_url(amqp_url(source))
    subject = f"rabbitmq source '{name}'"
    try:
        connection = await open_connection(source, connect_timeout=seconds)
    except RabbitMQConnectError as error:
        text = scrub(error.reason)
        return [Look(Level.ERROR, "connect", subject, f"cannot connect to RabbitMQ at {error.where}: {text}")]
    looks = [Look(Level.INFO, "connect", subject, f"reachable at {shown}")]
    try:
        for service, route in routes:
            if route.source != name or not isinstance(route.from_, FromRabbitMQ):
                continue
            label = f"{service}/{route.name}"
            looks += await _probe_route(connection, label, service, route.name, route.from_, seconds)
    finally:
        with contextlib.suppress(aiormq.exceptions.AMQPError, OSError, RuntimeError):
            await connection.close()
    return looks


async def _exists(connection: aio_pika.abc.AbstractConnection, kind: str, name: str) -> bool | str:
    """True/False for a passive declare of an exchange or queue; a string on another error."""
    channel = await connection.channel()
    try:
        if kind == "exchange":
            await channel.declare_exchange(name, passive=True)
        else:
            await channel.declare_queue(name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    except (aiormq.exceptions.AMQPError, TimeoutError) as error:
        return str(error) or type(error).__name__
    finally:
        with contextlib.suppress(aiormq.exceptions.AMQPError, OSError, RuntimeError):
            await channel.close()
    return True


async def _probe_route(
    connection: aio_pika.abc.AbstractConnection,
    label: str,
    service: str,
    route: str,
    subscription: FromRabbitMQ,
    seconds: float,
) -> list[Look]:
    looks = []
    mode = subscription.effective_mode
    if mode is RabbitMQMode.SHADOW and subscription.exchange is not None:
        wanted = [("exchange", subscription.exchange, True)]
        wanted.append(("queue", subscription.queue or shadow_queue_name(service, route), False))
    else:
        wanted = [("queue", subscription.queue or "", True)]
    for kind, name, required in wanted:
        found = await asyncio.wait_for(_exists(connection, kind, name), seconds)
        if isinstance(found, str):
            looks.append(Look(Level.ERROR, "exists", label, f"{kind} '{name}': {found}"))
        elif not found and required:
            looks.append(Look(Level.ERROR, "exists", label, f"{kind} '{name}' does not exist"))
        elif not found:
            looks.append(
                Look(Level.INFO, "exists", label, f"shadow queue '{name}' does not exist yet: `run` declares it")
            )
        else:
            note = "exists" if required else "exists (the bridge's own shadow queue)"
            looks.append(Look(Level.INFO, "exists", label, f"{kind} '{name}' {note}"))
    return looks
