"""`handoff` for a RabbitMQ queue in the shadow phase, on real brokers: the bridge copied an
exchange into a stream while a legacy queue bound like it got its own copy; the legacy consumer
processed a prefix and stopped; the durable made by the handoff delivers exactly what is still in
the queue, from its head on (classic and quorum queues)."""

from __future__ import annotations

import textwrap
from collections import Counter

import aio_pika
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig
from test_rabbitmq_bridge import RunningBridge, count, queue_exists, until

from bridge.brokers.rabbitmq.queues import legacy_queue
from bridge.config import load_config_text
from bridge.config.sources import RabbitMQSource
from bridge.handoff.durable import HandoffRefusedError, position_queue_durable
from bridge.handoff.queue_plan import plan_queue_handoff
from bridge.plan import compile_plan

MESSAGES = 200


def _mapping(nats_url: str, amqp_url: str, stream: str) -> str:
    s = stream.lower()
    return textwrap.dedent(f"""\
        nats: {{servers: ["{nats_url}"]}}
        streams: [{{name: {stream}, subjects: ["{s}.>"]}}]
        sources:
          rabbit: {{type: rabbitmq, url: "{amqp_url}", prefetch: 500}}
        services:
          svc:
            routes:
              - {{name: orders, source: rabbit, from: {{exchange: orders, type: topic, bindings: ["order.#"]}},
                  to: "{s}.{{rk}}"}}
        """)


async def _consume_all(nc: NatsClient, stream: str, durable: str) -> list[str]:
    subscription = await nc.jetstream().pull_subscribe_bind(durable=durable, stream=stream)
    seen = []
    while True:
        try:
            batch = await subscription.fetch(100, timeout=3)
        except TimeoutError:  # nats-py's, or asyncio's when the fetch's deadline ran out first
            break
        for message in batch:
            seen.append(message.data.decode())
            await message.ack_sync()
    await subscription.unsubscribe()
    return seen


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
async def test_the_durable_starts_at_the_queues_head(
    rabbit_vhost_url: str, nats_url: str, unique_name: str, nc: NatsClient, queue_type: str
) -> None:
    stream = unique_name.upper()
    text = _mapping(nats_url, rabbit_vhost_url, stream)
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.declare_exchange("orders", aio_pika.ExchangeType.TOPIC)
    legacy = await channel.declare_queue("orders-worker", durable=True, arguments={"x-queue-type": queue_type})
    await legacy.bind(exchange, "order.#")
    running = RunningBridge(text)
    async with running:
        await until(lambda: queue_exists(channel, connection, "nats-bridge.svc.orders"), bridge=running)
        for i in range(MESSAGES):
            body = f"m{i:03d}"
            await exchange.publish(
                aio_pika.Message(body.encode(), message_id=body, delivery_mode=2), routing_key=f"order.eu.{i % 3}"
            )
        await until(lambda: _stored(nc, stream, MESSAGES), bridge=running)
    # the legacy consumer processes a prefix, then stops
    processed = 73
    consumer_channel = await connection.channel()
    await consumer_channel.set_qos(prefetch_count=1)
    queue = await consumer_channel.declare_queue("orders-worker", passive=True)
    for _ in range(processed):
        message = await queue.get(timeout=10)
        await message.ack()
    await consumer_channel.close()

    config = load_config_text(text, "m.yaml", {})
    source = config.sources["rabbit"]
    assert isinstance(source, RabbitMQSource)
    state = await legacy_queue(source, "orders-worker")
    assert (state.depth, state.consumers) == (MESSAGES - processed, 0)
    assert state.head is not None
    # Looking again (`handoff --plan`, then `handoff`) sees the same head: the look gave it back to
    # the head of the queue, not to its tail (what a nack does to a quorum queue's message).
    again = await legacy_queue(source, "orders-worker")
    assert again.head is not None
    assert (again.depth, again.head.body) == (state.depth, state.head.body)
    route = compile_plan(config).route("svc/orders")
    plan = await plan_queue_handoff(
        nc.jetstream(), stream=stream, durable="orders-worker", filters=[f"{stream.lower()}.>"], queue=state,
        head_msg_id=route.map(state.head).msg_id, shadow_backlog=0,
    )  # fmt: skip
    assert not plan.refused, plan.why_not()
    result = await position_queue_durable(nc.jetstream(), plan, ConsumerConfig(ack_policy=AckPolicy.EXPLICIT))
    assert (result.pending, result.legacy_lag) == (MESSAGES - processed, MESSAGES - processed)

    seen = await _consume_all(nc, stream, "orders-worker")
    expected = [f"m{i:03d}" for i in range(processed, MESSAGES)]
    assert seen == expected  # from the head, in order, nothing processed before, nothing twice
    assert Counter(seen) == Counter(expected)
    # the head read by the handoff went back to the queue: the legacy side is as it was
    assert (await legacy_queue(source, "orders-worker", peek=False)).depth == MESSAGES - processed

    # a consumer still attached to the queue: refused
    watcher = await connection.channel()
    attached = await watcher.declare_queue("orders-worker", passive=True)

    async def hold(_message: aio_pika.abc.AbstractIncomingMessage) -> None:
        """A legacy consumer still attached: it takes messages and never acks them."""

    tag = await attached.consume(hold, no_ack=False)
    try:
        state = await legacy_queue(source, "orders-worker")
        plan = await plan_queue_handoff(
            nc.jetstream(), stream=stream, durable="again", filters=[f"{stream.lower()}.>"], queue=state,
            head_msg_id=None, shadow_backlog=0,
        )  # fmt: skip
        assert plan.why_not() == [
            "queue 'orders-worker' still has 1 consumer(s): stop the legacy consumers first, so what the queue "
            "holds stops changing"
        ]
        with pytest.raises(HandoffRefusedError, match="still has 1 consumer"):
            await position_queue_durable(nc.jetstream(), plan, ConsumerConfig())
    finally:
        await attached.cancel(tag)
        await connection.close()


async def _stored(nc: NatsClient, stream: str, wanted: int) -> bool:
    return await count(nc, stream) >= wanted
