"""`dry-run --sample` on RabbitMQ: a copy of what each exchange routes while it listens, and the
last messages of each stream queue; a queue a route drains is left alone (bridge.dryrun.sample
says why each broker is read the way it is)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq
from aiormq.abc import DeliveredMessage

from bridge.brokers.base import Level, Look, SampledMessage, SampleRead
from bridge.brokers.rabbitmq.client import open_connection
from bridge.brokers.rabbitmq.records import STREAM_OFFSET_HEADER, amqp_message, stream_offset_of
from bridge.config.routes import FromRabbitMQ, RabbitMQMode, RouteConfig
from bridge.config.sources import RabbitMQSource
from bridge.errors import RabbitMQConnectError
from bridge.routing import ExchangeType

CHECK = "sample"


@dataclass(slots=True)
class Places:
    """What one RabbitMQ source's routes read: exchanges (with type and the direct keys), stream
    queues, and the queues that are left alone."""

    exchanges: dict[str, tuple[ExchangeType, set[str]]] = field(default_factory=dict)
    streams: set[str] = field(default_factory=set)
    queues: dict[str, str] = field(default_factory=dict)  # queue -> a route reading it


def sample_places(source_name: str, routes: Sequence[tuple[str, RouteConfig]]) -> Places:
    places = Places()
    for service, route in routes:
        subscription = route.from_
        if route.source != source_name or not isinstance(subscription, FromRabbitMQ):
            continue
        mode = subscription.effective_mode
        if mode is RabbitMQMode.SHADOW and subscription.exchange is not None:
            _, keys = places.exchanges.setdefault(subscription.exchange, (subscription.type, set()))
            keys.update(subscription.bindings)
        elif mode is RabbitMQMode.STREAM and subscription.queue is not None:
            places.streams.add(subscription.queue)
        elif subscription.queue is not None:
            places.queues.setdefault(subscription.queue, f"{service}/{route.name}")
    return places


async def sample_rabbitmq(
    name: str,
    source: RabbitMQSource,
    routes: Sequence[tuple[str, RouteConfig]],
    *,
    count: int,
    duration: float,
    seconds: float,
) -> SampleRead:
    """Copies of what each exchange routes for `duration`, and the last messages of each stream."""
    sample = SampleRead()
    places = sample_places(name, routes)
    for queue, route in sorted(places.queues.items()):
        sample.looks.append(
            Look(
                Level.INFO,
                CHECK,
                route,
                f"queue '{queue}' not sampled: reading it would take messages from its consumers; "
                "record some and use --input",
            )
        )
    if not places.exchanges and not places.streams:
        return sample
    try:
        connection = await open_connection(source, connect_timeout=seconds)
    except RabbitMQConnectError as error:
        subject = f"rabbitmq source '{name}'"
        message = f"cannot connect to RabbitMQ at {error.where}: {error.reason}"
        sample.looks.append(Look(Level.ERROR, CHECK, subject, message))
        return sample
    try:
        jobs = [
            _sample_exchange(connection, exchange, kind, keys, count, duration)
            for exchange, (kind, keys) in sorted(places.exchanges.items())
        ]
        jobs += [_sample_stream(connection, queue, count, duration) for queue in sorted(places.streams)]
        for result in await asyncio.gather(*jobs):
            sample.messages += result.messages
            sample.looks += result.looks
    finally:
        with contextlib.suppress(aiormq.exceptions.AMQPError, OSError, RuntimeError):
            await connection.close()
    return sample


async def _collect(
    channel: aio_pika.abc.AbstractChannel,
    queue: str,
    count: int,
    duration: float,
    arguments: dict[str, Any] | None = None,
    *,
    until_offset: int | None = None,
) -> list[DeliveredMessage]:
    """Consume up to `count` deliveries from `queue` within `duration` (stream queues: also
    stop at `until_offset`), then cancel the consumer."""
    underlay = await channel.get_underlay_channel()
    got: list[DeliveredMessage] = []
    done = asyncio.Event()

    async def on_delivery(delivered: DeliveredMessage) -> None:
        if done.is_set():
            return
        got.append(delivered)
        if until_offset is not None:
            offset, _ = stream_offset_of(delivered)
            if offset is not None and offset >= until_offset:
                done.set()
        if len(got) >= count and until_offset is None:
            done.set()
        if until_offset is not None:
            # A stream consumer needs acks for credit; they remove nothing.
            await underlay.basic_ack(delivered.delivery_tag or 0)

    no_ack = until_offset is None
    consume = await underlay.basic_consume(queue, on_delivery, no_ack=no_ack, arguments=arguments or {})
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), duration)
    done.set()
    with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError):
        await underlay.basic_cancel(consume.consumer_tag or "")
    return got


async def _sample_exchange(
    connection: aio_pika.abc.AbstractConnection,
    exchange: str,
    kind: ExchangeType,
    keys: set[str],
    count: int,
    duration: float,
) -> SampleRead:
    sample = SampleRead()
    subject = f"exchange '{exchange}'"
    channel = await connection.channel(publisher_confirms=False)
    try:
        # Server-named, exclusive, auto-delete: nobody else can use it and it is gone when
        # this connection closes, whatever happens to this process.
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        bindings: list[tuple[str, dict[str, Any] | None]]
        if kind is ExchangeType.TOPIC:
            bindings = [("#", None)]
        elif kind is ExchangeType.FANOUT:
            bindings = [("", None)]
        elif kind is ExchangeType.HEADERS:
            bindings = [("", {"x-match": "all"})]
        else:
            bindings = [(key, None) for key in sorted(keys)]
        for key, arguments in bindings:
            await queue.bind(exchange, routing_key=key, arguments=arguments)
        delivered = await _collect(channel, queue.name, count, duration)
    except aiormq.exceptions.ChannelNotFoundEntity:
        sample.looks.append(Look(Level.ERROR, CHECK, subject, f"exchange '{exchange}' does not exist"))
        return sample
    except (aiormq.exceptions.AMQPError, ConnectionError) as error:
        sample.looks.append(Look(Level.ERROR, CHECK, subject, f"cannot sample: {error}"))
        return sample
    finally:
        if not channel.is_closed:
            with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError):
                await channel.close()
    for item in delivered:
        message = amqp_message(item, None, dict(item.header.properties.headers or {}), None)
        where = f"amqp {exchange} '{item.delivery.routing_key or ''}'"  # type: ignore[union-attr]
        sample.messages.append(SampledMessage(where, message, exact=False))
    scope = "" if kind is not ExchangeType.DIRECT else f" (direct: only keys {', '.join(sorted(keys))})"
    sample.looks.append(
        Look(
            Level.INFO,
            CHECK,
            subject,
            f"{len(delivered)} message(s) copied in {duration:g}s by a temporary exclusive queue{scope}",
        )
    )
    return sample


async def _sample_stream(
    connection: aio_pika.abc.AbstractConnection, stream: str, count: int, duration: float
) -> SampleRead:
    """The last `count` messages of a stream queue: first its end (from the last chunk), then
    from `end - count + 1` up to that end."""
    sample = SampleRead()
    subject = f"stream queue '{stream}'"
    channel = await connection.channel(publisher_confirms=False)
    try:
        await channel.set_qos(prefetch_count=min(1000, max(10, count)))
        tail = await _collect(
            channel, stream, 1 << 30, min(duration, 2.0), {STREAM_OFFSET_HEADER: "last"}, until_offset=1 << 62
        )
        offsets = [offset for offset, _ in map(stream_offset_of, tail) if offset is not None]
        if not offsets:
            sample.looks.append(Look(Level.INFO, CHECK, subject, "the stream is empty"))
            return sample
        end = max(offsets)
        start = max(0, end - count + 1)
        delivered = await _collect(channel, stream, count, duration, {STREAM_OFFSET_HEADER: start}, until_offset=end)
    except aiormq.exceptions.ChannelNotFoundEntity:
        sample.looks.append(Look(Level.ERROR, CHECK, subject, f"queue '{stream}' does not exist"))
        return sample
    except (aiormq.exceptions.AMQPError, ConnectionError) as error:
        sample.looks.append(Look(Level.ERROR, CHECK, subject, f"cannot sample: {error}"))
        return sample
    finally:
        if not channel.is_closed:
            with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError):
                await channel.close()
    seen: set[int] = set()
    for item in delivered:
        offset, headers = stream_offset_of(item)
        # A stream consumer starts at its chunk's first message: drop what is before `start`.
        if offset is None or offset < start or offset > end or offset in seen:
            continue
        seen.add(offset)
        message = amqp_message(item, stream, headers, offset)
        sample.messages.append(SampledMessage(f"amqp stream {stream}@{offset}", message, exact=True))
    sample.looks.append(Look(Level.INFO, CHECK, subject, f"sampled offsets {start}..{end} ({len(seen)})"))
    return sample
