"""Reverse routes (NATS -> legacy) against real NATS, RabbitMQ and Kafka.

What they pin: every JetStream message reaches the legacy broker, in order, with its
payload, its headers (minus JetStream's own) and the origin marker; a JetStream message is
acked only after the legacy broker confirmed it, so while the legacy side cannot take it the
message stays un-acked on the durable consumer and arrives once it can — none lost, none
doubled; and nothing the bridge wrote in one direction ever comes back in the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import textwrap
import time
import urllib.parse
import urllib.request
from base64 import b64encode
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerInfo
from nats.js.errors import NotFoundError
from pydantic import SecretStr

from bridge.brokers import reverse_target
from bridge.brokers.rabbitmq.target import RabbitMQTarget
from bridge.config import load_config_text
from bridge.config.services import ReverseRouteConfig, ReverseTo
from bridge.config.sources import KafkaSource, RabbitMQSource
from bridge.errors import BridgeError, TargetUnavailableError
from bridge.headers import ORIGIN_HEADER, ORIGIN_NATS, STREAM_POSITION_HEADER
from bridge.reverse.route import ReverseRoute
from bridge.runner import Bridge, RunSettings
from bridge.targets import legacy_headers

TopicFactory = Callable[..., Awaitable[str]]
REGIONS = ("eu", "us", "ap")

pytestmark = [pytest.mark.nats]


# --------------------------------------------------------------------------- helpers


class RunningRoute:
    """A ReverseRoute running in this event loop; stopped (and its errors raised) on exit."""

    def __init__(self, route: ReverseRoute) -> None:
        self.route = route
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ReverseRoute:
        self.task = asyncio.create_task(self.route.run())
        return self.route

    async def __aexit__(self, *_exc: object) -> None:
        self.route.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)

    def check(self) -> None:
        if self.task is not None and self.task.done():
            self.task.result()
            raise AssertionError(f"reverse route {self.route.key} stopped by itself")


async def until(
    condition: Callable[[], Awaitable[bool]], what: str, *, timeout: float = 60, running: RunningRoute | None = None
) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if running is not None:
            running.check()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        await asyncio.sleep(0.05)


async def consumer(js: JetStreamContext, route: ReverseRoute) -> ConsumerInfo:
    info: ConsumerInfo = await js.consumer_info(route.config.stream, route.durable)
    return info


async def drained(js: JetStreamContext, route: ReverseRoute) -> bool:
    """Every message of the consumer delivered and acknowledged (False until the route made it)."""
    try:
        info = await consumer(js, route)
    except NotFoundError:
        return False
    return info.num_pending == 0 and info.num_ack_pending == 0


async def read_queue(
    channel: AbstractChannel, name: str, count: int, *, idle: float = 1.0
) -> list[AbstractIncomingMessage]:
    """Consume queue NAME until `count` messages arrived and then nothing more for `idle` s
    (so extra copies would be seen too)."""
    await channel.set_qos(prefetch_count=1000)
    queue = await channel.declare_queue(name, passive=True)
    received: list[AbstractIncomingMessage] = []
    arrived = asyncio.Event()

    async def take(message: AbstractIncomingMessage) -> None:
        received.append(message)
        await message.ack()
        arrived.set()

    tag = await queue.consume(take)
    try:
        async with asyncio.timeout(60):
            while len(received) < count:
                arrived.clear()
                await arrived.wait()
        while True:
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), idle)
            except TimeoutError:
                break
    finally:
        await queue.cancel(tag)
    return received


async def read_topic(bootstrap: str, topic: str, group: str, count: int, *, idle: float = 1.5) -> list[Any]:
    """Read TOPIC with a legacy consumer group until `count` records and then `idle` s of silence."""
    legacy = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await legacy.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(90):
            while len(records) < count:
                for batch in (await legacy.getmany(timeout_ms=500)).values():
                    records.extend(batch)
        while batch_map := await legacy.getmany(timeout_ms=int(idle * 1000)):
            for batch in batch_map.values():
                records.extend(batch)
    finally:
        await legacy.stop()
    return records


async def publish_numbered(
    js: JetStreamContext, count: int, subject: Callable[[int], str], headers: Callable[[int], dict[str, str]]
) -> None:
    """Publish messages body-0 .. body-<count-1>, each stored before the next is sent."""
    for i in range(count):
        await js.publish(subject(i), f"body-{i}".encode(), headers=headers(i))


def rabbit(url: str) -> RabbitMQSource:
    return RabbitMQSource(type="rabbitmq", url=SecretStr(url))


def kafka(bootstrap: str) -> KafkaSource:
    return KafkaSource(type="kafka", bootstrap_servers=bootstrap.split(","))


def amqp_headers(message: AbstractIncomingMessage) -> dict[str, str]:
    return {name: value.decode() if isinstance(value, bytes) else str(value) for name, value in message.headers.items()}


def management(api_url: str, method: str, path: str) -> Any:
    """One call to the RabbitMQ management API; the decoded JSON answer (None when empty)."""
    split = urllib.parse.urlsplit(api_url.rstrip("/"))
    netloc = f"{split.hostname}:{split.port}" if split.port else str(split.hostname)
    request = urllib.request.Request(split._replace(netloc=netloc, path=split.path + path).geturl(), method=method)
    token = b64encode(
        f"{urllib.parse.unquote(split.username or 'guest')}:{urllib.parse.unquote(split.password or 'guest')}".encode()
    ).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    return json.loads(body) if body else None


# --------------------------------------------------------------------------- no broker


def test_legacy_headers_drop_every_jetstream_header_and_keep_the_rest() -> None:
    headers = {"Nats-Msg-Id": "1", "nats-expected-stream": "S", "NATS-Rollup": "sub", "tenant": "acme", "Natsy": "x"}
    assert legacy_headers(headers) == {"tenant": "acme", "Natsy": "x"}
    assert legacy_headers(None) == {}


def test_target_must_match_its_source_kind() -> None:
    to_exchange = ReverseTo(source="k", exchange="legacy")
    with pytest.raises(BridgeError, match=r"source 'k' is kafka, but 'to' names exchange 'legacy'"):
        reverse_target(kafka("127.0.0.1:1"), to_exchange, label="svc/r")
    to_topic = ReverseTo(source="r", topic="orders")
    with pytest.raises(BridgeError, match=r"source 'r' is rabbitmq, but 'to' names topic 'orders'"):
        reverse_target(rabbit("amqp://127.0.0.1:1/"), to_topic, label="svc/r")


def test_rabbitmq_target_describes_itself_without_the_password() -> None:
    target = reverse_target(
        rabbit("amqp://bridge:s3cret@rabbit:5672/legacy"), ReverseTo(source="r", exchange="ex"), label="a/b"
    )
    assert target.description == "RabbitMQ exchange 'ex' at amqp://bridge:***@rabbit:5672/legacy"
    assert target.key_problem("k" * 255) is None
    assert target.key_problem("k" * 256) == "routing key is longer than 255 bytes (AMQP's limit)"


async def test_rabbitmq_target_says_a_refused_login_as_the_sources_do(amqp_url: str) -> None:
    """The reverse target connected on its own and called every failure "not reachable"; it now
    connects as the sources do, so a wrong password reads as a refused login (and the password
    is not in the line)."""
    parts = urllib.parse.urlsplit(amqp_url)
    wrong = urllib.parse.urlunsplit(parts._replace(netloc=f"guest:wrong-pw-81c2@{parts.hostname}:{parts.port}"))
    target = reverse_target(rabbit(wrong), ReverseTo(source="r", exchange="amq.topic"), label="svc/r")
    with pytest.raises(TargetUnavailableError) as raised:
        await target.connect()
    text = str(raised.value)
    assert "refused the PLAIN login" in text, text
    assert "wrong-pw-81c2" not in text
    await target.close()


# --------------------------------------------------------------------------- (a) RabbitMQ


@pytest.mark.rabbitmq
async def test_rabbitmq_legacy_queue_gets_every_message_in_order_with_headers_message_id_and_origin(
    rabbit_vhost_url: str, jetstream: JetStreamContext, unique_name: str
) -> None:
    s, stream = unique_name, unique_name.upper()
    await jetstream.add_stream(name=stream, subjects=[f"{s}.>"])
    connection = await aio_pika.connect(rabbit_vhost_url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange("legacy.orders", aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue("legacy-consumer", durable=True)
        await queue.bind(exchange, routing_key="orders.#")

        def headers(i: int) -> dict[str, str]:
            # Every tenth message has no Nats-Msg-Id: its message_id is then <stream>:<seq>.
            base = {"tenant": "acme", "n": str(i)}
            return base if i % 10 == 0 else {**base, "Nats-Msg-Id": f"order-{i}"}

        await publish_numbered(jetstream, 500, lambda i: f"{s}.orders.{REGIONS[i % 3]}", headers)
        await jetstream.publish(f"{s}.other", b"outside the filter")  # never written: not in filter_subjects

        config = ReverseRouteConfig(
            name="to-legacy",
            stream=stream,
            filter_subjects=[f"{s}.orders.>"],
            to=ReverseTo(source="rabbit", exchange="legacy.orders", routing_key="{subject[1:]}"),
        )
        route = ReverseRoute("svc", config, rabbit(rabbit_vhost_url), jetstream, batch=64)
        running = RunningRoute(route)
        async with running:
            await until(lambda: drained(jetstream, route), "consumer drained", running=running)
            info = await consumer(jetstream, route)
            messages = await read_queue(channel, "legacy-consumer", 500)

        assert route.durable == "nats-bridge-reverse-svc-to-legacy"
        assert info.config.filter_subject == f"{s}.orders.>"
        assert info.config.ack_policy == AckPolicy.EXPLICIT
        assert info.config.max_ack_pending == 1000
        assert (info.num_pending, info.num_ack_pending, info.num_redelivered) == (0, 0, 0)
        assert info.delivered is not None
        assert info.delivered.stream_seq == 500  # the message outside the filter was never delivered

        assert [m.body for m in messages] == [f"body-{i}".encode() for i in range(500)]  # all, once, in order
        assert [m.routing_key for m in messages] == [f"orders.{REGIONS[i % 3]}" for i in range(500)]
        assert [m.message_id for m in messages] == [
            f"{stream}:{i + 1}" if i % 10 == 0 else f"order-{i}" for i in range(500)
        ]
        assert [amqp_headers(m) for m in messages] == [
            # The stream position it copies, for `handoff` in the drain phase; the origin marker.
            {"tenant": "acme", "n": str(i), STREAM_POSITION_HEADER: f"{stream}:{i + 1}", ORIGIN_HEADER: ORIGIN_NATS}
            for i in range(500)
        ]
        assert {m.delivery_mode for m in messages} == {aio_pika.DeliveryMode.PERSISTENT}
        stats = route.stats
        assert (stats.received, stats.written, stats.filtered_forwarded, stats.unrenderable, stats.failures) == (
            500,
            500,
            0,
            0,
            0,
        )
    finally:
        await connection.close()


@pytest.mark.rabbitmq
async def test_message_whose_key_cannot_render_is_terminated_logged_and_the_rest_written(
    rabbit_vhost_url: str, jetstream: JetStreamContext, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    s, stream = unique_name, unique_name.upper()
    await jetstream.add_stream(name=stream, subjects=[f"{s}.>"])
    connection = await aio_pika.connect(rabbit_vhost_url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange("by-tenant", aio_pika.ExchangeType.DIRECT)
        queue = await channel.declare_queue("acme-consumer")
        await queue.bind(exchange, routing_key="acme")
        # Messages 3 and 7 lack the header the routing key is made of.
        await publish_numbered(
            jetstream, 10, lambda i: f"{s}.events.{i}", lambda i: {} if i in (3, 7) else {"tenant": "acme"}
        )
        config = ReverseRouteConfig(
            name="by-tenant",
            stream=stream,
            to=ReverseTo(source="rabbit", exchange="by-tenant", routing_key="{header:tenant}"),
        )
        route = ReverseRoute("svc", config, rabbit(rabbit_vhost_url), jetstream)
        running = RunningRoute(route)
        with caplog.at_level(logging.ERROR, logger="bridge.reverse"):
            async with running:
                await until(lambda: drained(jetstream, route), "consumer drained", running=running)
                info = await consumer(jetstream, route)
                messages = await read_queue(channel, "acme-consumer", 8)

        assert [m.body for m in messages] == [f"body-{i}".encode() for i in range(10) if i not in (3, 7)]
        assert (route.stats.written, route.stats.unrenderable) == (8, 2)
        assert (info.num_pending, info.num_ack_pending, info.num_redelivered) == (0, 0, 0)  # term'ed, not redelivered
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 2
        assert f"subject '{s}.events.3' (stream seq 4)" in errors[0]
        assert "no routing key" in errors[0]
        assert "the message has no header 'tenant'" in errors[0]
        assert f"subject '{s}.events.7' (stream seq 8)" in errors[1]
    finally:
        await connection.close()


# --------------------------------------------------------------------------- (b) Kafka


@pytest.mark.kafka
async def test_kafka_topic_gets_every_message_keyed_by_subject_token_in_order_per_key(
    kafka_bootstrap: str, kafka_topic: TopicFactory, jetstream: JetStreamContext, unique_name: str
) -> None:
    s, stream = unique_name, unique_name.upper()
    topic = await kafka_topic(partitions=3)
    await jetstream.add_stream(name=stream, subjects=[f"{s}.>"])

    def subject(i: int) -> str:
        return f"{s}.{'audit' if i % 4 == 3 else 'orders'}.k{i % 5}"

    await publish_numbered(jetstream, 500, subject, lambda i: {"n": str(i), "Nats-Msg-Id": f"m-{i}"})
    await jetstream.publish(f"{s}.other.k0", b"outside both filters")

    config = ReverseRouteConfig(
        name="to-kafka",
        stream=stream,
        filter_subjects=[f"{s}.orders.>", f"{s}.audit.>"],  # several filters: filter_subjects
        to=ReverseTo(source="kafka", topic=topic, key="{subject[-1]}"),
    )
    route = ReverseRoute("svc", config, kafka(kafka_bootstrap), jetstream, batch=100)
    running = RunningRoute(route)
    async with running:
        await until(lambda: drained(jetstream, route), "consumer drained", running=running, timeout=90)
        info = await consumer(jetstream, route)
    records = await read_topic(kafka_bootstrap, topic, f"{s}-legacy", 500)

    assert sorted(info.config.filter_subjects or []) == sorted([f"{s}.orders.>", f"{s}.audit.>"])
    assert (info.num_pending, info.num_ack_pending, info.num_redelivered) == (0, 0, 0)
    assert len(records) == 500
    by_n = {int(dict(r.headers)["n"]): r for r in records}
    assert sorted(by_n) == list(range(500))  # every message once
    for n, record in by_n.items():
        assert record.key == f"k{n % 5}".encode()
        assert record.value == f"body-{n}".encode()
        assert record.headers == (  # no Nats-Msg-Id; the stream position it copies; the origin marker
            ("n", str(n).encode()),
            (STREAM_POSITION_HEADER, f"{stream}:{n + 1}".encode()),
            (ORIGIN_HEADER, ORIGIN_NATS.encode()),
        )
    for key in range(5):  # one key, one partition: in publish order
        in_partition_order = [
            int(dict(r.headers)["n"])
            for r in sorted(records, key=lambda r: (r.partition, r.offset))
            if r.key == f"k{key}".encode()
        ]
        assert in_partition_order == [n for n in range(500) if n % 5 == key]
        assert len({r.partition for r in records if r.key == f"k{key}".encode()}) == 1
    assert (route.stats.written, route.stats.failures) == (500, 0)


# --------------------------------------------------------------------------- (c) loop prevention


def loop_mapping(nats_url: str, source: str, forward_from: str, forward_to: str, reverse_to: str, stream: str) -> str:
    """A mapping with one forward route and one reverse route over the same legacy target and stream."""
    return textwrap.dedent(f"""\
        nats: {{servers: ["{nats_url}"]}}
        sources:
          legacy: {source}
        services:
          svc:
            routes:
              - {{name: forward, source: legacy, from: {forward_from}, to: "{forward_to}", on_error: skip}}
            reverse:
              - {{name: back, stream: {stream}, to: {reverse_to}}}
        """)


@pytest.mark.rabbitmq
async def test_rabbitmq_loop_prevention_both_ways(
    rabbit_vhost_url: str, nats_url: str, jetstream: JetStreamContext, unique_name: str
) -> None:
    """NATS -> exchange (reverse) and exchange -> NATS (forward) on the same exchange and stream:
    what one direction wrote, the other never copies back."""
    s, stream = unique_name, unique_name.upper()
    await jetstream.add_stream(name=stream, subjects=[f"{s}.>"])
    connection = await aio_pika.connect(rabbit_vhost_url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange("shared", aio_pika.ExchangeType.TOPIC)
        queue = await channel.declare_queue("legacy-consumer")
        await queue.bind(exchange, routing_key="#")
        config = load_config_text(
            loop_mapping(
                nats_url,
                f'{{type: rabbitmq, url: "{rabbit_vhost_url}"}}',
                "{exchange: shared, bindings: ['#']}",
                f"{s}.in.{{rk}}",
                "{source: legacy, exchange: shared}",
                stream,
            ),
            "loop.yaml",
            {},
        )
        bridge = Bridge(config, RunSettings(checkpoints=False))
        bridge_task = asyncio.create_task(bridge.run())
        try:

            async def forward_bound() -> bool:
                probe = await connection.channel()
                try:
                    declared = await probe.declare_queue("nats-bridge.svc.forward", passive=True)
                except aio_pika.exceptions.ChannelClosed:
                    return False
                finally:
                    if not probe.is_closed:
                        await probe.close()
                return (declared.declaration_result.consumer_count or 0) >= 1

            await until(forward_bound, "forward route consuming its shadow queue")
            ((service, reverse_config),) = config.reverse_routes()
            target_source = config.sources[reverse_config.to.source]
            assert isinstance(target_source, RabbitMQSource)
            route = ReverseRoute(service, reverse_config, target_source, jetstream)
            running = RunningRoute(route)
            async with running:
                for i in range(20):  # NATS producers
                    await jetstream.publish(f"{s}.out.{i}", f"nats-{i}".encode())
                for i in range(5):  # a legacy producer, still on RabbitMQ
                    await exchange.publish(aio_pika.Message(f"legacy-{i}".encode()), routing_key=f"legacy.{i}")

                pipeline = bridge.pipelines[0]

                async def settled() -> bool:
                    info = await jetstream.stream_info(stream)
                    return (
                        await drained(jetstream, route)
                        and route.stats.settled == 25
                        and pipeline.stats.settled == 25
                        and info.state.messages == 25
                    )

                await until(settled, "both directions settled", running=running)
                messages = await read_queue(channel, "legacy-consumer", 25)
                stored = (await jetstream.stream_info(stream)).state.messages
        finally:
            bridge.stop()
            await asyncio.wait_for(bridge_task, 30)
    finally:
        await connection.close()

    bodies = sorted(m.body.decode() for m in messages)
    assert bodies == sorted([f"nats-{i}" for i in range(20)] + [f"legacy-{i}" for i in range(5)])  # each once
    assert all(amqp_headers(m).get(ORIGIN_HEADER) == ORIGIN_NATS for m in messages if m.body.startswith(b"nats-"))
    assert stored == 25  # 20 from NATS producers + 5 forward copies; none of the 20 came back
    # Reverse: the 5 forward copies (Amqp-Exchange header) acked, never written back.
    assert (route.stats.written, route.stats.filtered_forwarded) == (20, 5)
    # Forward: the 20 marked messages filtered, the 5 legacy ones published.
    assert (pipeline.stats.published, pipeline.stats.filtered) == (5, 20)


@pytest.mark.kafka
async def test_kafka_loop_prevention_both_ways(
    kafka_bootstrap: str, kafka_topic: TopicFactory, nats_url: str, jetstream: JetStreamContext, unique_name: str
) -> None:
    """A JetStream message carrying Kafka-Topic (a forward copy) is acked and not written back;
    a record the reverse route wrote carries the origin header and is not copied into NATS."""
    s, stream = unique_name, unique_name.upper()
    topic = await kafka_topic(partitions=1)
    await jetstream.add_stream(name=stream, subjects=[f"{s}.>"])
    config = load_config_text(
        loop_mapping(
            nats_url,
            f'{{type: kafka, bootstrap_servers: ["{kafka_bootstrap}"]}}',
            f'{{topics: ["{topic}"], group: "{s}-forward"}}',
            f"{s}.in.{{partition}}",
            f'{{source: legacy, topic: "{topic}"}}',
            stream,
        ),
        "loop.yaml",
        {},
    )
    ((service, reverse_config),) = config.reverse_routes()
    target_source = config.sources[reverse_config.to.source]
    assert isinstance(target_source, KafkaSource)
    route = ReverseRoute(service, reverse_config, target_source, jetstream)
    bridge = Bridge(config, RunSettings(checkpoints=False))
    bridge_task = asyncio.create_task(bridge.run())
    try:
        running = RunningRoute(route)
        async with running:
            for i in range(20):
                await jetstream.publish(f"{s}.out.{i}", f"nats-{i}".encode())
            # As the forward bridge writes them: never back to Kafka.
            await jetstream.publish(f"{s}.in.9", b"copied-from-kafka", headers={"Kafka-Topic": topic})
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
            await producer.start()
            try:
                for i in range(5):
                    await producer.send_and_wait(topic, f"legacy-{i}".encode())
            finally:
                await producer.stop()

            async def settled() -> bool:
                if not bridge.pipelines:
                    return False
                info = await jetstream.stream_info(stream)
                return (
                    await drained(jetstream, route)
                    and route.stats.settled == 26
                    and bridge.pipelines[0].stats.settled == 25
                    and info.state.messages == 26
                )

            await until(settled, "both directions settled", running=running, timeout=90)
            pipeline = bridge.pipelines[0]
            stored = (await jetstream.stream_info(stream)).state.messages
    finally:
        bridge.stop()
        await asyncio.wait_for(bridge_task, 30)
    records = await read_topic(kafka_bootstrap, topic, f"{s}-legacy", 25)

    values = sorted(r.value.decode() for r in records)
    assert values == sorted([f"nats-{i}" for i in range(20)] + [f"legacy-{i}" for i in range(5)])  # each once
    assert b"copied-from-kafka" not in {r.value for r in records}
    assert all((ORIGIN_HEADER, ORIGIN_NATS.encode()) in r.headers for r in records if r.value.startswith(b"nats-"))
    assert stored == 26  # 20 + 1 published here + 5 forward copies; none of the 20 came back
    assert (route.stats.written, route.stats.filtered_forwarded) == (20, 6)  # 5 forward copies + the marked one
    assert (pipeline.stats.published, pipeline.stats.filtered) == (5, 20)


# --------------------------------------------------------------------------- (d) legacy outages


async def exchange_exists(connection: aio_pika.abc.AbstractConnection, name: str) -> bool:
    probe = await connection.channel()
    try:
        await probe.get_exchange(name, ensure=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        if not probe.is_closed:
            await probe.close()
    return True


@pytest.mark.rabbitmq
async def test_missing_exchange_holds_messages_unacked_then_delivers_all_once_in_order(
    rabbit_vhost_url: str, jetstream: JetStreamContext, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    s, stream = unique_name, unique_name.upper()
    await jetstream.add_stream(name=stream, subjects=[f"{s}.>"])
    await publish_numbered(jetstream, 300, lambda i: f"{s}.orders", lambda i: {"Nats-Msg-Id": f"o-{i}"})
    connection = await aio_pika.connect(rabbit_vhost_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue("legacy-consumer", durable=True)
        # The queue also takes what the exchange would route nowhere (its alternate exchange): so
        # a retry that lands between declaring the exchange and binding the queue is not dropped.
        await queue.bind("amq.fanout")
        config = ReverseRouteConfig(name="held", stream=stream, to=ReverseTo(source="rabbit", exchange="legacy.late"))
        # One batch holds the whole backlog; a short ack_wait: the held batch must be kept alive
        # (in-progress acks), or JetStream would hand it to any other puller of the durable.
        route = ReverseRoute("svc", config, rabbit(rabbit_vhost_url), jetstream, batch=300, ack_wait=3.0)
        running = RunningRoute(route)
        with caplog.at_level(logging.INFO, logger="bridge.reverse"):
            async with running:

                async def held() -> bool:
                    try:
                        info = await consumer(jetstream, route)
                    except NotFoundError:
                        return False
                    return info.num_ack_pending == 300 and route.stats.retries >= 3

                await until(held, "the batch held un-acked", running=running)
                hold_started = time.monotonic()
                while time.monotonic() - hold_started < 4.5:  # longer than ack_wait
                    info = await consumer(jetstream, route)
                    assert (info.num_ack_pending, info.num_pending, info.num_redelivered) == (300, 0, 0)
                    await asyncio.sleep(0.25)
                # A second bridge instance pulling from the same durable gets none of the held messages.
                probe = await jetstream.pull_subscribe_bind(durable=route.durable, stream=stream)
                with pytest.raises(TimeoutError):
                    await probe.fetch(1, timeout=1.0)
                await probe.unsubscribe()
                assert route.stats.written == 0
                assert "does not exist" in route.stats.last_error
                assert not await exchange_exists(connection, "legacy.late")  # the bridge never declares it

                exchange = await channel.declare_exchange(
                    "legacy.late",
                    aio_pika.ExchangeType.TOPIC,
                    durable=True,
                    arguments={"alternate-exchange": "amq.fanout"},
                )
                await queue.bind(exchange, routing_key="#")
                await until(lambda: drained(jetstream, route), "consumer drained", running=running)
                info = await consumer(jetstream, route)
                messages = await read_queue(channel, "legacy-consumer", 300)
    finally:
        await connection.close()

    assert [m.message_id for m in messages] == [f"o-{i}" for i in range(300)]  # none lost, none doubled, in order
    assert (info.num_pending, info.num_ack_pending, info.num_redelivered) == (0, 0, 0)
    assert route.stats.written == 300
    assert route.stats.failures >= 300  # the held batch failed at least three times
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    vhost = f"test-{unique_name}"
    assert errors, "the missing exchange was not logged as an error"
    assert f"RabbitMQ exchange 'legacy.late' does not exist in vhost '{vhost}'" in errors[0]
    assert "the bridge never declares it" in errors[0]
    assert len(errors) <= 3  # an outage is a line per reason (and per 30 s), not one per retry
    assert "guest:***@" in caplog.text
    assert "guest:guest" not in caplog.text
    assert any("accepts messages again" in r.getMessage() for r in caplog.records)


@pytest.mark.rabbitmq
async def test_connection_closed_by_rabbitmq_mid_stream_reconnects_and_loses_nothing(
    rabbit_vhost_url: str, rabbitmq_api_url: str | None, jetstream: JetStreamContext, unique_name: str
) -> None:
    """What a RabbitMQ restart looks like to the bridge: its connection closed by the broker,
    perhaps with confirms outstanding. Unconfirmed messages are written again (so a copy may
    arrive twice — with the same message_id, for the legacy consumer to drop), none is lost,
    and first arrivals keep the publish order."""
    assert rabbitmq_api_url is not None, "this test closes the bridge's connection through the management API"
    s, stream = unique_name, unique_name.upper()
    await jetstream.add_stream(name=stream, subjects=[f"{s}.>"])
    setup = await aio_pika.connect(rabbit_vhost_url)
    channel = await setup.channel()
    exchange = await channel.declare_exchange("legacy.x", aio_pika.ExchangeType.FANOUT)
    queue = await channel.declare_queue("legacy-consumer")
    await queue.bind(exchange)
    await setup.close()  # from here on the route's connection is the only one in the private vhost
    config = ReverseRouteConfig(name="kicked", stream=stream, to=ReverseTo(source="rabbit", exchange="legacy.x"))
    route = ReverseRoute("svc", config, rabbit(rabbit_vhost_url), jetstream, batch=50)
    running = RunningRoute(route)
    vhost = f"test-{unique_name}"
    # A backlog, so the route is busy writing (confirms outstanding) when its connection is closed.
    await publish_numbered(jetstream, 2000, lambda i: f"{s}.o", lambda i: {"Nats-Msg-Id": f"o-{i}"})
    async with running:

        async def some_written() -> bool:
            return route.stats.written >= 200

        await until(some_written, "some messages written", running=running)

        async def kick() -> bool:
            try:
                listed = await asyncio.to_thread(management, rabbitmq_api_url, "GET", "/connections")
            except OSError:  # the management API restarting: ask again
                return False
            connections = [found for found in listed if found.get("vhost") == vhost]
            for found in connections:
                with contextlib.suppress(OSError):
                    name = urllib.parse.quote(found["name"], safe="")
                    await asyncio.to_thread(management, rabbitmq_api_url, "DELETE", f"/connections/{name}")
            return bool(connections)

        await until(kick, "the route's connection closed by RabbitMQ", running=running)
        await until(lambda: drained(jetstream, route), "consumer drained", running=running)
    connection = await aio_pika.connect(rabbit_vhost_url)
    try:
        messages = await read_queue(await connection.channel(), "legacy-consumer", 2000)
    finally:
        await connection.close()

    ids = [m.message_id for m in messages]
    assert set(ids) == {f"o-{i}" for i in range(2000)}  # none lost
    first_arrivals = list(dict.fromkeys(ids))
    assert first_arrivals == [f"o-{i}" for i in range(2000)]  # in order
    assert len(ids) - 2000 <= 50  # at most one batch in flight could be written twice
    assert isinstance(route.target, RabbitMQTarget)
    assert route.target.connects >= 2  # reconnected after the close
    assert route.stats.written >= 2000


@pytest.mark.kafka
async def test_stop_while_kafka_is_unreachable_hands_the_held_batch_back_for_the_next_run(
    kafka_bootstrap: str, kafka_topic: TopicFactory, jetstream: JetStreamContext, unique_name: str
) -> None:
    """A route stopped while it cannot write nak's what it holds, so the next run of the same
    durable consumer (here: with the broker back) writes it at once, in order, exactly once."""
    s, stream = unique_name, unique_name.upper()
    topic = await kafka_topic(partitions=1)
    await jetstream.add_stream(name=stream, subjects=[f"{s}.>"])
    await publish_numbered(jetstream, 30, lambda i: f"{s}.o.k", lambda i: {})
    config = ReverseRouteConfig(
        name="handover", stream=stream, durable=f"{s}-handover", to=ReverseTo(source="kafka", topic=topic, key="x")
    )
    down = ReverseRoute("svc", config, kafka("127.0.0.1:1"), jetstream, batch=10)  # nothing listens on port 1
    running = RunningRoute(down)
    async with running:

        async def holding() -> bool:
            return down.stats.retries >= 2

        await until(holding, "the route retrying its first batch", running=running)
        assert down.stats.written == 0
        assert "Kafka topic" in down.stats.last_error
        assert (await consumer(jetstream, down)).num_ack_pending == 10
    assert (await consumer(jetstream, down)).num_pending == 20  # the rest was never fetched

    up = ReverseRoute("svc", config, kafka(kafka_bootstrap), jetstream, batch=10)
    running = RunningRoute(up)
    async with running:
        # Well within ack_wait (60 s): the held batch was nak'ed, so JetStream redelivers it at once.
        await until(lambda: drained(jetstream, up), "consumer drained", running=running, timeout=20)
    records = await read_topic(kafka_bootstrap, topic, f"{s}-legacy", 30)
    assert [r.value for r in records] == [f"body-{i}".encode() for i in range(30)]
    assert {r.key for r in records} == {b"x"}  # a literal key template
    assert up.stats.written == 30
