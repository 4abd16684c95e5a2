"""RabbitMQ -> JetStream end to end, against real RabbitMQ and real NATS.

The shadow bridge must receive a copy of exactly what a legacy queue with the same bindings
receives — for topic, direct, fanout and headers exchanges and exchange-to-exchange
topologies — while legacy consumers keep every message; and it must lose nothing and store
nothing twice through a SIGKILL, a RabbitMQ restart and (for stream queues) a restart after
the duplicate window.
"""

from __future__ import annotations

import asyncio
import re
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path

import aio_pika
import brokers_local
import pytest
from kafka_helpers import BridgeProcess, wait_for_count
from nats.aio.client import Client as NatsClient
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from bridge.config import load_config, load_config_text
from bridge.runner import Bridge, RunSettings

BridgeFactory = Callable[[Path], BridgeProcess]

pytestmark = [pytest.mark.rabbitmq, pytest.mark.nats]


async def stored(nc: NatsClient, stream: str) -> list[tuple[str, dict[str, str], bytes]]:
    """(subject, headers, payload) of every message in the stream, in stream order."""
    js = nc.jetstream(timeout=20)
    try:
        total = (await js.stream_info(stream)).state.messages
    except NotFoundError:
        return []
    found: list[tuple[str, dict[str, str], bytes]] = []
    if total == 0:
        return found
    subscription = await js.pull_subscribe("", stream=stream, config=js_api.ConsumerConfig(ack_policy="none"))
    while len(found) < total:
        for message in await subscription.fetch(min(1000, total - len(found)), timeout=20):
            found.append((message.subject, dict(message.headers or {}), message.data))
    await subscription.unsubscribe()
    return found


async def count(nc: NatsClient, stream: str) -> int:
    try:
        return (await nc.jetstream().stream_info(stream)).state.messages
    except NotFoundError:
        return 0


class RunningBridge:
    """A Bridge in this event loop, for tests that publish while it runs."""

    def __init__(self, mapping_text: str) -> None:
        self.bridge = Bridge(load_config_text(mapping_text, "test.yaml", {}), RunSettings())
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Bridge:
        self.task = asyncio.create_task(self.bridge.run())
        return self.bridge

    async def __aexit__(self, *_exc: object) -> None:
        self.bridge.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 60)


async def until(
    condition: Callable[[], Awaitable[bool]], timeout: float = 60, bridge: RunningBridge | None = None
) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            if bridge is not None and bridge.task is not None and bridge.task.done():
                bridge.task.result()
                raise AssertionError("the bridge stopped by itself")
            await asyncio.sleep(0.05)


async def queue_exists(
    channel: aio_pika.abc.AbstractChannel, connection: aio_pika.abc.AbstractConnection, name: str
) -> bool:
    """True once the bridge consumes queue NAME: it binds before it consumes, so from then on
    a published message is routed to it (the queue alone existing is not enough)."""
    probe = await connection.channel()
    try:
        declared = await probe.declare_queue(name, passive=True)
    except aio_pika.exceptions.ChannelClosed:
        return False
    finally:
        if not probe.is_closed:
            await probe.close()
    return (declared.declaration_result.consumer_count or 0) >= 1


async def publish_surely(exchange: aio_pika.abc.AbstractExchange, message: aio_pika.Message, key: str) -> None:
    """Publish until RabbitMQ routes it: just after a restart a queue may not be up yet, and an
    unroutable message is confirmed and dropped unless it is mandatory."""
    async with asyncio.timeout(60):
        while True:
            try:
                await exchange.publish(message, routing_key=key, mandatory=True)
            except aio_pika.exceptions.DeliveryError:
                await asyncio.sleep(0.2)
                continue
            return


async def stream_offsets(url: str, queue_name: str, idle: float = 2.0) -> list[int]:
    """Every offset a stream queue holds, read from the first until nothing arrives for `idle` s."""
    connection = await aio_pika.connect(url)
    async with asyncio.timeout(60):
        while True:  # just after a restart a stream queue's home node answers 404 for a moment
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(queue_name, passive=True)
                break
            except aio_pika.exceptions.ChannelNotFoundEntity:
                await asyncio.sleep(0.5)
    await channel.set_qos(prefetch_count=1000)
    offsets: list[int] = []
    arrived = asyncio.Event()

    async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        offsets.append(int((message.headers or {})["x-stream-offset"]))  # type: ignore[arg-type]
        await message.ack()
        arrived.set()

    await queue.consume(take, arguments={"x-stream-offset": "first"})
    while True:
        arrived.clear()
        try:
            await asyncio.wait_for(arrived.wait(), idle)
        except TimeoutError:
            break
    await connection.close()
    return offsets


def mapping(nats_url: str, amqp_url: str, stream: str, routes: str, duplicate_window: str = "2m") -> str:
    return textwrap.dedent(f"""\
        nats: {{servers: ["{nats_url}"]}}
        streams:
          - name: {stream}
            subjects: ["{stream.lower()}", "{stream.lower()}.>"]
            duplicate_window: {duplicate_window}
        sources:
          rabbit: {{type: rabbitmq, url: "{amqp_url}", prefetch: 500}}
        services:
          svc:
            routes:
        """) + textwrap.indent(textwrap.dedent(routes), "      ")


def fanout_mapping(path: Path, nats_url: str, amqp_url: str, stream: str) -> Path:
    """One shadow route `svc/r` from the fanout exchange `ex` into `stream`."""
    route = f'- {{name: r, source: rabbit, from: {{exchange: ex, type: fanout}}, to: "{stream.lower()}"}}\n'
    path.write_text(mapping(nats_url, amqp_url, stream, route))
    return path


async def test_shadow_routes_copy_topic_direct_fanout_headers_and_exchange_to_exchange(
    rabbit_vhost_url: str, nats_url: str, unique_name: str, nc: NatsClient
) -> None:
    stream = unique_name.upper()
    s = stream.lower()
    routes = f"""\
        - {{name: topic, source: rabbit, from: {{exchange: ex.topic, type: topic, bindings: ["order.#", "*.paid"]}},
            to: "{s}.topic.{{rk}}"}}
        - {{name: direct, source: rabbit, from: {{exchange: ex.direct, type: direct, bindings: [eu]}},
            to: "{s}.direct.{{rk}}"}}
        - {{name: fanout, source: rabbit, from: {{exchange: ex.fanout, type: fanout}}, to: "{s}.fanout"}}
        - {{name: headers, source: rabbit,
            from: {{exchange: ex.headers, type: headers, arguments: {{x-match: any, format: pdf, kind: invoice}}}},
            to: "{s}.headers.{{header:format}}", on_error: skip}}
        """
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel()
    topic = await channel.declare_exchange("ex.topic", aio_pika.ExchangeType.TOPIC)
    direct = await channel.declare_exchange("ex.direct", aio_pika.ExchangeType.DIRECT)
    fanout = await channel.declare_exchange("ex.fanout", aio_pika.ExchangeType.FANOUT)
    headers = await channel.declare_exchange("ex.headers", aio_pika.ExchangeType.HEADERS)
    upstream = await channel.declare_exchange("ex.upstream", aio_pika.ExchangeType.TOPIC)
    await topic.bind(upstream, routing_key="#")  # exchange-to-exchange: upstream -> ex.topic

    running = RunningBridge(mapping(nats_url, rabbit_vhost_url, stream, routes))
    async with running:
        for route in ("topic", "direct", "fanout", "headers"):
            await until(lambda r=route: queue_exists(channel, connection, f"nats-bridge.svc.{r}"), bridge=running)

        def msg(body: str, **headers: object) -> aio_pika.Message:
            return aio_pika.Message(body.encode(), message_id=body, headers=headers or None)

        await topic.publish(msg("t1"), routing_key="order")  # '#' matches zero words
        await topic.publish(msg("t2"), routing_key="order.eu.created")
        await topic.publish(msg("t3"), routing_key="invoice.paid")
        await topic.publish(msg("t-no"), routing_key="invoice.sent")
        await topic.publish(msg("t-no2"), routing_key="x.invoice.paid")
        await upstream.publish(msg("t4"), routing_key="order.us")  # via the exchange-to-exchange binding
        await direct.publish(msg("d1"), routing_key="eu")
        await direct.publish(msg("d-no"), routing_key="eu.x")
        await fanout.publish(msg("f1"), routing_key="anything")
        await headers.publish(msg("h1", format="pdf"), routing_key="")
        await headers.publish(msg("h2", kind="invoice", format="txt"), routing_key="")
        await headers.publish(msg("h-no", format="doc"), routing_key="")
        await until(lambda: _at_least(nc, stream, 8), bridge=running)
        await asyncio.sleep(0.5)  # anything extra would arrive now
    await connection.close()

    got = {payload.decode(): subject for subject, _, payload in await stored(nc, stream)}
    assert got == {
        "t1": f"{s}.topic.order",
        "t2": f"{s}.topic.order.eu.created",
        "t3": f"{s}.topic.invoice.paid",
        "t4": f"{s}.topic.order.us",
        "d1": f"{s}.direct.eu",
        "f1": f"{s}.fanout",
        "h1": f"{s}.headers.pdf",
        "h2": f"{s}.headers.txt",
    }


async def _at_least(nc: NatsClient, stream: str, wanted: int) -> bool:
    return await count(nc, stream) >= wanted


async def test_metadata_headers_and_msg_id_strategies(
    rabbit_vhost_url: str, nats_url: str, unique_name: str, nc: NatsClient
) -> None:
    stream = unique_name.upper()
    routes = f"""\
        - {{name: r, source: rabbit, from: {{exchange: ex, bindings: ["#"]}}, to: "{stream.lower()}.{{rk}}"}}
        """
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange("ex", aio_pika.ExchangeType.TOPIC)
    running = RunningBridge(mapping(nats_url, rabbit_vhost_url, stream, routes))
    async with running:
        await until(lambda: queue_exists(channel, connection, "nats-bridge.svc.r"), bridge=running)
        await exchange.publish(
            aio_pika.Message(
                b"with-id",
                message_id="m-1",
                content_type="application/json",
                correlation_id="c-9",
                headers={"tenant": "acme", "count": 5, "nested": {"a": [1, "x"]}, "blob": bytearray(b"\xff\x00")},
                priority=3,
                app_id="orders",
                type="order.created",
            ),
            routing_key="a.b",
        )
        await exchange.publish(aio_pika.Message(b"no-id"), routing_key="")
        await until(lambda: _at_least(nc, stream, 2), bridge=running)
    await connection.close()
    (first_subject, first, _), (second_subject, second, _) = await stored(nc, stream)
    assert first_subject == f"{stream.lower()}.a.b"
    assert first["Nats-Msg-Id"] == "svc/r/m-1"
    assert first["Amqp-Exchange"] == "ex"
    assert first["Amqp-Routing-Key"] == "a.b"
    assert first["Amqp-Content-Type"] == "application/json"
    assert first["Amqp-Correlation-Id"] == "c-9"
    assert first["Amqp-Priority"] == "3"
    assert first["Amqp-Type"] == "order.created"
    assert first["tenant"] == "acme"
    assert first["count"] == "5"
    assert first["nested"] == '{"a":[1,"x"]}'
    assert first["blob"] == "/wA="
    assert set(first["Bridge-Typed-Headers"].split(",")) == {"count", "nested"}
    assert first["Bridge-Base64-Headers"] == "blob"
    # The empty routing key is zero words: {rk} adds nothing.
    assert second_subject == stream.lower()
    assert re.fullmatch(r"svc/r/[0-9a-f]{32}", second["Nats-Msg-Id"]), "no message_id: a content hash"


async def test_legacy_consumer_receives_every_message_while_the_shadow_bridge_runs(
    rabbit_vhost_url: str, nats_url: str, unique_name: str, nc: NatsClient
) -> None:
    stream = unique_name.upper()
    routes = f"""\
        - {{name: r, source: rabbit, from: {{exchange: orders, bindings: ["order.*"]}}, to: "{stream.lower()}.{{rk}}"}}
        """
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange("orders", aio_pika.ExchangeType.TOPIC, durable=True)
    legacy = await channel.declare_queue("legacy-orders", durable=True)
    await legacy.bind(exchange, routing_key="order.*")
    running = RunningBridge(mapping(nats_url, rabbit_vhost_url, stream, routes))
    async with running:
        await until(lambda: queue_exists(channel, connection, "nats-bridge.svc.r"), bridge=running)
        for i in range(1_000):
            await exchange.publish(aio_pika.Message(str(i).encode(), message_id=f"id-{i}"), routing_key="order.new")
        received: list[str] = []
        async with legacy.iterator() as messages:
            async for message in messages:
                async with message.process():
                    received.append(message.body.decode())
                if len(received) == 1_000:
                    break
        await until(lambda: _at_least(nc, stream, 1_000), bridge=running)
    await connection.close()
    assert received == [str(i) for i in range(1_000)]
    assert sorted(int(payload) for _, _, payload in await stored(nc, stream)) == list(range(1_000))


async def test_sigkill_mid_flow_loses_nothing_and_stores_nothing_twice_with_message_ids(
    tmp_path: Path,
    bridge_process: BridgeFactory,
    rabbit_vhost_url: str,
    nats_url: str,
    unique_name: str,
    nc: NatsClient,
) -> None:
    stream = unique_name.upper()
    total = 20_000
    routes = f"""\
        - {{name: r, source: rabbit, from: {{exchange: orders, bindings: ["#"]}}, to: "{stream.lower()}.{{rk}}"}}
        """
    mapping_path = tmp_path / "m.yaml"
    mapping_path.write_text(mapping(nats_url, rabbit_vhost_url, stream, routes))
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange("orders", aio_pika.ExchangeType.TOPIC, durable=True)
    bridge = bridge_process(mapping_path)
    bridge.start()
    await until(lambda: queue_exists(channel, connection, "nats-bridge.svc.r"))
    for i in range(total):
        await exchange.publish(
            aio_pika.Message(str(i).encode(), message_id=f"id-{i}", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key="order.new",
        )
    await connection.close()
    for point in (4_000, 11_000):
        await wait_for_count(nc, stream, point, timeout=120, bridges=[bridge])
        bridge.kill()
        bridge.start()
    await wait_for_count(nc, stream, total, timeout=180, bridges=[bridge])
    await asyncio.sleep(2)
    assert bridge.terminate() == 0, bridge.log()
    ids = [headers["Nats-Msg-Id"] for _, headers, _ in await stored(nc, stream)]
    assert len(ids) == total
    assert set(ids) == {f"svc/r/id-{i}" for i in range(total)}


async def test_rabbitmq_restart_mid_flow_the_bridge_reconnects_and_loses_nothing(
    rabbit_vhost_url: str, nats_url: str, unique_name: str, nc: NatsClient
) -> None:
    if brokers_local.SOURCES.get("rabbitmq") != "local":
        pytest.fail("this test restarts RabbitMQ: run it against the local broker of compose/brokers")
    stream = unique_name.upper()
    routes = f"""\
        - {{name: r, source: rabbit, from: {{exchange: orders, bindings: ["#"]}}, to: "{stream.lower()}.{{rk}}"}}
        """
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange("orders", aio_pika.ExchangeType.TOPIC, durable=True)
    running = RunningBridge(mapping(nats_url, rabbit_vhost_url, stream, routes))
    async with running:
        await until(lambda: queue_exists(channel, connection, "nats-bridge.svc.r"), bridge=running)
        for i in range(5_000):
            message = aio_pika.Message(str(i).encode(), message_id=f"id-{i}", delivery_mode=2)
            await exchange.publish(message, routing_key="order")
        await connection.close()
        await until(lambda: _at_least(nc, stream, 500), bridge=running)
        await asyncio.to_thread(brokers_local.brokers, "restart", "rabbitmq")
        connection = await aio_pika.connect(rabbit_vhost_url)
        channel = await connection.channel()
        exchange = await channel.get_exchange("orders")
        for i in range(5_000, 8_000):
            message = aio_pika.Message(str(i).encode(), message_id=f"id-{i}", delivery_mode=2)
            await publish_surely(exchange, message, "order")
        await until(lambda: _at_least(nc, stream, 8_000), timeout=120, bridge=running)
    await connection.close()
    ids = [headers["Nats-Msg-Id"] for _, headers, _ in await stored(nc, stream)]
    assert len(ids) == 8_000
    assert set(ids) == {f"svc/r/id-{i}" for i in range(8_000)}


async def test_stream_queue_restart_after_the_duplicate_window_resumes_exactly(
    tmp_path: Path,
    bridge_process: BridgeFactory,
    rabbit_vhost_url: str,
    nats_url: str,
    unique_name: str,
    nc: NatsClient,
) -> None:
    stream = unique_name.upper()
    total = 6_000
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel()
    await channel.declare_queue("events", durable=True, arguments={"x-queue-type": "stream"})
    for i in range(total):
        await channel.default_exchange.publish(aio_pika.Message(str(i).encode()), routing_key="events")
    await connection.close()
    routes = f"""\
        - {{name: r, source: rabbit, from: {{queue: events, mode: stream, stream_offset: first}},
            to: "{stream.lower()}.events"}}
        """
    mapping_path = tmp_path / "m.yaml"
    mapping_path.write_text(mapping(nats_url, rabbit_vhost_url, stream, routes, duplicate_window="1s"))
    bridge = bridge_process(mapping_path)
    bridge.start()
    await wait_for_count(nc, stream, 2_000, timeout=120, bridges=[bridge])
    bridge.kill()
    await asyncio.sleep(1.5)  # past the 1 s duplicate window
    bridge.start()
    await wait_for_count(nc, stream, total, timeout=120, bridges=[bridge])
    await asyncio.sleep(2)
    assert bridge.terminate() == 0, bridge.log()
    offsets = [int(headers["Amqp-Stream-Offset"]) for _, headers, _ in await stored(nc, stream)]
    assert offsets == list(range(total)), "each stream offset stored once, in order"


def test_route_mapping_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(mapping("nats://x", "amqp://y", "S", '- {name: r, source: rabbit, from: {queue: q}, to: "s.x"}\n'))
    assert load_config(path, env={}).routes()[0][1].name == "r"


async def test_queue_mode_drains_an_existing_queue(
    rabbit_vhost_url: str, nats_url: str, unique_name: str, nc: NatsClient
) -> None:
    stream = unique_name.upper()
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel()
    legacy = await channel.declare_queue("legacy-work", durable=True)
    for i in range(500):
        await channel.default_exchange.publish(aio_pika.Message(str(i).encode(), message_id=f"w-{i}"), "legacy-work")
    routes = f"""\
        - {{name: drain, source: rabbit, from: {{queue: legacy-work}}, to: "{stream.lower()}.work"}}
        """
    running = RunningBridge(mapping(nats_url, rabbit_vhost_url, stream, routes))
    async with running:
        await until(lambda: _at_least(nc, stream, 500), bridge=running)

        async def drained() -> bool:
            declared = await channel.declare_queue("legacy-work", passive=True)
            return declared.declaration_result.message_count == 0

        await until(drained, bridge=running)
    await connection.close()
    assert legacy.name == "legacy-work"
    assert sorted(int(payload) for _, _, payload in await stored(nc, stream)) == list(range(500))


async def test_stream_route_survives_a_rabbitmq_restart_without_replaying(
    rabbit_vhost_url: str, nats_url: str, unique_name: str, nc: NatsClient
) -> None:
    if brokers_local.SOURCES.get("rabbitmq") != "local":
        pytest.fail("this test restarts RabbitMQ: run it against the local broker of compose/brokers")
    stream = unique_name.upper()
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel()
    await channel.declare_queue("events", durable=True, arguments={"x-queue-type": "stream"})
    for i in range(3_000):
        await channel.default_exchange.publish(aio_pika.Message(str(i).encode()), routing_key="events")
    await connection.close()
    routes = f"""\
        - {{name: r, source: rabbit, from: {{queue: events, mode: stream, stream_offset: first}},
            to: "{stream.lower()}.events"}}
        """
    dead_letters = f'dead_letters: {{stream: {stream}_DLQ, subject_prefix: "{stream.lower()}-dlq"}}\nsources:'
    running = RunningBridge(mapping(nats_url, rabbit_vhost_url, stream, routes).replace("sources:", dead_letters, 1))
    async with running:
        await until(lambda: _at_least(nc, stream, 3_000), bridge=running)
        await asyncio.to_thread(brokers_local.brokers, "restart", "rabbitmq")
        connection = await aio_pika.connect(rabbit_vhost_url)
        channel = await connection.channel()
        # Just after a restart RabbitMQ confirms publishes to a stream that never land in it
        # (for seconds, on a loaded machine): publish until the stream really grew. What the
        # bridge must copy is what the stream really holds.
        async with asyncio.timeout(120):
            while True:
                for i in range(3_000, 4_000):
                    await publish_surely(channel.default_exchange, aio_pika.Message(str(i).encode()), "events")
                in_stream = await stream_offsets(rabbit_vhost_url, "events")
                if len(in_stream) > 3_000:
                    break
        length = len(in_stream)
        assert in_stream == list(range(length))
        assert length > 3_000, "sanity: the stream grew after the restart"
        await until(lambda: _at_least(nc, stream, length), timeout=120, bridge=running)
        await asyncio.sleep(2)  # a replay from the first offset would arrive now
    await connection.close()
    offsets = [int(headers["Amqp-Stream-Offset"]) for _, headers, _ in await stored(nc, stream)]
    assert offsets == list(range(length)), "every offset once, in order: no replay after the reconnect"
    assert await count(nc, f"{stream}_DLQ") == 0, "a restart closes connections, but never dead-letters an offset"
