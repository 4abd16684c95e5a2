"""Traffic for fault schedules: numbered messages into Kafka, RabbitMQ and NATS, and the sources
read back afterwards, so the checker compares the streams with what the sources really hold.

Every message body is JSON naming the run, its source and a sequence number (`make_body`), so
each stored copy can be traced to one produced message by content as well as by position.

Producers keep going through broker restarts: a Kafka send or an AMQP publish that fails is sent
again (the first attempt may have landed too: a source can hold a message twice, which is why the
checker takes Kafka topics and stream queues as they are read back, not as they were meant);
AMQP publishing uses publisher confirms and `mandatory`, and resends everything unconfirmed after
a reconnect, in order.

RabbitMQ publishing is done on the protocol level (`AmqpPublisher`, pamqp frames over a socket):
aio-pika and aiormq 7.2 both give every message published without a `message_id` a random one,
which would hide exactly the case topology (d) is about (a shadow route over producers that set
none, identified by a content hash). `check_no_message_id_on_the_wire` proves the property is
absent as RabbitMQ delivers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiormq
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from pamqp import commands, frame
from pamqp.body import ContentBody
from pamqp.common import FieldTable
from pamqp.header import ContentHeader, ProtocolHeader

TICK = 0.05  # seconds between producer rounds

# --------------------------------------------------------------------------- bodies


@dataclass(frozen=True)
class Content:
    """What a message body says about itself."""

    src: str  # the source it was produced into, e.g. "a.kafka"
    n: int  # its sequence number in that source
    dead_letter: bool  # produced so that its route cannot map it (expected in the dead-letter stream)

    @property
    def key(self) -> str:
        return f"{self.src}#{self.n}"


def make_body(run: str, src: str, n: int, *, dead_letter: bool = False) -> bytes:
    return json.dumps({"run": run, "src": src, "n": n, "dl": dead_letter}, separators=(",", ":")).encode()


def parse_body(data: bytes | None) -> Content | None:
    try:
        document = json.loads(data or b"")
        return Content(str(document["src"]), int(document["n"]), bool(document["dl"]))
    except (ValueError, KeyError, TypeError):
        return None


class Pacer:
    """How many messages are due so far at `rate` per second (the producers' clock)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.started = time.monotonic()

    def due(self) -> int:
        return int((time.monotonic() - self.started) * self.rate)


# --------------------------------------------------------------------------- Kafka


class KafkaTraffic:
    """Numbered records into one topic, round-robin over its partitions, until `stop` is set."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        src: str,
        run: str,
        *,
        rate: float,
        partitions: int,
        dead_letter: Callable[[int], bool] = lambda _n: False,
        headers: Callable[[int], list[tuple[str, bytes]]] = lambda _n: [],
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.src = src
        self.run_id = run
        self.rate = rate
        self.partitions = partitions
        self.dead_letter = dead_letter
        self.headers = headers
        self.acked: dict[int, tuple[int, int]] = {}  # n -> (partition, offset) of the acknowledged send
        self.failed_sends = 0
        self.unsent: list[int] = []  # given up at the deadline

    def _producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=10_000,
            retry_backoff_ms=200,
        )

    async def run(self, stop: asyncio.Event, give_up_at: Callable[[], float | None]) -> None:
        pacer = Pacer(self.rate)
        produced = 0
        retry: list[int] = []
        producer: AIOKafkaProducer | None = None
        try:
            while True:
                if not stop.is_set():
                    due = pacer.due()
                    retry.extend(range(produced, due))
                    produced = max(produced, due)
                deadline = give_up_at()
                if stop.is_set() and not retry:
                    return
                if deadline is not None and time.monotonic() > deadline:
                    self.unsent = sorted(retry)
                    return
                if not retry:
                    await asyncio.sleep(TICK)
                    continue
                if producer is None:
                    producer = self._producer()
                    try:
                        await producer.start()
                    except (KafkaError, OSError):
                        await _close_producer(producer)
                        producer = None
                        await asyncio.sleep(0.5)
                        continue
                batch, retry = sorted(retry), []
                failed = await self._send(producer, batch)
                if failed:
                    self.failed_sends += len(failed)
                    retry = failed
                    await _close_producer(producer)  # a fresh producer after an outage
                    producer = None
                    await asyncio.sleep(0.5)
                else:
                    await asyncio.sleep(TICK)
        finally:
            if producer is not None:
                await _close_producer(producer)

    async def _send(self, producer: AIOKafkaProducer, batch: list[int]) -> list[int]:
        """Send `batch`; the numbers whose send failed."""
        futures: list[tuple[int, asyncio.Future[Any]]] = []
        failed: list[int] = []
        for n in batch:
            try:
                future = await producer.send(
                    self.topic,
                    make_body(self.run_id, self.src, n, dead_letter=self.dead_letter(n)),
                    key=f"k{n}".encode(),
                    partition=n % self.partitions,
                    headers=self.headers(n),
                )
            except (KafkaError, OSError):
                failed.append(n)
                continue
            futures.append((n, future))
        results = await asyncio.gather(*(future for _, future in futures), return_exceptions=True)
        for (n, _), result in zip(futures, results, strict=True):
            if isinstance(result, BaseException):
                failed.append(n)
            else:
                self.acked[n] = (result.partition, result.offset)
        return sorted(failed)


async def _close_producer(producer: AIOKafkaProducer) -> None:
    with contextlib.suppress(KafkaError, OSError, TimeoutError):
        await asyncio.wait_for(producer.stop(), 15)


@dataclass(frozen=True)
class KafkaRecord:
    partition: int
    offset: int
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)


async def read_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 60) -> list[KafkaRecord]:
    """Every record of the topic, partition by partition in offset order (no group, nothing committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=20_000)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        found: list[KafkaRecord] = []
        deadline = time.monotonic() + timeout
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read topic {topic} to its end offsets {ends} within {timeout}s")
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batches.values():
                found.extend(KafkaRecord(r.partition, r.offset, r.value, tuple(r.headers or ())) for r in records)
        return sorted(found, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


# --------------------------------------------------------------------------- RabbitMQ


class AmqpClosedError(ConnectionError):
    """The connection or channel is gone; every unconfirmed publish with it."""


@dataclass
class _Pending:
    future: asyncio.Future[bool]  # True: acked; False: nacked
    n: int


class AmqpPublisher:
    """AMQP 0-9-1 publishing on the protocol level: one connection, one channel in confirm mode.

    Properties go on the wire exactly as given (no message_id is invented). `publish` returns a
    future that becomes True (acked) or False (nacked), or fails with AmqpClosedError; messages
    RabbitMQ returned as unroutable (`mandatory`) are collected in `returned` (by number) before
    their ack arrives.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, frame_max: int, returned: set[int]
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._frame_max = frame_max
        self._tag = 0
        self._pending: dict[int, _Pending] = {}
        self.returned = returned  # numbers RabbitMQ returned as unroutable
        self._closed: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls, url: str, name: str, *, returned: set[int] | None = None, timeout: float = 10
    ) -> AmqpPublisher:
        parts = urllib.parse.urlsplit(url)
        vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        user = urllib.parse.unquote(parts.username or "guest")
        password = urllib.parse.unquote(parts.password or "guest")
        reader, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port or 5672), timeout)
        try:
            async with asyncio.timeout(timeout):
                writer.write(ProtocolHeader().marshal())
                await _expect(reader, commands.Connection.Start)
                properties: FieldTable = {"product": "nats-bridge chaos traffic", "connection_name": name}
                writer.write(
                    frame.marshal(
                        commands.Connection.StartOk(
                            client_properties=properties, mechanism="PLAIN", response=f"\0{user}\0{password}"
                        ),
                        0,
                    )
                )
                tune = await _expect(reader, commands.Connection.Tune)
                frame_max = tune.frame_max or 131072
                writer.write(
                    frame.marshal(commands.Connection.TuneOk(channel_max=1, frame_max=frame_max, heartbeat=0), 0)
                )
                writer.write(frame.marshal(commands.Connection.Open(virtual_host=vhost), 0))
                await _expect(reader, commands.Connection.OpenOk)
                writer.write(frame.marshal(commands.Channel.Open(), 1))
                await _expect(reader, commands.Channel.OpenOk)
                writer.write(frame.marshal(commands.Confirm.Select(), 1))
                await _expect(reader, commands.Confirm.SelectOk)
        except BaseException:
            writer.close()
            raise
        publisher = cls(reader, writer, frame_max, set() if returned is None else returned)
        publisher._task = asyncio.create_task(publisher._read())
        return publisher

    def publish(
        self,
        n: int,
        body: bytes,
        *,
        exchange: str,
        routing_key: str,
        properties: commands.Basic.Properties,
        mandatory: bool = True,
    ) -> asyncio.Future[bool]:
        if self._closed is not None:
            raise AmqpClosedError(str(self._closed))
        self._tag += 1
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[self._tag] = _Pending(future, n)
        data = frame.marshal(commands.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory), 1)
        data += frame.marshal(ContentHeader(0, len(body), properties), 1)
        chunk = self._frame_max - 8
        for start in range(0, len(body), chunk):
            data += frame.marshal(ContentBody(body[start : start + chunk]), 1)
        self._writer.write(data)
        return future

    async def drain(self) -> None:
        try:
            await self._writer.drain()
        except OSError as error:
            self._fail(error)
            raise AmqpClosedError(str(error)) from error

    async def close(self) -> None:
        if self._closed is None:
            with contextlib.suppress(OSError):
                self._writer.write(
                    frame.marshal(
                        commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0), 0
                    )
                )
                await asyncio.wait_for(self._writer.drain(), 2)
        self._fail(AmqpClosedError("closed by the producer"))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def _fail(self, error: BaseException) -> None:
        if self._closed is None:
            self._closed = error
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(AmqpClosedError(str(error)))
                pending.future.exception()  # retrieved: nobody may be waiting any more
        self._pending.clear()

    def _settle(self, tag: int, multiple: bool, acked: bool) -> None:
        tags = [t for t in self._pending if t <= tag] if multiple else [tag]
        for t in tags:
            pending = self._pending.pop(t, None)
            if pending is not None and not pending.future.done():
                pending.future.set_result(acked)

    async def _read(self) -> None:
        try:
            while True:
                value = await _read_frame(self._reader)
                if isinstance(value, commands.Basic.Ack):
                    self._settle(value.delivery_tag, value.multiple, True)
                elif isinstance(value, commands.Basic.Nack):
                    self._settle(value.delivery_tag, value.multiple, False)
                elif isinstance(value, ContentBody):  # only returned messages come back with a body
                    content = parse_body(value.value)
                    if content is not None:
                        self.returned.add(content.n)
                elif isinstance(value, commands.Channel.Close | commands.Connection.Close):
                    self._fail(AmqpClosedError(f"{value.name}: {value.reply_code} {value.reply_text}"))
                    return
        except (OSError, asyncio.IncompleteReadError, AmqpClosedError, ValueError) as error:
            self._fail(error)


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    head = await reader.readexactly(7)
    if head.startswith(b"AMQP"):
        raise AmqpClosedError("the server refused the protocol version")
    (size,) = struct.unpack(">I", head[3:7])
    rest = await reader.readexactly(size + 1)
    _consumed, _channel, value = frame.unmarshal(head + rest)
    return value


async def _expect(reader: asyncio.StreamReader, kind: type[Any]) -> Any:
    value = await _read_frame(reader)
    if not isinstance(value, kind):
        raise AmqpClosedError(f"expected {kind.__name__}, got {getattr(value, 'name', value)!r}")
    return value


class AmqpTraffic:
    """Numbered messages into one exchange with publisher confirms, until `stop` is set.

    At most `window` publishes are unconfirmed; after a lost connection every unconfirmed one is
    published again, in order, before anything new. A message RabbitMQ returns as unroutable
    (a queue that is not bound yet, or not available for a while after a restart: a stream queue
    can take many seconds) was not enqueued anywhere, so it is published again half a second
    later, behind newer ones (`republished`, like a nacked one); after `stop` it is given up.
    `acked` holds the numbers RabbitMQ confirmed and routed; `returned` those given up as
    unroutable; `uncertain` those with an attempt whose confirm never came (the connection died:
    it may be in the queue); `attempted` every number published at least once.
    """

    def __init__(
        self,
        url: str,
        exchange: str,
        src: str,
        run: str,
        *,
        rate: float,
        routing_key: Callable[[int], str],
        message_id: bool,
        headers: Callable[[int], Mapping[str, Any] | None] = lambda _n: None,
        dead_letter: Callable[[int], bool] = lambda _n: False,
        window: int = 200,
    ) -> None:
        self.url = url
        self.exchange = exchange
        self.src = src
        self.run_id = run
        self.rate = rate
        self.routing_key = routing_key
        self.message_id = message_id
        self.headers = headers
        self.dead_letter = dead_letter
        self.window = window
        self.acked: set[int] = set()
        self.returned: set[int] = set()
        self._returned_by_broker: set[int] = set()  # filled by the publishers as returns arrive
        self.attempted: set[int] = set()
        self.reconnects = 0
        self.nacked = 0
        self.returns = 0  # unroutable returns, each published again (until stop)
        self.republished: set[int] = set()  # nacked or returned, published again behind newer ones
        self.uncertain: set[int] = set()
        self._pause_until = 0.0
        self._produced = 0
        self._queue: list[int] = []  # to publish, in order
        self._in_flight: dict[int, asyncio.Future[bool]] = {}

    def properties(self, n: int) -> commands.Basic.Properties:
        """delivery_mode 2 (persistent), content_type, headers; a message_id only if asked for."""
        values: dict[str, Any] = {"delivery_mode": 2, "content_type": "application/json"}
        if self.message_id:
            values["message_id"] = f"{self.src}#{n}"
        headers = self.headers(n)
        if headers:
            values["headers"] = dict(headers)
        return commands.Basic.Properties(**values)

    async def run(self, stop: asyncio.Event, give_up_at: Callable[[], float | None]) -> None:
        pacer = Pacer(self.rate)
        publisher: AmqpPublisher | None = None
        try:
            while True:
                if not stop.is_set():
                    due = pacer.due()
                    self._queue.extend(range(self._produced, due))
                    self._produced = max(self._produced, due)
                self._collect(stopping=stop.is_set())
                deadline = give_up_at()
                if stop.is_set() and not self._queue and not self._in_flight:
                    return
                if deadline is not None and time.monotonic() > deadline:
                    return
                publisher = await self._usable(publisher)
                if publisher is None:
                    await asyncio.sleep(0.5)
                    continue
                if time.monotonic() >= self._pause_until:
                    await self._send(publisher)
                await asyncio.sleep(TICK)
        finally:
            if publisher is not None:
                await publisher.close()

    def _collect(self, *, stopping: bool) -> None:
        """Settle the publishes whose confirm (or failure) came back."""
        for n, future in list(self._in_flight.items()):
            if not future.done():
                continue
            del self._in_flight[n]
            if future.exception() is not None:
                self.uncertain.add(n)
                self._queue.append(n)  # the connection died: publish again
            elif future.result() and n in self._returned_by_broker:
                self._returned_by_broker.discard(n)
                self.returns += 1
                if stopping:
                    self.returned.add(n)
                else:
                    self.republished.add(n)
                    self._queue.append(n)
                    self._pause_until = time.monotonic() + 0.5
            elif future.result():
                self.acked.add(n)
                self.returned.discard(n)
            else:
                self.nacked += 1
                self.republished.add(n)
                self._queue.append(n)
        self._queue.sort()

    async def _usable(self, publisher: AmqpPublisher | None) -> AmqpPublisher | None:
        """The publisher, or a new one when it died (its unconfirmed publishes go back in line)."""
        if publisher is not None and not publisher.closed:
            return publisher
        if publisher is not None:
            self._queue = sorted({*self._queue, *self._in_flight})
            self._in_flight.clear()
            await publisher.close()
        try:
            publisher = await AmqpPublisher.connect(
                self.url, f"chaos-traffic-{self.src}", returned=self._returned_by_broker
            )
        except (TimeoutError, OSError, AmqpClosedError, asyncio.IncompleteReadError):
            return None
        self.reconnects += 1
        return publisher

    async def _send(self, publisher: AmqpPublisher) -> None:
        room = self.window - len(self._in_flight)
        sending, self._queue = self._queue[:room], self._queue[room:]
        try:
            for n in sending:
                self.attempted.add(n)
                self._in_flight[n] = publisher.publish(
                    n,
                    make_body(self.run_id, self.src, n, dead_letter=self.dead_letter(n)),
                    exchange=self.exchange,
                    routing_key=self.routing_key(n),
                    properties=self.properties(n),
                )
            await publisher.drain()
        except AmqpClosedError:
            self._queue = sorted({*self._queue, *sending} - set(self._in_flight))


async def check_no_message_id_on_the_wire(url: str, name: str) -> str:
    """Publish one message as AmqpTraffic(message_id=False) does, through a scratch exchange and
    queue, and read it back: fail if RabbitMQ delivers it with a message_id. Returns a summary."""
    traffic = AmqpTraffic(url, f"{name}-probe", "probe", name, rate=0, routing_key=lambda _n: "probe", message_id=False)
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.exchange_declare(f"{name}-probe", exchange_type="topic", auto_delete=True)
        declared = await channel.queue_declare("", exclusive=True, auto_delete=True)
        queue = declared.queue
        assert queue is not None
        await channel.queue_bind(queue, f"{name}-probe", routing_key="#")
        publisher = await AmqpPublisher.connect(url, "chaos-probe")
        try:
            acked = await asyncio.wait_for(
                publisher.publish(
                    0,
                    make_body(name, "probe", 0),
                    exchange=f"{name}-probe",
                    routing_key="probe",
                    properties=traffic.properties(0),
                ),
                10,
            )
        finally:
            await publisher.close()
        assert acked, "RabbitMQ nacked the probe"
        delivered = None
        for _ in range(50):
            delivered = await channel.basic_get(queue, no_ack=True)
            if delivered.body:
                break
            await asyncio.sleep(0.1)
        assert delivered is not None, "the probe message never arrived"
        assert delivered.body, "the probe message never arrived"
        properties = delivered.header.properties
        if properties.message_id is not None:
            raise AssertionError(
                f"the producer meant to set no message_id, but RabbitMQ delivered message_id={properties.message_id!r}"
            )
        await channel.exchange_delete(f"{name}-probe")
        return f"no message_id on the wire (delivery_mode={properties.delivery_mode}, headers={properties.headers})"
    finally:
        await connection.close()


async def read_stream_queue(url: str, queue: str, idle: float = 2.0, timeout: float = 60) -> list[tuple[int, bytes]]:
    """(offset, body) of every message in a stream queue, from its first offset, until nothing new
    arrived for `idle` seconds."""
    connection = await aiormq.connect(url)
    found: list[tuple[int, bytes]] = []
    last = time.monotonic()
    try:
        channel = await connection.channel()
        await channel.basic_qos(prefetch_count=1000)

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            nonlocal last
            offset = (message.header.properties.headers or {}).get("x-stream-offset")
            assert isinstance(offset, int), f"a stream delivery without x-stream-offset: {message!r}"
            assert message.delivery_tag is not None
            found.append((offset, message.body))
            last = time.monotonic()
            await message.channel.basic_ack(message.delivery_tag)

        await channel.basic_consume(queue, on_message, no_ack=False, arguments={"x-stream-offset": "first"})
        deadline = time.monotonic() + timeout
        while time.monotonic() - last < idle:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        await connection.close()
    return sorted(found)


# --------------------------------------------------------------------------- NATS


@dataclass
class NatsTraffic:
    """Numbered messages published straight into JetStream (producers that moved to NATS), each
    with a Nats-Msg-Id of its own and retried until stored."""

    js: JetStreamContext
    subject: Callable[[int], str]
    src: str
    run_id: str
    rate: float
    stored: set[int] = field(default_factory=set)
    errors: int = 0

    def msg_id(self, n: int) -> str:
        return f"{self.src}#{n}"

    async def run(self, stop: asyncio.Event, give_up_at: Callable[[], float | None]) -> None:
        pacer = Pacer(self.rate)
        produced = 0
        queue: list[int] = []
        while True:
            if not stop.is_set():
                due = pacer.due()
                queue.extend(range(produced, due))
                produced = max(produced, due)
            deadline = give_up_at()
            if stop.is_set() and not queue:
                return
            if deadline is not None and time.monotonic() > deadline:
                return
            failed = False
            while queue:
                try:
                    await self.js.publish(
                        self.subject(queue[0]),
                        make_body(self.run_id, self.src, queue[0]),
                        timeout=2,
                        headers={"Nats-Msg-Id": self.msg_id(queue[0])},
                    )
                except (TimeoutError, NatsError):
                    self.errors += 1
                    failed = True  # keep the order: try again from this one in a moment
                    break
                self.stored.add(queue.pop(0))
            await asyncio.sleep(0.5 if failed else TICK)
