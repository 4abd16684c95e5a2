"""A legacy queue, read from outside for a handoff: how many messages wait, whether anyone still
consumes it, and the message at its head (taken and put straight back).

What is still in a queue is exactly what its consumers have not processed, so its head is the
first message a JetStream consumer taking over must deliver. Reading the head takes it with
basic.get and puts it back with basic.nack(requeue): RabbitMQ returns it to the head, flagged
redelivered (a quorum queue also counts one delivery towards x-delivery-limit).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import aiormq
from aiormq.abc import DeliveredMessage

from bridge.brokers.rabbitmq.client import open_connection, reply_text
from bridge.brokers.rabbitmq.records import amqp_message
from bridge.config.sources import RabbitMQSource
from bridge.errors import BridgeError
from bridge.message import SourceMessage

QUEUE_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class QueueState:
    """The queue now: `depth` ready messages, `consumers` attached, and its head (None: empty)."""

    queue: str
    depth: int
    consumers: int
    head: SourceMessage | None


async def legacy_queue(source: RabbitMQSource, queue: str, *, peek: bool = True) -> QueueState:
    """Read `queue` (and with `peek`, its head); BridgeError when it cannot be read."""
    connection = await open_connection(source, connect_timeout=QUEUE_TIMEOUT, name="nats-bridge handoff")
    try:
        channel = await connection.channel()
        raw = await channel.get_underlay_channel()
        try:
            declared = await raw.queue_declare(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise BridgeError(f"queue '{queue}' does not exist") from None
        head = None
        if peek and declared.message_count and not declared.consumer_count:
            delivered: DeliveredMessage = await raw.basic_get(queue, no_ack=False, timeout=QUEUE_TIMEOUT)
            if delivered.delivery_tag is not None:
                head = amqp_message(delivered, queue, dict(delivered.header.properties.headers or {}), None)
                # Given back by closing the channel, not by basic.nack: a quorum queue puts a
                # nack'ed message at its tail (RabbitMQ 3.10-3.13), so the next look would see
                # another head; an unacked message of a closed channel goes back to the head.
                await channel.close()
        return QueueState(queue, int(declared.message_count or 0), int(declared.consumer_count or 0), head)
    except aiormq.exceptions.AMQPError as error:
        raise BridgeError(f"queue '{queue}': {reply_text(error)}") from None
    finally:
        with contextlib.suppress(aiormq.exceptions.AMQPError, OSError, RuntimeError):
            await connection.close()
