"""Ids and header values that nats-py would alter, against real brokers.

nats-py strips header values and turns CR/LF into spaces, so AMQP message_ids `order-7`,
`order-7 `, `order-7\\n`, `\\torder-7` used to arrive as one Nats-Msg-Id: JetStream kept one
and the bridge acked the other three as duplicates (lost); an all-blank message_id became an
empty id. Now each is stored, and the routing key and message_id come back exactly from the
headers.
"""

from __future__ import annotations

import base64
import textwrap

import aio_pika
import pytest
from aiokafka import AIOKafkaProducer
from nats.aio.client import Client as NatsClient
from test_rabbitmq_bridge import RunningBridge, count, mapping, queue_exists, stored, until

from bridge.headers import BASE64_HEADERS, stable_id

pytestmark = [pytest.mark.rabbitmq, pytest.mark.nats]

MESSAGE_IDS = ["order-7", "order-7 ", "order-7\n", "\torder-7", "   "]
ROUTING_KEY = " order.\r\nnew "


def _decoded(headers: dict[str, str], name: str) -> str:
    value = headers[name]
    if name in headers.get(BASE64_HEADERS, "").split(","):
        return base64.b64decode(value).decode()
    return value


# A Msg-Id template of the message's own fields (rendered straight from the origin,
# bridge/routing/text_shape.py): a line break in it is the template's error, so not among these.
TEMPLATE_IDS = ["order-7", "order-7 ", "\torder-7", "   ", "100%"]


@pytest.mark.parametrize(
    ("msg_id", "message_ids"),
    [(None, MESSAGE_IDS), ("{exchange}/{message_id}", TEMPLATE_IDS)],
    ids=["auto", "template"],
)
async def test_message_ids_that_differ_in_white_space_are_each_stored_once(
    rabbit_vhost_url: str, nats_url: str, unique_name: str, nc: NatsClient, msg_id: str | None, message_ids: list[str]
) -> None:
    stream = unique_name.upper()
    id_rule = f', msg_id: "{msg_id}"' if msg_id else ""
    routes = f"""\
        - {{name: r, source: rabbit, from: {{exchange: ex, type: fanout}}, to: "{stream.lower()}"{id_rule}}}
        """
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange("ex", aio_pika.ExchangeType.FANOUT)
    running = RunningBridge(mapping(nats_url, rabbit_vhost_url, stream, routes))
    async with running:
        await until(lambda: queue_exists(channel, connection, "nats-bridge.svc.r"), bridge=running)
        for index, message_id in enumerate(message_ids):
            body = f"{index}".encode()
            await exchange.publish(aio_pika.Message(body, message_id=message_id), routing_key=ROUTING_KEY)
        # And each once more: a real duplicate of each must still be dropped.
        for index, message_id in enumerate(message_ids):
            await exchange.publish(aio_pika.Message(f"{index}".encode(), message_id=message_id), routing_key="")

        async def all_in() -> bool:
            return await count(nc, stream) >= len(message_ids)

        await until(all_in, bridge=running)
        await until(lambda: _settled(running, len(message_ids)), bridge=running)
    await connection.close()
    found = await stored(nc, stream)
    assert len(found) == len(message_ids), [h["Nats-Msg-Id"] for _, h, _ in found]
    by_body = {payload.decode(): headers for _, headers, payload in found}
    for index, message_id in enumerate(message_ids):
        headers = by_body[str(index)]
        assert headers["Nats-Msg-Id"], "never an empty id"
        assert _decoded(headers, "Amqp-Message-Id") == message_id
        assert _decoded(headers, "Amqp-Routing-Key") == ROUTING_KEY
        if msg_id is not None:
            assert headers["Nats-Msg-Id"] == stable_id(f"ex/{message_id}")


async def _settled(running: RunningBridge, distinct: int) -> bool:
    return all(pipeline.stats.received == pipeline.stats.settled for pipeline in running.bridge.pipelines) and any(
        pipeline.stats.received >= 2 * distinct for pipeline in running.bridge.pipelines
    )


async def test_header_ids_that_differ_in_white_space_are_each_stored_once(
    nats_url: str, kafka_bootstrap: str, kafka_topic: object, unique_name: str, nc: NatsClient
) -> None:
    topic = await kafka_topic()  # type: ignore[operator]
    stream = unique_name.upper()
    text = f"""\
        nats: {{servers: ["{nats_url}"]}}
        streams: [{{name: {stream}, subjects: ["{unique_name}.>"]}}]
        sources: {{k: {{type: kafka, bootstrap_servers: ["{kafka_bootstrap}"]}}}}
        services:
          svc:
            routes:
              - {{name: r, source: k, from: {{topics: ["{topic}"]}}, to: "{unique_name}.{{partition}}",
                 msg_id: "{{header:event-id}}", unique_headers: [event-id]}}
        """
    keys = ["dup", "dup ", " dup", "dup\t", "dup"]  # the last one a real duplicate
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for key in keys:
            await producer.send_and_wait(topic, key.encode(), headers=[("event-id", key.encode())])
    finally:
        await producer.stop()
    running = RunningBridge(textwrap.dedent(text))
    async with running:

        async def read_all() -> bool:
            return sum(p.stats.settled for p in running.bridge.pipelines) >= len(keys)

        await until(read_all, bridge=running)
    found = await stored(nc, stream)
    assert sorted(payload.decode() for _, _, payload in found) == sorted(set(keys))
    assert running.bridge.pipelines[0].stats.duplicates == 1
