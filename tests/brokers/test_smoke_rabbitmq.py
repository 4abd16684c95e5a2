"""RabbitMQ through the real broker: exchange, queue, binding, publish, get, ack, in a fresh vhost."""

from __future__ import annotations

import aio_pika


async def test_publish_get_ack(rabbit_vhost_url: str, unique_name: str) -> None:
    connection = await aio_pika.connect(rabbit_vhost_url, timeout=10)
    async with connection:
        channel = await connection.channel()  # publisher confirms on: publish returns once routed
        exchange = await channel.declare_exchange(f"{unique_name}.x", aio_pika.ExchangeType.TOPIC)
        queue = await channel.declare_queue(f"{unique_name}.q", durable=True)
        await queue.bind(exchange, routing_key="orders.#")

        await exchange.publish(
            aio_pika.Message(b"payload", headers={"x-source": "smoke"}, message_id="m-1"),
            routing_key="orders.eu.created",
        )
        message = await queue.get(timeout=10)
        assert message.body == b"payload"
        assert message.routing_key == "orders.eu.created"
        assert message.exchange == f"{unique_name}.x"
        assert message.message_id == "m-1"
        assert message.headers == {"x-source": "smoke"}
        assert not message.redelivered
        await message.ack()

        assert await queue.get(fail=False) is None
