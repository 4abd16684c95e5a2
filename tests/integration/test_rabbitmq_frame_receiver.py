"""A connection opened by the bridge reads its frames with BufferedFrameReceiver, and messages of
every size (empty, small, larger than a frame) come through it with their bodies and properties
exactly as published."""

from __future__ import annotations

import asyncio
import datetime
import random
from typing import Any, cast

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from pydantic import SecretStr

from bridge.brokers.rabbitmq.client import open_connection
from bridge.brokers.rabbitmq.frames import BufferedFrameReceiver
from bridge.brokers.rabbitmq.source import RabbitMQRouteSource
from bridge.config.routes import FromRabbitMQ, RabbitMQMode
from bridge.config.sources import RabbitMQSource
from bridge.message import AmqpOrigin
from bridge.sources.base import Received

pytestmark = [pytest.mark.rabbitmq]

MESSAGES = 2000
LARGE = 300 * 1024  # over RabbitMQ's frame_max (128 KiB): three body frames


def frame_receiver(connection: AbstractConnection) -> Any:
    """The receiver aiormq's connection reads with: a local of its reader task (aiormq keeps it nowhere else)."""
    amqp: Any = connection.transport.connection  # aio-pika's transport, then aiormq's connection
    coroutine = amqp._reader_task.task.get_coro()
    assert coroutine.cr_frame is not None, "the connection's reader task is not running"
    return coroutine.cr_frame.f_locals["frame_receiver"]


def body(number: int) -> bytes:
    if number % 50 == 7:
        return random.Random(number).randbytes(LARGE)
    return b"" if number % 3 == 0 else random.Random(number).randbytes(100)


def properties(number: int) -> dict[str, Any]:
    return {
        "content_type": "application/octet-stream",
        "content_encoding": "identity",
        "headers": {
            "number": number,
            "name": f"message-{number}",
            "nested": {"list": [number, "x", {"deep": True}], "ratio": 0.25},
            "when": datetime.datetime(2026, 12, 5, 20, 0, number % 60, tzinfo=datetime.UTC),
        },
        "delivery_mode": aio_pika.DeliveryMode.PERSISTENT,
        "priority": number % 10,
        "correlation_id": f"corr-{number}",
        "reply_to": "replies",
        "expiration": 600,
        "message_id": f"id-{number}",
        "timestamp": datetime.datetime(2026, 12, 5, 20, number % 60, 0, tzinfo=datetime.UTC),
        "type": "frames.test",
        "app_id": "test_rabbitmq_frames",
    }


def seen(message: AbstractIncomingMessage) -> dict[str, Any]:
    return {
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "headers": message.headers,
        "delivery_mode": message.delivery_mode,
        "priority": message.priority,
        "correlation_id": message.correlation_id,
        "reply_to": message.reply_to,
        "expiration": message.expiration,
        "message_id": message.message_id,
        "timestamp": message.timestamp,
        "type": message.type,
        "app_id": message.app_id,
    }


def expected(number: int) -> dict[str, Any]:
    sent = properties(number)
    # aio-pika sends the expiration in milliseconds ("600000") and reads it back in seconds.
    return {**sent, "expiration": float(sent["expiration"])}


async def test_messages_of_every_size_round_trip_through_the_buffered_receiver(
    rabbit_vhost_url: str, unique_name: str
) -> None:
    source = RabbitMQSource(type="rabbitmq", url=SecretStr(rabbit_vhost_url))
    connection = await open_connection(source, connect_timeout=10, name=f"frames-{unique_name}")
    try:
        assert isinstance(frame_receiver(connection), BufferedFrameReceiver)
        channel = await connection.channel()
        queue = await channel.declare_queue(unique_name, auto_delete=True)
        for number in range(MESSAGES):
            await channel.default_exchange.publish(
                aio_pika.Message(body(number), **properties(number)), routing_key=queue.name
            )

        consumer = await connection.channel()
        await consumer.set_qos(prefetch_count=200)
        received: list[AbstractIncomingMessage] = []
        done = asyncio.Event()

        async def take(message: AbstractIncomingMessage) -> None:
            received.append(message)
            await message.ack()
            if len(received) == MESSAGES:
                done.set()

        await (await consumer.get_queue(unique_name)).consume(take)
        await asyncio.wait_for(done.wait(), 60)

        assert [message.body for message in received] == [body(number) for number in range(MESSAGES)]
        for number, message in enumerate(received):
            assert seen(message) == expected(number), number
        assert isinstance(frame_receiver(connection), BufferedFrameReceiver)  # the same one, still reading
    finally:
        await connection.close()


async def test_a_route_sources_deliveries_come_whole_from_the_receivers_buffer(
    rabbit_vhost_url: str, unique_name: str
) -> None:
    """The source's consumer channel is registered with its connection's receiver (direct.py), most
    deliveries take that way, and every one arrives in order with its body and properties."""
    source = RabbitMQSource(type="rabbitmq", url=SecretStr(rabbit_vhost_url))
    publisher = await open_connection(source, connect_timeout=10, name=f"frames-pub-{unique_name}")
    route = RabbitMQRouteSource("frames", source, FromRabbitMQ(queue=unique_name, mode=RabbitMQMode.QUEUE), unique_name)
    taken = 0
    on_direct = route._on_direct

    def counted(*fields: Any) -> None:
        nonlocal taken
        taken += 1
        on_direct(*fields)

    route._on_direct = counted  # type: ignore[method-assign]
    try:
        channel = await publisher.channel()
        queue = await channel.declare_queue(unique_name)
        for number in range(MESSAGES):
            await channel.default_exchange.publish(
                aio_pika.Message(body(number), **properties(number)), routing_key=queue.name
            )
        await route.start(cast(Any, None))  # queue mode asks nothing of its lane owner at start
        assert route._connection is not None
        assert route._underlay is not None
        assert route._underlay.number in frame_receiver(route._connection)._direct
        received: list[Received] = []
        async with asyncio.timeout(60):
            while len(received) < MESSAGES:
                received += await route.fetch(500, 1.0)
                if received:  # at `prefetch` unacknowledged deliveries RabbitMQ stops sending
                    await route.settle({route.lane: received[-1].position})
        assert [item.position for item in received] == list(range(1, MESSAGES + 1))
        for number, item in enumerate(received):
            assert item.message is not None
            assert item.message.body == body(number), number
            origin = item.message.origin
            assert isinstance(origin, AmqpOrigin)
            assert origin.properties["message_id"] == f"id-{number}"
            assert origin.properties["expiration"] == "600000"
            assert dict(item.message.headers) == properties(number)["headers"]
        assert taken > MESSAGES // 2, taken  # the rest: split across reads, the frame-by-frame way
    finally:
        await route.close()
        cleanup = await publisher.channel()
        await cleanup.queue_delete(unique_name)
        await publisher.close()
