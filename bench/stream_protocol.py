"""Reading a RabbitMQ stream queue: AMQP 0-9-1 (what `mode: stream` routes do) against RabbitMQ's
native stream protocol (the `rabbitmq_stream` plugin), through rstream and rbfly.

Why: issue 17 asks whether a `mode: stream` route should read over the stream protocol instead
of AMQP. Over AMQP the broker turns every stored message back into three AMQP frames
(Basic.Deliver, a content header with `x-stream-offset` among its headers, a body) and the
client acknowledges them; over the stream protocol it sends the stored chunks as they are (many
messages per frame, no acks, credit per chunk) and the client decodes AMQP 1.0 itself.

A fresh stream queue is filled with N messages of 100 B, published over AMQP 0-9-1 by aio-pika's
aiormq channel with confirms (not through the bridge's code), as an estate's publishers would:
content type, delivery mode 2, a message id `m-<i>`, a timestamp, a type, an app id and two
headers. Then, in interleaved repeats (the order rotates each repeat), each reader reads all of
it from the first offset:

- `amqp, bridge`: the bridge's own `RabbitMQRouteSource` in stream mode (its connection from
  `open_connection`, so BufferedFrameReceiver and frame_decode, DeliveryFrames, basic.qos
  prefetch 1000, `x-stream-offset: first`), driven as the pipeline drives it: `fetch(500)`,
  and `settle` (an ack with multiple=True) every `settle_after` (prefetch // 4) messages. Each
  message comes out as the pipeline's `Received` with its `SourceMessage`.
- `amqp, minimal`: the same connection, channel, qos, DeliveryFrames and acks, but per message
  only what the other minimal readers do: body, offset (from the headers), message id.
- `rstream, minimal` / `rbfly, minimal`: a consumer from offset `first`, the library's AMQP 1.0
  decoder, per message body, offset and message id.
- `rstream, undecoded`: rstream without a decoder (each message's AMQP 1.0 bytes, counted and
  its offset checked, nothing decoded): the floor of the protocol through this client, what a
  faster AMQP 1.0 decoder of our own could at best approach.
- `rstream, as a source` / `rbfly, as a source`: the same, plus what a source over the stream
  protocol would have to hand the pipeline: the same `Received(SourceMessage(AmqpOrigin))` the
  AMQP source makes (properties under aio-pika's names, headers from the application
  properties without the `x-basic-*` keys RabbitMQ moved there, exchange and routing key from
  the message annotations). Offsets would be checkpointed as today; nothing is acked.

Every reader checks that it saw N messages with consecutive offsets and the last message id.
Figures per read: msg/s (wall time from opening the connection to the last message) and CPU
µs per message of this process (`time.process_time`, all its threads); RabbitMQ's own CPU per
message is recorded too (its pid from compose/brokers' state: set BRIDGE_STATE_DIR when the
brokers run from another checkout), as measured and less the broker's rate in the idle second
before the read, but other tests share the broker, so it is indicative only. Medians over the
repeats; the ratio is the AMQP bridge source's CPU per message over the reader's.

Needs the `rabbitmq_stream` plugin (compose/brokers enables it, on 127.0.0.1:15552) and the
`bench` extra (`pip install -e '.[bench]'`: rstream, rbfly). Run, on the shared machine:

    flock /tmp/nats-bridge-bench.lock .venv/bin/python bench/stream_protocol.py \\
        [--messages N] [--repeats R] [--readers NAME,...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import os
import shlex
import statistics
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import RESULTS, ROOT, Names, broker_pid, cpu_seconds, git, run_on_best_loop, save

from bridge.brokers.rabbitmq.client import open_connection
from bridge.brokers.rabbitmq.deliveries import DeliveryFrames
from bridge.brokers.rabbitmq.records import STREAM_OFFSET_HEADER
from bridge.brokers.rabbitmq.source import RabbitMQRouteSource
from bridge.config.routes import FromRabbitMQ, RabbitMQMode
from bridge.config.sources import RabbitMQSource
from bridge.logs import redact_url
from bridge.message import AmqpOrigin, SourceMessage
from bridge.sources.base import NoCheckpoints, Received

READERS = (
    "amqp, bridge",
    "amqp, minimal",
    "rstream, minimal",
    "rstream, as a source",
    "rstream, undecoded",
    "rbfly, minimal",
    "rbfly, as a source",
)
BASELINE = "amqp, bridge"
BATCH = 500  # the pipeline's fetch (PipelineSettings.batch_size)
IDLE_SECONDS = 1.0  # the broker's CPU is sampled this long before each read (the others' share)
READ_TIMEOUT = 600.0  # seconds one read of the whole queue may take
TIMESTAMP = dt.datetime(2026, 12, 5, tzinfo=dt.UTC)


@dataclass
class Options:
    amqp_url: str
    stream_url: str
    messages: int
    size: int
    repeats: int
    readers: tuple[str, ...]
    prefetch: int
    fill: str  # "amqp" or "stream": who publishes, which decides the size of the stream's chunks
    fill_batch: int
    command: str


@dataclass
class Tally:
    """What every reader does per message besides taking it: count it, check that its offset
    follows the previous one, keep its message id (the last is compared at the end)."""

    count: int = 0
    gaps: int = 0
    next_offset: int = 0
    last_id: str = ""
    body_bytes: int = 0

    def check(self, expected: int, size: int, *, decoded: bool = True) -> None:
        if not decoded:  # no message id nor body: the count and the offsets only
            self.last_id, self.body_bytes = f"m-{expected - 1}", expected * size
        if (
            self.count != expected
            or self.gaps
            or self.last_id != f"m-{expected - 1}"
            or self.body_bytes != expected * size
        ):
            raise RuntimeError(
                f"read {self.count} of {expected} messages, {self.gaps} offset gaps, "
                f"last id {self.last_id!r}, {self.body_bytes} body bytes"
            )


@dataclass
class Sample:
    reader: str
    rate: float  # msg/s, wall time from connect to the last message
    cpu_us_per_msg: float  # this process (time.process_time)
    rabbitmq_cpu_us_per_msg: float | None  # the broker's VM; other tests share it
    rabbitmq_idle_cpu_per_s: float | None  # its CPU-s/s in the second before the read: the others' share
    rabbitmq_net_cpu_us_per_msg: float | None  # the first less the idle rate over the read's wall time
    wall_s: float
    cpu_s: float


class Meter:
    """Wall, process CPU and RabbitMQ CPU from start() (before connecting) to stop() (at the last
    message, before the reader closes its connection).

    Other tests use the same broker, so its CPU is also taken over `IDLE_SECONDS` before the read
    (nothing of ours running), and that rate over the read's wall time is subtracted for a net
    figure; the others' load comes in bursts, so this is an estimate."""

    def __init__(self) -> None:
        self.broker = broker_pid("rabbitmq")
        self._start: tuple[float, float, float | None] | None = None
        self._stop: tuple[float, float, float | None] | None = None
        self.idle_per_s: float | None = None

    async def idle(self) -> None:
        before = cpu_seconds(self.broker)
        started = time.perf_counter()
        await asyncio.sleep(IDLE_SECONDS)
        after = cpu_seconds(self.broker)
        if before is not None and after is not None:
            self.idle_per_s = (after - before) / (time.perf_counter() - started)

    def _now(self) -> tuple[float, float, float | None]:
        return time.perf_counter(), time.process_time(), cpu_seconds(self.broker)

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> None:
        self._stop = self._now()

    def sample(self, reader: str, messages: int) -> Sample:
        assert self._start is not None
        assert self._stop is not None, f"{reader}: the reader never reached its last message"
        (wall0, cpu0, broker0), (wall1, cpu1, broker1) = self._start, self._stop
        wall, cpu = wall1 - wall0, cpu1 - cpu0
        broker = net = None
        if broker0 is not None and broker1 is not None:
            broker = round((broker1 - broker0) / messages * 1e6, 2)
            if self.idle_per_s is not None:
                net = round((broker1 - broker0 - self.idle_per_s * wall) / messages * 1e6, 2)
        idle = round(self.idle_per_s, 3) if self.idle_per_s is not None else None
        return Sample(
            reader,
            round(messages / wall, 1),
            round(cpu / messages * 1e6, 2),
            broker,
            idle,
            net,
            round(wall, 3),
            round(cpu, 3),
        )


# --------------------------------------------------------------------------------------- filling


async def fill(opts: Options, queue: str) -> dict[str, Any]:
    """Declare the stream queue and publish N messages into it over AMQP 0-9-1, with confirms."""
    connection = await aio_pika.connect(opts.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "stream"})
        underlay = await channel.get_underlay_channel()
        body = b"x" * opts.size
        started = time.perf_counter()
        window = 2000
        for start in range(0, opts.messages, window):
            publishes = [
                underlay.basic_publish(
                    body,
                    exchange="",
                    routing_key=queue,
                    properties=spec.Basic.Properties(
                        content_type="application/octet-stream",
                        delivery_mode=2,
                        message_id=f"m-{i}",
                        timestamp=TIMESTAMP,
                        message_type="order.created",
                        app_id="bench",
                        headers={"trace-id": f"trace-{i}", "attempt": 1},
                    ),
                )
                for i in range(start, min(opts.messages, start + window))
            ]
            for confirmation in await asyncio.gather(*publishes):
                if not isinstance(confirmation, spec.Basic.Ack):
                    raise RuntimeError(f"publish not confirmed: {confirmation}")
        elapsed = time.perf_counter() - started
        server = connection.transport.connection.server_properties if connection.transport else {}
        version = server.get("version", "unknown") if isinstance(server, Mapping) else "unknown"
    finally:
        await connection.close()
    return {"seconds": round(elapsed, 2), "rate": round(opts.messages / elapsed, 1), "rabbitmq": str(version)}


async def fill_over_stream(opts: Options, queue: str) -> dict[str, Any]:
    """Declare the stream queue over AMQP, then publish N messages over the stream protocol with
    rstream's producer, `fill_batch` per Publish frame, confirms awaited at the end.

    RabbitMQ writes a stream in chunks of what it took in one go: an AMQP 0-9-1 publisher on this
    machine leaves chunks of about one message (a chunk is what the stream protocol sends, and
    credits, as one), a batching stream publisher chunks of its batch. The messages carry what an
    AMQP 1.0 publisher would give the same content: message id, content type, creation time, and
    the two headers as application properties. No header section: RabbitMQ 3.10.8 cannot turn a
    stream message with one (`durable: true`) into AMQP 0-9-1; the consumer's connection closes
    with INTERNAL_ERROR (a function_clause in rabbit_msg_record:decode in the broker's log)."""
    from rstream import AMQPMessage, Producer, Properties  # noqa: PLC0415

    connection = await aio_pika.connect(opts.amqp_url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "stream"})
        server = connection.transport.connection.server_properties if connection.transport else {}
        version = server.get("version", "unknown") if isinstance(server, Mapping) else "unknown"
    finally:
        await connection.close()
    address = stream_address(opts.stream_url)
    body = b"x" * opts.size
    created = int(TIMESTAMP.timestamp() * 1000)
    confirmed = asyncio.Event()
    outcome = {"confirmed": 0, "refused": 0}

    async def on_confirm(status: Any) -> None:
        outcome["confirmed" if status.is_confirmed else "refused"] += 1
        if outcome["confirmed"] + outcome["refused"] >= opts.messages:
            confirmed.set()

    started = time.perf_counter()
    producer = Producer(
        address.host, address.port, username=address.username, password=address.password, vhost=address.vhost
    )
    try:
        await producer.start()
        for start in range(0, opts.messages, opts.fill_batch):
            batch = [
                AMQPMessage(
                    body=body,
                    properties=Properties(
                        message_id=f"m-{i}", content_type="application/octet-stream", creation_time=created
                    ),
                    application_properties={"trace-id": f"trace-{i}", "attempt": 1},
                )
                for i in range(start, min(opts.messages, start + opts.fill_batch))
            ]
            await producer.send_batch(queue, batch, on_publish_confirm=on_confirm)
        await asyncio.wait_for(confirmed.wait(), READ_TIMEOUT)
    finally:
        await producer.close()
    if outcome["refused"]:
        raise RuntimeError(f"{outcome['refused']} publishes refused")
    elapsed = time.perf_counter() - started
    return {"seconds": round(elapsed, 2), "rate": round(opts.messages / elapsed, 1), "rabbitmq": str(version)}


async def chunk_sizes(opts: Options, queue: str) -> dict[str, Any]:
    """How many messages the stream's chunks hold (rstream's Deliver frames, one per chunk)."""
    from rstream import Consumer, ConsumerOffsetSpecification, OffsetType  # noqa: PLC0415

    address = stream_address(opts.stream_url)
    sizes: list[int] = []
    done = asyncio.Event()
    read = 0

    class ChunkCounting(Consumer):  # type: ignore[misc]
        @staticmethod
        def _filter_messages(frame: Any, subscriber: Any, filter_value: Any = None) -> Any:
            sizes.append(frame.num_entries)
            return Consumer._filter_messages(frame, subscriber, filter_value)

    async def on_message(message: Any, context: Any) -> None:
        nonlocal read
        read += 1
        if read >= opts.messages:
            done.set()

    consumer = ChunkCounting(
        address.host, address.port, username=address.username, password=address.password, vhost=address.vhost
    )
    try:
        await consumer.start()
        await consumer.subscribe(
            queue, on_message, offset_specification=ConsumerOffsetSpecification(OffsetType.FIRST, None)
        )
        await asyncio.wait_for(done.wait(), READ_TIMEOUT)
    finally:
        await consumer.close()
    return {
        "chunks": len(sizes),
        "messages_per_chunk_median": statistics.median(sizes),
        "messages_per_chunk_mean": round(sum(sizes) / len(sizes), 1),
        "messages_per_chunk_max": max(sizes),
    }


async def delete_queue(opts: Options, queue: str) -> None:
    connection = await aio_pika.connect(opts.amqp_url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(queue)
    finally:
        await connection.close()


# --------------------------------------------------------------------------------------- AMQP


def bridge_source(opts: Options) -> RabbitMQSource:
    return RabbitMQSource(type="rabbitmq", url=SecretStr(opts.amqp_url), prefetch=opts.prefetch)


async def read_amqp_bridge(opts: Options, queue: str, meter: Meter) -> Tally:
    """The bridge's RabbitMQRouteSource, driven as the pipeline drives it (without JetStream:
    settled as soon as fetched, every `settle_after` messages)."""
    subscription = FromRabbitMQ(queue=queue, mode=RabbitMQMode.STREAM, stream_offset="first")
    source = RabbitMQRouteSource("bench", bridge_source(opts), subscription, queue)
    tally = Tally()
    settle_after = source.settle_after or 1
    meter.start()
    await source.start(NoCheckpoints())
    try:
        unsettled = 0
        deadline = time.monotonic() + READ_TIMEOUT
        while tally.count < opts.messages:
            if time.monotonic() > deadline:
                raise RuntimeError(f"amqp, bridge: {tally.count} of {opts.messages} read in {READ_TIMEOUT:.0f} s")
            batch = await source.fetch(BATCH, 1.0)
            for received in batch:
                message = received.message
                assert message is not None
                offset = received.position
                if offset != tally.next_offset:
                    tally.gaps += 1
                tally.next_offset = offset + 1
                tally.count += 1
                tally.body_bytes += len(message.body or b"")
                tally.last_id = message.origin.properties["message_id"]  # type: ignore[union-attr]
            unsettled += len(batch)
            if batch and (unsettled >= settle_after or tally.count >= opts.messages):
                await source.settle({source.lane: batch[-1].position})
                unsettled = 0
        meter.stop()
    finally:
        await source.close()
    return tally


async def read_amqp_minimal(opts: Options, queue: str, meter: Meter) -> Tally:
    """The bridge's connection, qos, DeliveryFrames and acks; per message body, offset, message id."""
    config = bridge_source(opts)
    settle_after = max(1, opts.prefetch // 4)
    tally = Tally()
    buffer: deque[DeliveredMessage] = deque()
    arrived = asyncio.Event()

    def on_delivered(message: DeliveredMessage) -> None:
        buffer.append(message)
        arrived.set()

    async def on_delivery(message: DeliveredMessage) -> None:  # DeliveryFrames takes them first
        on_delivered(message)

    meter.start()
    connection = await open_connection(config, connect_timeout=10, heartbeat=30)
    try:
        channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=config.prefetch)
        underlay = await channel.get_underlay_channel()
        DeliveryFrames.install(underlay, on_delivered)
        await underlay.basic_consume(queue, on_delivery, no_ack=False, arguments={STREAM_OFFSET_HEADER: "first"})
        unacked = last_tag = 0
        while tally.count < opts.messages:
            if not buffer:
                arrived.clear()
                await asyncio.wait_for(arrived.wait(), READ_TIMEOUT)
            taken = 0
            while buffer and taken < BATCH:
                delivered = buffer.popleft()
                properties = delivered.header.properties
                offset = properties.headers[STREAM_OFFSET_HEADER]  # type: ignore[index]
                if offset != tally.next_offset:
                    tally.gaps += 1
                tally.next_offset = offset + 1
                tally.count += 1
                tally.body_bytes += len(delivered.body)
                tally.last_id = properties.message_id or ""
                last_tag = delivered.delivery.delivery_tag  # type: ignore[union-attr]
                taken += 1
            unacked += taken
            if unacked >= settle_after or tally.count >= opts.messages:
                await underlay.basic_ack(last_tag, multiple=True)
                unacked = 0
        meter.stop()
    finally:
        await connection.close()
    return tally


# --------------------------------------------------------------------------------------- stream protocol


@dataclass
class StreamAddress:
    host: str
    port: int
    username: str
    password: str
    vhost: str


def stream_address(url: str) -> StreamAddress:
    parts = urlsplit(url)
    return StreamAddress(
        parts.hostname or "127.0.0.1",
        parts.port or 5552,
        unquote(parts.username or "guest"),
        unquote(parts.password or "guest"),
        unquote(parts.path.removeprefix("/")) or "/",
    )


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


# AMQP 0-9-1 properties RabbitMQ 3.10 keeps in a stream message's application properties
_BASIC_IN_APPLICATION = {"x-basic-type": "type", "x-basic-app-id": "app_id"}


def rstream_received(message: Any, offset: int, queue: str) -> Received:
    """What a source over rstream would hand the pipeline: the AMQP source's Received.

    rstream's decoder gives every AMQP 1.0 string as bytes, keys too."""
    properties = message.properties
    values: dict[str, Any] = {}
    if properties is not None:
        for name, value in (
            ("message_id", properties.message_id),
            ("correlation_id", properties.correlation_id),
            ("content_type", properties.content_type),
            ("content_encoding", properties.content_encoding),
            ("reply_to", properties.reply_to),
            ("user_id", properties.user_id),
        ):
            if value is not None:
                values[name] = _text(value)
        if properties.creation_time is not None:
            values["timestamp"] = dt.datetime.fromtimestamp(properties.creation_time // 1000, dt.UTC)
    annotations = message.message_annotations or {}
    mode = annotations.get(b"x-basic-delivery-mode")
    if mode is not None:
        values["delivery_mode"] = mode
    headers = []
    for key, value in (message.application_properties or {}).items():
        name = _text(key)
        basic = _BASIC_IN_APPLICATION.get(name)
        if basic is not None:
            values[basic] = _text(value)
        else:
            headers.append((name, _text(value)))
    origin = AmqpOrigin(
        exchange=_text(annotations.get(b"x-exchange", "")),
        routing_key=_text(annotations.get(b"x-routing-key", "")),
        queue=queue,
        properties=values,
        stream_offset=offset,
    )
    return Received(queue, offset, SourceMessage(origin, message.body, tuple(headers)))


def rbfly_received(body: bytes, context: Any, queue: str) -> Received:
    """What a source over rbfly would hand the pipeline: the AMQP source's Received."""
    properties = context.properties
    values: dict[str, Any] = {}
    for name, value in (
        ("message_id", properties.message_id),
        ("correlation_id", properties.correlation_id),
        ("content_type", properties.content_type),
        ("content_encoding", properties.content_encoding),
        ("reply_to", properties.reply_to),
        ("user_id", properties.user_id),
        ("timestamp", properties.creation_time),
    ):
        if value is not None:
            values[name] = value
    annotations = context.annotations
    mode = annotations.get("x-basic-delivery-mode")
    if mode is not None:
        values["delivery_mode"] = mode
    headers = []
    for name, value in context.app_properties.items():
        basic = _BASIC_IN_APPLICATION.get(name)
        if basic is not None:
            values[basic] = value
        else:
            headers.append((name, value))
    origin = AmqpOrigin(
        exchange=annotations.get("x-exchange", ""),
        routing_key=annotations.get("x-routing-key", ""),
        queue=queue,
        properties=values,
        stream_offset=context.stream_offset,
    )
    return Received(queue, context.stream_offset, SourceMessage(origin, body, tuple(headers)))


async def read_rstream(opts: Options, queue: str, meter: Meter, *, as_source: bool, decode: bool = True) -> Tally:
    """rstream's Consumer from the first offset, its AMQP 1.0 decoder (or none), default credit
    (10 chunks)."""
    from rstream import Consumer, ConsumerOffsetSpecification, OffsetType, amqp_decoder  # noqa: PLC0415

    address = stream_address(opts.stream_url)
    tally = Tally()
    done = asyncio.Event()
    expected = opts.messages
    received: list[Received] = []

    async def on_message(message: Any, context: Any) -> None:
        offset = context.offset
        if not decode:
            if offset != tally.next_offset:
                tally.gaps += 1
            tally.next_offset = offset + 1
            tally.count += 1
            if tally.count >= expected:
                meter.stop()
                done.set()
            return
        if as_source:
            item = rstream_received(message, offset, queue)
            received.append(item)
            if len(received) >= BATCH:
                received.clear()
            message_id = item.message.origin.properties["message_id"]  # type: ignore[union-attr]
        else:
            message_id = message.properties.message_id
        if offset != tally.next_offset:
            tally.gaps += 1
        tally.next_offset = offset + 1
        tally.count += 1
        tally.body_bytes += len(message.body)
        tally.last_id = message_id
        if tally.count >= expected:
            meter.stop()
            done.set()

    meter.start()
    consumer = Consumer(
        address.host, address.port, username=address.username, password=address.password, vhost=address.vhost
    )
    try:
        await consumer.start()
        await consumer.subscribe(
            queue,
            on_message,
            decoder=amqp_decoder if decode else None,
            offset_specification=ConsumerOffsetSpecification(OffsetType.FIRST, None),
        )
        await asyncio.wait_for(done.wait(), READ_TIMEOUT)
    finally:
        await consumer.close()
    tally.last_id = _text(tally.last_id)
    return tally


async def read_rbfly(opts: Options, queue: str, meter: Meter, *, as_source: bool) -> Tally:
    """rbfly's subscribe() iterator from the first offset (AMQP 1.0 decoded in C, 128 chunks credit)."""
    from rbfly.amqp import get_message_ctx  # noqa: PLC0415
    from rbfly.streams import Offset, streams_client  # noqa: PLC0415

    tally = Tally()
    received: list[Received] = []
    meter.start()
    client = streams_client(opts.stream_url)
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            async for body in client.subscribe(queue, offset=Offset.FIRST):
                context = get_message_ctx()
                offset = context.stream_offset
                if as_source:
                    item = rbfly_received(body, context, queue)
                    received.append(item)
                    if len(received) >= BATCH:
                        received.clear()
                    message_id = item.message.origin.properties["message_id"]  # type: ignore[union-attr]
                else:
                    message_id = context.properties.message_id
                if offset != tally.next_offset:
                    tally.gaps += 1
                tally.next_offset = offset + 1
                tally.count += 1
                tally.body_bytes += len(body)
                tally.last_id = message_id
                if tally.count >= opts.messages:
                    meter.stop()
                    break
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()
    return tally


# --------------------------------------------------------------------------------------- the run

Reader = Callable[[Options, str, Meter], Awaitable[Tally]]


def reader_of(name: str) -> Reader:
    readers: dict[str, Reader] = {
        "amqp, bridge": read_amqp_bridge,
        "amqp, minimal": read_amqp_minimal,
        "rstream, minimal": lambda o, q, m: read_rstream(o, q, m, as_source=False),
        "rstream, as a source": lambda o, q, m: read_rstream(o, q, m, as_source=True),
        "rstream, undecoded": lambda o, q, m: read_rstream(o, q, m, as_source=False, decode=False),
        "rbfly, minimal": lambda o, q, m: read_rbfly(o, q, m, as_source=False),
        "rbfly, as a source": lambda o, q, m: read_rbfly(o, q, m, as_source=True),
    }
    return readers[name]


async def read_once(opts: Options, queue: str, name: str) -> Sample:
    meter = Meter()
    await meter.idle()
    tally = await reader_of(name)(opts, queue, meter)
    sample = meter.sample(name, opts.messages)
    tally.check(opts.messages, opts.size, decoded=name != "rstream, undecoded")
    return sample


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def versions() -> dict[str, str]:
    found = {}
    for package in ("aio-pika", "aiormq", "pamqp", "rstream", "rbfly", "uvloop"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


async def run(opts: Options) -> dict[str, Any]:
    names = Names()
    queue = f"bench-stream-{names.run}"
    # rbfly logs "error suppressed: protocol is disconnected" at every disconnect, at warning level
    logging.getLogger("rbfly").setLevel(logging.ERROR)
    report: dict[str, Any] = {
        "_stamp": names.stamp,
        "command": opts.command,
        "options": {
            **asdict(opts),
            "amqp_url": redact_url(opts.amqp_url),
            "stream_url": redact_url(opts.stream_url),
        },
        "machine": {
            "nproc": os.cpu_count(),
            "python": sys.version.split()[0],
            "event_loop": type(asyncio.get_running_loop()).__module__,
            "packages": versions(),
            "git": git("rev-parse", "--short", "HEAD"),
            "loadavg_start": os.getloadavg(),
        },
    }
    over = "AMQP 0-9-1" if opts.fill == "amqp" else f"the stream protocol, {opts.fill_batch} per batch"
    log(f"filling stream queue {queue} with {opts.messages:,} x {opts.size} B over {over}")
    try:
        report["fill"] = await (fill(opts, queue) if opts.fill == "amqp" else fill_over_stream(opts, queue))
        report["machine"]["rabbitmq"] = report["fill"].pop("rabbitmq")
        report["chunks"] = await chunk_sizes(opts, queue)
        log(
            f"{report['chunks']['chunks']:,} chunks, median {report['chunks']['messages_per_chunk_median']} "
            f"messages per chunk (mean {report['chunks']['messages_per_chunk_mean']})"
        )
        samples: dict[str, list[Sample]] = {name: [] for name in opts.readers}
        for repeat in range(opts.repeats):
            shift = repeat % len(opts.readers)
            for name in opts.readers[shift:] + opts.readers[:shift]:  # a noisy stretch hits a different reader
                sample = await read_once(opts, queue, name)
                samples[name].append(sample)
                log(
                    f"repeat {repeat + 1}/{opts.repeats} {name:22} {sample.rate:10,.0f} msg/s "
                    f"{sample.cpu_us_per_msg:7.2f} µs CPU/msg"
                )
    finally:
        with contextlib.suppress(Exception):
            await delete_queue(opts, queue)
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["samples"] = {name: [asdict(sample) for sample in values] for name, values in samples.items()}
    report["medians"] = {name: medians(values) for name, values in samples.items()}
    return report


def medians(samples: list[Sample]) -> dict[str, float | None]:
    broker = [s.rabbitmq_cpu_us_per_msg for s in samples if s.rabbitmq_cpu_us_per_msg is not None]
    net = [s.rabbitmq_net_cpu_us_per_msg for s in samples if s.rabbitmq_net_cpu_us_per_msg is not None]
    return {
        "rate": round(statistics.median(s.rate for s in samples), 1),
        "cpu_us_per_msg": round(statistics.median(s.cpu_us_per_msg for s in samples), 2),
        "rabbitmq_cpu_us_per_msg": round(statistics.median(broker), 2) if broker else None,
        "rabbitmq_net_cpu_us_per_msg": round(statistics.median(net), 2) if net else None,
    }


def render(report: dict[str, Any]) -> list[str]:
    opts, fill_info, machine = report["options"], report["fill"], report["machine"]
    lines = [
        f"{opts['messages']:,} messages of {opts['size']} B in one stream queue (RabbitMQ {machine['rabbitmq']}), "
        f"filled over {'AMQP 0-9-1' if opts.get('fill', 'amqp') == 'amqp' else 'the stream protocol'} "
        f"at {fill_info['rate']:,.0f} msg/s"
        + (f", {chunks['messages_per_chunk_mean']} messages per chunk" if (chunks := report.get("chunks")) else "")
        + f"; median of {opts['repeats']} interleaved reads",
        f"Python {machine['python']} on {machine['event_loop']}, {machine['nproc']} cores; "
        + ", ".join(f"{k} {v}" for k, v in machine["packages"].items()),
        "",
        "| reader | msg/s | CPU µs/msg | amqp, bridge CPU / this | RabbitMQ CPU µs/msg, all / net* "
        "| samples msg/s | samples CPU µs/msg |",
        "|---|---|---|---|---|---|---|",
    ]
    medians_ = report["medians"]
    baseline = medians_.get(BASELINE, {}).get("cpu_us_per_msg")
    for name, median in medians_.items():
        samples = report["samples"][name]
        ratio = f"{baseline / median['cpu_us_per_msg']:.2f}x" if baseline else "-"
        broker = (
            f"{_or_dash(median['rabbitmq_cpu_us_per_msg'])} / {_or_dash(median.get('rabbitmq_net_cpu_us_per_msg'))}"
        )
        rates = ", ".join(f"{sample['rate']:,.0f}" for sample in samples)
        cpus = ", ".join(f"{sample['cpu_us_per_msg']:.2f}" for sample in samples)
        lines.append(
            f"| {name} | {median['rate']:,.0f} | {median['cpu_us_per_msg']:.2f} | {ratio} "
            f"| {broker} | {rates} | {cpus} |"
        )
    lines += [
        "",
        "* the broker is shared with other tests: indicative only; net = less its CPU rate in the idle second "
        "before each read",
        f"command: {report['command']}",
    ]
    return lines


def _or_dash(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def parse_options(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:15673/"))
    parser.add_argument(
        "--stream-url",
        default=os.environ.get("RABBITMQ_STREAM_URL", "rabbitmq-stream://guest:guest@127.0.0.1:15552/"),
        help="the stream protocol listener (compose/brokers: 127.0.0.1:15552)",
    )
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100, help="body bytes (default 100)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--readers", default=",".join(READERS), help=f"comma-separated, of: {'; '.join(READERS)} (default all)"
    )
    parser.add_argument(
        "--fill",
        choices=("amqp", "stream"),
        default="amqp",
        help="publish over AMQP 0-9-1 (aiormq, the default: chunks of about one message here) or over the "
        "stream protocol (rstream, --fill-batch per Publish frame: large chunks)",
    )
    parser.add_argument("--fill-batch", type=int, default=500, help="messages per batch with --fill stream")
    parser.add_argument(
        "--prefetch", type=int, default=1000, help="basic.qos of the AMQP readers (the bridge's default)"
    )
    args = parser.parse_args(argv)
    readers = tuple(name.strip() for name in args.readers.split(",") if name.strip())
    # names contain ", ": rejoin what the comma split apart
    joined: list[str] = []
    for part in readers:
        if joined and f"{joined[-1]}, {part}" in READERS:
            joined[-1] = f"{joined[-1]}, {part}"
        else:
            joined.append(part)
    unknown = [name for name in joined if name not in READERS]
    if unknown:
        parser.error(f"unknown reader(s) {unknown}; known: {READERS}")
    if args.messages < 1 or args.repeats < 1:
        parser.error("use at least one message and one repeat")
    argv_shown = [redact_url(arg) if "://" in arg else arg for arg in [Path(sys.executable).name, *sys.argv]]
    return Options(
        amqp_url=args.amqp_url,
        stream_url=args.stream_url,
        messages=args.messages,
        size=args.size,
        repeats=args.repeats,
        readers=tuple(joined),
        prefetch=args.prefetch,
        fill=args.fill,
        fill_batch=args.fill_batch,
        command=shlex.join(argv_shown),
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_options(sys.argv[1:] if argv is None else argv)
    try:
        report = run_on_best_loop(run(opts))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: the queue is deleted, nothing saved", file=sys.stderr)
        return 130
    path = save(report, "stream_protocol")
    print("\n".join(render(report)))
    print(f"\nraw samples: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    assert RESULTS.parent.is_dir()
    sys.exit(main())
