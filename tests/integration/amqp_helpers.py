"""AMQP test helpers that go below aio-pika.

Publishing without a message_id: aiormq's `Channel.basic_publish` (under every aio-pika publish)
gives each message that has no message_id a random one (`content_header.properties.message_id =
rnd_uuid.hex`), so a producer published that way never exercises the bridge's content-hash
Msg-Id. `publish_without_message_id` writes the three frames of a basic.publish itself, on an
aiormq channel's write queue, with the properties exactly as given.
"""

from __future__ import annotations

from collections.abc import Iterable

import aio_pika
import aiormq
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader


async def publish_without_message_id(
    channel: aio_pika.abc.AbstractChannel,
    exchange: str,
    routing_key: str,
    bodies: Iterable[bytes],
    properties: spec.Basic.Properties | None = None,
) -> int:
    """Publish each body to `exchange` with `routing_key` and `properties` (default: persistent,
    nothing else) as they are: no message_id unless `properties` has one. Returns the count.

    `channel` must be opened with `publisher_confirms=False`: these publishes bypass aiormq's
    delivery-tag bookkeeping, so confirms for them would not match its own. Instead, the call
    ends with a synchronous basic.qos on the same channel: RabbitMQ handles a channel's methods
    in order, so when it answers, every publish before it has been routed.
    """
    underlay = await channel.get_underlay_channel()
    assert isinstance(underlay, aiormq.Channel)
    if underlay.publisher_confirms:
        raise ValueError("publish_without_message_id needs a channel with publisher_confirms=False")
    properties = properties or spec.Basic.Properties(delivery_mode=2)
    sent = 0
    for body in bodies:
        if len(body) >= underlay.max_content_size:
            raise ValueError(f"a body of {len(body)} bytes needs several frames: keep test bodies small")
        frames = [
            spec.Basic.Publish(exchange=exchange, routing_key=routing_key),
            ContentHeader(properties=properties, body_size=len(body)),
            ContentBody(body),
        ]
        await underlay.write_queue.put(ChannelFrame.marshall(underlay.number, frames))
        sent += 1
    await underlay.basic_qos(prefetch_count=0)
    return sent
