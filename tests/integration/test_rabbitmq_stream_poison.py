"""A stream-queue message RabbitMQ cannot hand to an AMQP 0-9-1 consumer, against the real brokers.

RabbitMQ 3.10 cannot turn a stream message written over the stream protocol with an AMQP 1.0
header section (rstream's `Header(durable=True)`) into AMQP 0-9-1: it closes the consumer's
connection with INTERNAL_ERROR when it reads it, and again at every reconnect. Reading with a
prefetch of many messages, the deliveries before it in the same read are lost with the
connection too, so the last offset received can be well before it. A `mode: stream` route must
not loop on it for ever: it finds the exact offset, dead-letters it (empty payload: its body
cannot be read over AMQP) and resumes after it, while the bridge's other routes keep flowing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import textwrap
from urllib.parse import unquote, urlsplit

import aio_pika
import brokers_local
import pytest
from nats.aio.client import Client as NatsClient
from rstream import AMQPMessage, Header, Producer
from test_rabbitmq_bridge import RunningBridge, count, queue_exists, stored, until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.nats]


def stream_protocol_address(amqp_vhost_url: str) -> tuple[str, int, str]:
    """(host, port, vhost) of RabbitMQ's stream-protocol listener for the test's vhost."""
    url = os.environ.get("RABBITMQ_STREAM_URL") or brokers_local.broker_env().get("RABBITMQ_STREAM_URL")
    if not url:
        pytest.fail("no RABBITMQ_STREAM_URL: start RabbitMQ with compose/brokers (rabbitmq_stream on loopback)")
    parts = urlsplit(url)
    vhost = unquote(urlsplit(amqp_vhost_url).path.removeprefix("/")) or "/"
    return parts.hostname or "127.0.0.1", parts.port or 5552, vhost


async def publish_poison(amqp_vhost_url: str, queue: str, body: bytes) -> None:
    """One message over the stream protocol with a header section: RabbitMQ 3.10 cannot give it to
    an AMQP 0-9-1 consumer."""
    host, port, vhost = stream_protocol_address(amqp_vhost_url)
    producer = Producer(host, port, username="guest", password="guest", vhost=vhost)
    await producer.start()
    try:
        await producer.send_wait(queue, AMQPMessage(body=body, header=Header(durable=True)))
    finally:
        await producer.close()


async def publish_ordinary(channel: aio_pika.abc.AbstractChannel, queue: str, bodies: list[str]) -> None:
    for body in bodies:
        await channel.default_exchange.publish(aio_pika.Message(body.encode()), routing_key=queue)


def poison_mapping(nats_url: str, amqp_url: str, stream: str, dlq: str) -> str:
    """Route `svc/r` reads stream queue `events`; route `svc/other` shadows the fanout exchange `ex`."""
    s = stream.lower()
    return textwrap.dedent(f"""\
        nats: {{servers: ["{nats_url}"]}}
        streams:
          - name: {stream}
            subjects: ["{s}.>"]
        dead_letters: {{stream: {dlq}, subject_prefix: "{s}-dlq"}}
        sources:
          rabbit: {{type: rabbitmq, url: "{amqp_url}", prefetch: 500}}
        services:
          svc:
            routes:
              - {{name: r, source: rabbit, from: {{queue: events, mode: stream, stream_offset: first}},
                  to: "{s}.events"}}
              - {{name: other, source: rabbit, from: {{exchange: ex, type: fanout}}, to: "{s}.other"}}
        """)


async def test_a_poison_stream_message_is_dead_lettered_and_the_route_resumes_after_it(
    rabbit_vhost_url: str, nats_url: str, unique_name: str, nc: NatsClient, caplog: pytest.LogCaptureFixture
) -> None:
    stream, dlq = unique_name.upper(), f"{unique_name.upper()}_DLQ"
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel()
    await channel.declare_queue("events", durable=True, arguments={"x-queue-type": "stream"})
    await publish_ordinary(channel, "events", [f"a{i}" for i in range(5)])  # offsets 0-4
    await publish_poison(rabbit_vhost_url, "events", b"poison")  # offset 5
    await publish_ordinary(channel, "events", [f"b{i}" for i in range(5)])  # offsets 6-10
    exchange = await channel.declare_exchange("ex", aio_pika.ExchangeType.FANOUT)
    caplog.set_level(logging.INFO)
    running = RunningBridge(poison_mapping(nats_url, rabbit_vhost_url, stream, dlq))
    running.bridge.settings.stall_after = 2.0  # the monitor looks every 0.5 s
    statuses: list[dict[str, object]] = []

    async def events_and_other_stored() -> bool:
        monitor = running.bridge.monitor
        if monitor is not None and monitor.refreshed:
            route = next(r for r in monitor.status()["routes"] if r["route"] == "r")
            statuses.append({**route, "problems": monitor.problems(), "live": monitor.liveness_problems()})
        return await count(nc, stream) >= 10 + 3

    async with running:
        await until(lambda: queue_exists(channel, connection, "nats-bridge.svc.other"), bridge=running)
        for i in range(3):  # the other route flows while `r` is held up at the poison
            await exchange.publish(aio_pika.Message(f"o{i}".encode()), routing_key="")
        await until(events_and_other_stored, timeout=120, bridge=running)
        await until(lambda: _count_is(nc, dlq, 1), timeout=30, bridge=running)

    messages = await stored(nc, stream)
    events = [(h["Amqp-Stream-Offset"], p.decode()) for subject, h, p in messages if subject.endswith(".events")]
    ordinary = [(str(i), f"a{i}") for i in range(5)] + [(str(6 + i), f"b{i}") for i in range(5)]
    assert events == ordinary, "every ordinary message once, in order; the poison is not among them"
    assert sorted(p.decode() for subject, _, p in messages if subject.endswith(".other")) == ["o0", "o1", "o2"]

    [(subject, headers, payload)] = await stored(nc, dlq)
    assert subject == f"{stream.lower()}-dlq.svc.r"
    assert payload == b"", "its body cannot be read over AMQP 0-9-1"
    assert headers["Nats-Msg-Id"] == "dlq:svc/r/events/5"
    assert headers["Bridge-Dlq-Reason"] == "unreadable"
    error = headers["Bridge-Dlq-Error"]
    for words in ("'events'", "offset 5", "INTERNAL_ERROR"):
        assert words in error, error
    assert "stream protocol" in error, "it tells the operator how to read the message"
    assert headers["Amqp-Stream-Offset"] == "5"

    said = [r.getMessage() for r in caplog.records if r.name.startswith("bridge") and "offset 5" in r.getMessage()]
    assert any("INTERNAL_ERROR" in line and "'events'" in line for line in said), said
    assert not any(r.exc_info for r in caplog.records if r.name.startswith("bridge")), "no traceback per retry"
    problems = [p for s in statuses for p in s["problems"]]  # type: ignore[attr-defined]
    assert any("INTERNAL_ERROR" in p and "svc/r" in p for p in problems), "readyz said why while it retried"
    assert all(not s["live"] for s in statuses), "/healthz stays 200: restarting the process would not help"

    # Restarted, the route resumes after the poison from its checkpoint: nothing again, nothing twice.
    await publish_ordinary(channel, "events", ["c0"])  # offset 11
    running = RunningBridge(poison_mapping(nats_url, rabbit_vhost_url, stream, dlq))
    async with running:
        await until(lambda: _count_is(nc, stream, 10 + 3 + 1), timeout=60, bridge=running)
        await asyncio.sleep(2)  # a replay of the poison or of earlier offsets would arrive now
    await connection.close()
    assert await count(nc, stream) == 14
    assert await count(nc, dlq) == 1


async def test_a_poison_message_at_the_end_of_the_stream_is_dead_lettered_and_later_ones_copied(
    rabbit_vhost_url: str, nats_url: str, unique_name: str, nc: NatsClient
) -> None:
    """Nothing after the poison yet (the probe that confirms it finds nothing past it), then two
    poisons in a row and ordinary messages after them."""
    stream, dlq = unique_name.upper(), f"{unique_name.upper()}_DLQ"
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel()
    await channel.declare_queue("events", durable=True, arguments={"x-queue-type": "stream"})
    await channel.declare_exchange("ex", aio_pika.ExchangeType.FANOUT)
    await publish_ordinary(channel, "events", ["a0", "a1"])  # offsets 0-1
    await publish_poison(rabbit_vhost_url, "events", b"p2")  # offset 2
    running = RunningBridge(poison_mapping(nats_url, rabbit_vhost_url, stream, dlq))
    async with running:
        await until(lambda: _count_is(nc, dlq, 1), timeout=90, bridge=running)
        await publish_poison(rabbit_vhost_url, "events", b"p3")  # offset 3
        await publish_poison(rabbit_vhost_url, "events", b"p4")  # offset 4
        await publish_ordinary(channel, "events", ["b5", "b6"])  # offsets 5-6
        await until(lambda: _count_is(nc, stream, 4), timeout=90, bridge=running)
        await until(lambda: _count_is(nc, dlq, 3), timeout=30, bridge=running)
    await connection.close()
    events = [(h["Amqp-Stream-Offset"], p.decode()) for _, h, p in await stored(nc, stream)]
    assert events == [("0", "a0"), ("1", "a1"), ("5", "b5"), ("6", "b6")]
    letters = [h["Nats-Msg-Id"] for _, h, _ in await stored(nc, dlq)]
    assert letters == ["dlq:svc/r/events/2", "dlq:svc/r/events/3", "dlq:svc/r/events/4"]


async def _count_is(nc: NatsClient, stream: str, wanted: int) -> bool:
    return await count(nc, stream) >= wanted
