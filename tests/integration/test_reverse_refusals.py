"""Reverse routes and messages the legacy broker refuses for good, against real NATS, Kafka and
RabbitMQ: the refused message goes to the dead-letter stream with the broker's answer, its
JetStream message is acked, and everything behind it reaches the legacy broker, in order —
instead of the route retrying that one message every 5 s forever with nothing behind it moving.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
from base64 import b64encode
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from aiokafka import AIOKafkaConsumer
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError
from pydantic import SecretStr

from bridge.config.model import DeadLetterConfig
from bridge.config.services import ReverseRouteConfig, ReverseTo
from bridge.config.sources import KafkaSource, RabbitMQSource
from bridge.reverse.route import ReverseRoute

pytestmark = [pytest.mark.nats]

TopicFactory = Callable[..., Awaitable[str]]


async def run_until_drained(route: ReverseRoute, js: JetStreamContext, timeout: float = 60) -> None:
    """Run the route until its consumer has nothing pending or un-acked; then stop it."""
    task = asyncio.create_task(route.run())
    deadline = time.monotonic() + timeout
    try:
        while True:
            if task.done():
                task.result()
                raise AssertionError("the reverse route stopped by itself")
            try:
                info = await js.consumer_info(route.config.stream, route.durable)
                if info.num_pending == 0 and info.num_ack_pending == 0:
                    return
            except NotFoundError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not drained within {timeout}s (stats {route.stats}); still pending or un-acked in JetStream"
                )
            await asyncio.sleep(0.1)
    finally:
        route.stop()
        await asyncio.wait_for(task, 30)


async def dead_letters(js: JetStreamContext, stream: str) -> list[Any]:
    """Every message of the dead-letter stream, in order."""
    total = (await js.stream_info(stream)).state.messages
    return [await js.get_msg(stream, seq) for seq in range(1, total + 1)]


@pytest.mark.kafka
async def test_a_record_over_the_topics_max_message_bytes_is_dead_lettered_and_the_rest_arrive_in_order(
    kafka_bootstrap: str, kafka_topic: TopicFactory, jetstream: JetStreamContext, unique_name: str
) -> None:
    s, stream = unique_name, unique_name.upper()
    topic = await kafka_topic(partitions=1, config={"max.message.bytes": "20000"})
    await jetstream.add_stream(name=stream, subjects=[f"{s}.>"])
    oversize = [b"A" * 50_000, b"B" * 50_000]
    # One oversize message, then 100 normal ones with a second oversize one among them.
    await jetstream.publish(f"{s}.orders", oversize[0], headers={"tenant": "acme", "n": "big-0"})
    for i in range(100):
        if i == 50:
            await jetstream.publish(f"{s}.orders", oversize[1], headers={"n": "big-1"})
        await jetstream.publish(f"{s}.orders", f"body-{i}".encode(), headers={"n": str(i)})
    config = ReverseRouteConfig(name="to-kafka", stream=stream, to=ReverseTo(source="kafka", topic=topic))
    dlq_stream = f"DLQ{stream}"
    route = ReverseRoute(
        "svc",
        config,
        KafkaSource(type="kafka", bootstrap_servers=kafka_bootstrap.split(",")),
        jetstream,
        batch=32,
        dead_letters=DeadLetterConfig(stream=dlq_stream, subject_prefix=f"dlq{s}"),
    )
    await run_until_drained(route, jetstream)

    legacy = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, group_id=f"{s}-legacy", auto_offset_reset="earliest"
    )
    await legacy.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(60):
            while len(records) < 100:
                for batch in (await legacy.getmany(timeout_ms=500)).values():
                    records.extend(batch)
        for batch in (await legacy.getmany(timeout_ms=1500)).values():
            records.extend(batch)  # anything more (a copy) would arrive now
    finally:
        await legacy.stop()
    assert [r.value for r in records] == [f"body-{i}".encode() for i in range(100)]  # all, once, in order

    letters = await dead_letters(jetstream, dlq_stream)
    assert [letter.data for letter in letters] == oversize
    assert [letter.subject for letter in letters] == [f"dlq{s}.svc.to-kafka"] * 2
    for letter, seq, n in zip(letters, (1, 52), ("big-0", "big-1"), strict=True):
        headers = letter.headers or {}
        assert headers["Bridge-Dlq-Reason"] == "refused"
        assert "MessageSizeTooLarge" in headers["Bridge-Dlq-Error"], headers
        assert headers["Bridge-Dlq-Route"] == "svc/to-kafka"
        assert headers["Bridge-Dlq-Subject"] == f"{s}.orders"
        assert topic in headers["Bridge-Dlq-Target"]
        assert headers["Nats-Msg-Id"] == f"dlq:svc/to-kafka/{stream}/{seq}"
        assert headers["n"] == n
    assert letters[0].headers["tenant"] == "acme"
    assert (route.stats.written, route.stats.dead_lettered) == (100, 2)


def management(api_url: str, method: str, path: str, body: dict[str, Any]) -> None:
    """One call to the RabbitMQ management API with a JSON body."""
    split = urllib.parse.urlsplit(api_url.rstrip("/"))
    netloc = f"{split.hostname}:{split.port}" if split.port else str(split.hostname)
    request = urllib.request.Request(
        split._replace(netloc=netloc, path=split.path + path).geturl(),
        method=method,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    user = urllib.parse.unquote(split.username or "guest")
    password = urllib.parse.unquote(split.password or "guest")
    request.add_header("Authorization", "Basic " + b64encode(f"{user}:{password}".encode()).decode())
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


@pytest.mark.rabbitmq
async def test_a_message_rabbitmq_refuses_with_403_is_dead_lettered_and_the_rest_arrive_in_order(
    rabbit_vhost_url: str, rabbitmq_api_url: str | None, jetstream: JetStreamContext, unique_name: str
) -> None:
    """Topic permissions on the test's own vhost: the bridge's user may write `orders.ok.*` to the
    exchange but not `orders.secret`, which RabbitMQ answers by closing the channel (403) — on
    every publish in flight on it, not only the refused one."""
    if rabbitmq_api_url is None:
        pytest.fail("needs the RabbitMQ management API (RABBITMQ_API_URL) to set topic permissions")
    s, stream = unique_name, unique_name.upper()
    await jetstream.add_stream(name=stream, subjects=[f"{s}.>"])
    vhost = urllib.parse.unquote(urllib.parse.urlsplit(rabbit_vhost_url).path.removeprefix("/"))
    user = urllib.parse.unquote(urllib.parse.urlsplit(rabbit_vhost_url).username or "guest")
    connection = await aio_pika.connect(rabbit_vhost_url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange("legacy.orders", aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue("legacy-consumer", durable=True)
        await queue.bind(exchange, routing_key="#")
        quoted = urllib.parse.quote(vhost, safe="")
        management(
            rabbitmq_api_url,
            "PUT",
            f"/topic-permissions/{quoted}/{urllib.parse.quote(user, safe='')}",
            {"exchange": "legacy.orders", "write": "^orders\\.ok\\.", "read": ".*"},
        )
        for i in range(100):
            if i == 50:
                await jetstream.publish(f"{s}.orders.secret", b"classified", headers={"n": "secret"})
            await jetstream.publish(f"{s}.orders.ok.{i}", f"body-{i}".encode(), headers={"n": str(i)})
        config = ReverseRouteConfig(
            name="to-rabbit",
            stream=stream,
            to=ReverseTo(source="rabbit", exchange="legacy.orders", routing_key="{subject[1:]}"),
        )
        dlq_stream = f"DLQ{stream}"
        route = ReverseRoute(
            "svc",
            config,
            RabbitMQSource(type="rabbitmq", url=SecretStr(rabbit_vhost_url)),
            jetstream,
            batch=32,
            dead_letters=DeadLetterConfig(stream=dlq_stream, subject_prefix=f"dlq{s}"),
        )
        await run_until_drained(route, jetstream)

        received: list[AbstractIncomingMessage] = []
        async with asyncio.timeout(60):
            while len(received) < 100:
                message = await queue.get(fail=False, no_ack=True)
                if message is None:
                    await asyncio.sleep(0.05)
                    continue
                received.append(message)
        await asyncio.sleep(1)
        while (extra := await queue.get(fail=False, no_ack=True)) is not None:
            received.append(extra)  # copies, if any, are all there by now
    finally:
        await connection.close()
    # Every message arrives, in order. RabbitMQ closes the channel on the refusal, so the confirms
    # of what was published just before it in the same batch are lost: those are written again,
    # with the same message_id (a legacy consumer drops the copy by it), and only those.
    first: dict[str, bytes] = {}
    copies: list[bytes] = []
    for message in received:
        assert message.message_id is not None
        if message.message_id in first:
            assert first[message.message_id] == message.body
            copies.append(message.body)
        else:
            first[message.message_id] = message.body
    assert list(first.values()) == [f"body-{i}".encode() for i in range(100)]
    # At most what went out before the refused one in its batch (of 32 at most).
    assert len(copies) < 32, copies
    assert all(int(body.split(b"-")[1]) < 50 for body in copies), copies

    letters = await dead_letters(jetstream, dlq_stream)
    assert len(letters) == 1
    (letter,) = letters
    headers = letter.headers or {}
    assert letter.data == b"classified"
    assert headers["Bridge-Dlq-Reason"] == "refused"
    assert "ACCESS_REFUSED" in headers["Bridge-Dlq-Error"], headers
    assert headers["Bridge-Dlq-Subject"] == f"{s}.orders.secret"
    assert headers["Nats-Msg-Id"] == f"dlq:svc/to-rabbit/{stream}/51"
    assert route.stats.dead_lettered == 1
    consumer = await jetstream.consumer_info(stream, route.durable)
    assert (consumer.num_pending, consumer.num_ack_pending) == (0, 0)
    assert consumer.config.ack_policy == js_api.AckPolicy.EXPLICIT
