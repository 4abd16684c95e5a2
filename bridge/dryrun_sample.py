"""`dry-run --sample N`: what the bridge would do with the traffic on the brokers now.

A replay of recorded messages (bridge.dryrun_replay) shows the mapping's effect on traffic
someone saved; a sample reads it live. Reading must take nothing from anybody, so each kind
of source is read the one way that leaves it as it was:

- Kafka: a consumer *without a group*, assigned to every partition of the routes' topics and
  positioned at the last N offsets. No group is joined, nothing is committed, no legacy
  consumer's share of the partitions changes.
- A RabbitMQ exchange (shadow routes): a server-named, exclusive, auto-delete queue bound so
  that it gets a copy of everything the exchange routes (topic `#`, fanout, headers with
  `x-match: all` and no arguments; a direct exchange only the routes' own keys, as direct
  bindings have no wildcard). It sees what is published while it listens (`--duration`), not
  what was published before, and disappears with the connection.
- A RabbitMQ stream queue (stream routes): read from an offset. A stream keeps what is read;
  the acknowledgements a stream consumer sends only grant credit.
- A RabbitMQ queue a route drains (queue mode) is *not* sampled: a classic or quorum queue
  cannot be read without taking messages from its consumers, and a requeue would mark them
  redelivered (and count toward a quorum queue's delivery limit). Record them and use `--input`.

N is per place read (a topic, an exchange, a stream queue). Every sampled message then goes
through the same replay as `--input`, so what is shown is what `run` would publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiormq.abc import DeliveredMessage

from bridge.brokers.kafka.client import kafka_client_options
from bridge.brokers.kafka.names import full_match_pattern
from bridge.brokers.kafka.records import kafka_message
from bridge.brokers.rabbitmq.client import open_connection
from bridge.brokers.rabbitmq.records import STREAM_OFFSET_HEADER, amqp_message, stream_offset_of
from bridge.config.model import BridgeConfig
from bridge.config.routes import FromKafka, FromRabbitMQ, RabbitMQMode
from bridge.config.sources import KafkaSource, RabbitMQSource
from bridge.dryrun import Finding, Severity
from bridge.dryrun_replay import AmqpRecord, KafkaRecord, ReplayReport, replay_findings, replay_message
from bridge.errors import RabbitMQConnectError
from bridge.message import AmqpOrigin, SourceMessage
from bridge.routing import ExchangeType

CHECK = "sample"
CONNECT_TIMEOUT = 10.0


@dataclass(slots=True)
class Sampled:
    """One message read from a broker: where, the record a replay takes, the exact message."""

    where: str
    record: KafkaRecord | AmqpRecord
    message: SourceMessage | None = None  # exact, when a replay of `record` alone would lose detail


@dataclass(slots=True)
class Sample:
    """Everything read, and what could not be read or was left alone on purpose."""

    messages: list[Sampled] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


# --------------------------------------------------------------------------- Kafka


def _kafka_topics(config: BridgeConfig, source_name: str, existing: Iterable[str]) -> list[str]:
    """The topics the routes of one Kafka source read, as they exist on the cluster now."""
    existing = set(existing)
    wanted: set[str] = set()
    for _, route in config.routes():
        subscription = route.from_
        if route.source != source_name or not isinstance(subscription, FromKafka):
            continue
        if subscription.topics:
            wanted.update(topic for topic in subscription.topics if topic in existing)
        else:
            regex = full_match_pattern(subscription.topic_pattern or "")
            wanted.update(topic for topic in existing if regex.match(topic) and not topic.startswith("__"))
    return sorted(wanted)


async def sample_kafka(name: str, source: KafkaSource, config: BridgeConfig, count: int, duration: float) -> Sample:
    """The last `count` records of each topic the source's routes read (by timestamp across
    its partitions), read without a consumer group."""
    sample = Sample()
    consumer = AIOKafkaConsumer(
        **kafka_client_options(source, client_suffix="-dry-run-sample"),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        request_timeout_ms=int(CONNECT_TIMEOUT * 1000),
    )
    admin = AIOKafkaAdminClient(**kafka_client_options(source, client_suffix="-dry-run-sample"))
    servers = ",".join(source.bootstrap_servers)
    try:
        await asyncio.wait_for(asyncio.gather(consumer.start(), admin.start()), CONNECT_TIMEOUT * 2)
        topics = _kafka_topics(config, name, await admin.list_topics())
        described = await admin.describe_topics(topics) if topics else []
        partitions = [
            TopicPartition(item["topic"], partition["partition"])
            for item in described
            for partition in item["partitions"]
        ]
        records = await _read_tails(consumer, partitions, count, duration) if partitions else {}
    except (KafkaError, OSError, TimeoutError) as error:
        text = str(error) or type(error).__name__
        sample.findings.append(
            Finding(Severity.ERROR, CHECK, f"kafka source '{name}'", f"cannot read {servers}: {text}")
        )
        return sample
    finally:
        with contextlib.suppress(KafkaError, OSError, TimeoutError, RuntimeError):
            await consumer.stop()
        with contextlib.suppress(KafkaError, OSError, TimeoutError, RuntimeError):
            await admin.close()
    for topic in topics:
        newest = sorted(records.get(topic, []), key=lambda r: (r.timestamp, r.partition, r.offset))[-count:]
        for record in sorted(newest, key=lambda r: (r.partition, r.offset)):
            message = kafka_message(record)
            sample.messages.append(
                Sampled(f"kafka {record.topic}/{record.partition}@{record.offset}", _kafka_record(record), message)
            )
        sample.findings.append(
            Finding(Severity.INFO, CHECK, f"kafka topic '{topic}'", f"sampled the last {len(newest)} record(s)")
        )
    return sample


async def _read_tails(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], count: int, duration: float
) -> dict[str, list[Any]]:
    """Per topic, up to `count` records from the end of each partition, as of now."""
    consumer.assign(partitions)
    beginnings = await consumer.beginning_offsets(partitions)
    ends = await consumer.end_offsets(partitions)
    remaining: dict[TopicPartition, int] = {}
    for tp in partitions:
        start = max(beginnings[tp], ends[tp] - count)
        if start < ends[tp]:
            consumer.seek(tp, start)
            remaining[tp] = ends[tp]
    found: dict[str, list[Any]] = {}
    deadline = time.monotonic() + duration
    while remaining and time.monotonic() < deadline:
        batches = await consumer.getmany(*remaining, timeout_ms=200, max_records=1000)
        for tp, batch in batches.items():
            found.setdefault(tp.topic, []).extend(record for record in batch if record.offset < remaining.get(tp, 0))
        for tp in list(remaining):
            # Transaction markers and compacted gaps have offsets but no records: go by position.
            if await consumer.position(tp) >= remaining[tp]:
                del remaining[tp]
    return found


def _kafka_record(record: Any) -> KafkaRecord:
    return KafkaRecord(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=tuple(record.headers),
        timestamp_ms=record.timestamp,
    )


# --------------------------------------------------------------------------- RabbitMQ


@dataclass(slots=True)
class _Places:
    """What one RabbitMQ source's routes read: exchanges (with type and the direct keys), stream
    queues, and the queues that are left alone."""

    exchanges: dict[str, tuple[ExchangeType, set[str]]] = field(default_factory=dict)
    streams: set[str] = field(default_factory=set)
    queues: dict[str, str] = field(default_factory=dict)  # queue -> a route reading it


def _rabbitmq_places(config: BridgeConfig, source_name: str) -> _Places:
    places = _Places()
    for service, route in config.routes():
        subscription = route.from_
        if route.source != source_name or not isinstance(subscription, FromRabbitMQ):
            continue
        mode = subscription.effective_mode
        if mode is RabbitMQMode.SHADOW and subscription.exchange is not None:
            _, keys = places.exchanges.setdefault(subscription.exchange, (subscription.type, set()))
            keys.update(subscription.bindings)
        elif mode is RabbitMQMode.STREAM and subscription.queue is not None:
            places.streams.add(subscription.queue)
        elif subscription.queue is not None:
            places.queues.setdefault(subscription.queue, f"{service}/{route.name}")
    return places


async def sample_rabbitmq(
    name: str, source: RabbitMQSource, config: BridgeConfig, count: int, duration: float
) -> Sample:
    """Copies of what each exchange routes for `duration`, and the last messages of each stream."""
    sample = Sample()
    places = _rabbitmq_places(config, name)
    for queue, route in sorted(places.queues.items()):
        sample.findings.append(
            Finding(
                Severity.INFO,
                CHECK,
                route,
                f"queue '{queue}' not sampled: reading it would take messages from its consumers; "
                "record some and use --input",
            )
        )
    if not places.exchanges and not places.streams:
        return sample
    try:
        connection = await open_connection(source, connect_timeout=CONNECT_TIMEOUT)
    except RabbitMQConnectError as error:
        subject = f"rabbitmq source '{name}'"
        message = f"cannot connect to RabbitMQ at {error.where}: {error.reason}"
        sample.findings.append(Finding(Severity.ERROR, CHECK, subject, message))
        return sample
    try:
        jobs = [
            _sample_exchange(connection, exchange, kind, keys, count, duration)
            for exchange, (kind, keys) in sorted(places.exchanges.items())
        ]
        jobs += [_sample_stream(connection, queue, count, duration) for queue in sorted(places.streams)]
        for result in await asyncio.gather(*jobs):
            sample.messages += result.messages
            sample.findings += result.findings
    finally:
        with contextlib.suppress(aiormq.exceptions.AMQPError, OSError, RuntimeError):
            await connection.close()
    return sample


async def _collect(
    channel: aio_pika.abc.AbstractChannel,
    queue: str,
    count: int,
    duration: float,
    arguments: dict[str, Any] | None = None,
    *,
    until_offset: int | None = None,
) -> list[DeliveredMessage]:
    """Consume up to `count` deliveries from `queue` within `duration` (stream queues: also
    stop at `until_offset`), then cancel the consumer."""
    underlay = await channel.get_underlay_channel()
    got: list[DeliveredMessage] = []
    done = asyncio.Event()

    async def on_delivery(delivered: DeliveredMessage) -> None:
        if done.is_set():
            return
        got.append(delivered)
        if until_offset is not None:
            offset, _ = stream_offset_of(delivered)
            if offset is not None and offset >= until_offset:
                done.set()
        if len(got) >= count and until_offset is None:
            done.set()
        if until_offset is not None:
            # A stream consumer needs acks for credit; they remove nothing.
            await underlay.basic_ack(delivered.delivery_tag or 0)

    no_ack = until_offset is None
    consume = await underlay.basic_consume(queue, on_delivery, no_ack=no_ack, arguments=arguments or {})
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), duration)
    done.set()
    with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError):
        await underlay.basic_cancel(consume.consumer_tag or "")
    return got


async def _sample_exchange(
    connection: aio_pika.abc.AbstractConnection,
    exchange: str,
    kind: ExchangeType,
    keys: set[str],
    count: int,
    duration: float,
) -> Sample:
    sample = Sample()
    subject = f"exchange '{exchange}'"
    channel = await connection.channel(publisher_confirms=False)
    try:
        # Server-named, exclusive, auto-delete: nobody else can use it and it is gone when
        # this connection closes, whatever happens to this process.
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        bindings: list[tuple[str, dict[str, Any] | None]]
        if kind is ExchangeType.TOPIC:
            bindings = [("#", None)]
        elif kind is ExchangeType.FANOUT:
            bindings = [("", None)]
        elif kind is ExchangeType.HEADERS:
            bindings = [("", {"x-match": "all"})]
        else:
            bindings = [(key, None) for key in sorted(keys)]
        for key, arguments in bindings:
            await queue.bind(exchange, routing_key=key, arguments=arguments)
        delivered = await _collect(channel, queue.name, count, duration)
    except aiormq.exceptions.ChannelNotFoundEntity:
        sample.findings.append(Finding(Severity.ERROR, CHECK, subject, f"exchange '{exchange}' does not exist"))
        return sample
    except (aiormq.exceptions.AMQPError, ConnectionError) as error:
        sample.findings.append(Finding(Severity.ERROR, CHECK, subject, f"cannot sample: {error}"))
        return sample
    finally:
        if not channel.is_closed:
            with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError):
                await channel.close()
    for item in delivered:
        message = amqp_message(item, None, dict(item.header.properties.headers or {}), None)
        record = _amqp_record(message)
        sample.messages.append(Sampled(f"amqp {exchange} '{record.routing_key}'", record))
    scope = "" if kind is not ExchangeType.DIRECT else f" (direct: only keys {', '.join(sorted(keys))})"
    sample.findings.append(
        Finding(
            Severity.INFO,
            CHECK,
            subject,
            f"{len(delivered)} message(s) copied in {duration:g}s by a temporary exclusive queue{scope}",
        )
    )
    return sample


async def _sample_stream(
    connection: aio_pika.abc.AbstractConnection, stream: str, count: int, duration: float
) -> Sample:
    """The last `count` messages of a stream queue: first its end (from the last chunk), then
    from `end - count + 1` up to that end."""
    sample = Sample()
    subject = f"stream queue '{stream}'"
    channel = await connection.channel(publisher_confirms=False)
    try:
        await channel.set_qos(prefetch_count=min(1000, max(10, count)))
        tail = await _collect(
            channel, stream, 1 << 30, min(duration, 2.0), {STREAM_OFFSET_HEADER: "last"}, until_offset=1 << 62
        )
        offsets = [offset for offset, _ in map(stream_offset_of, tail) if offset is not None]
        if not offsets:
            sample.findings.append(Finding(Severity.INFO, CHECK, subject, "the stream is empty"))
            return sample
        end = max(offsets)
        start = max(0, end - count + 1)
        delivered = await _collect(channel, stream, count, duration, {STREAM_OFFSET_HEADER: start}, until_offset=end)
    except aiormq.exceptions.ChannelNotFoundEntity:
        sample.findings.append(Finding(Severity.ERROR, CHECK, subject, f"queue '{stream}' does not exist"))
        return sample
    except (aiormq.exceptions.AMQPError, ConnectionError) as error:
        sample.findings.append(Finding(Severity.ERROR, CHECK, subject, f"cannot sample: {error}"))
        return sample
    finally:
        if not channel.is_closed:
            with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError):
                await channel.close()
    seen: set[int] = set()
    for item in delivered:
        offset, headers = stream_offset_of(item)
        # A stream consumer starts at its chunk's first message: drop what is before `start`.
        if offset is None or offset < start or offset > end or offset in seen:
            continue
        seen.add(offset)
        message = amqp_message(item, stream, headers, offset)
        sample.messages.append(Sampled(f"amqp stream {stream}@{offset}", _amqp_record(message, stream), message))
    sample.findings.append(Finding(Severity.INFO, CHECK, subject, f"sampled offsets {start}..{end} ({len(seen)})"))
    return sample


def _amqp_record(message: SourceMessage, queue: str | None = None) -> AmqpRecord:
    """The replay record of a delivery: from its exchange, or (stream routes) its queue."""
    origin = message.origin
    assert isinstance(origin, AmqpOrigin)
    return AmqpRecord(
        exchange=origin.exchange if queue is None else None,
        routing_key=origin.routing_key,
        queue=queue,
        properties=dict(origin.properties),
        headers=dict(message.headers),
        body=message.body or b"",
    )


# --------------------------------------------------------------------------- all of it


async def sample_all(config: BridgeConfig, count: int, duration: float) -> Sample:
    """Every source at once (exchanges listen for `duration` in parallel)."""
    jobs = [
        sample_rabbitmq(name, source, config, count, duration)
        if isinstance(source, RabbitMQSource)
        else sample_kafka(name, source, config, count, duration)
        for name, source in config.sources.items()
    ]
    total = Sample()
    for result in await asyncio.gather(*jobs):
        total.messages += result.messages
        total.findings += result.findings
    return total


async def sample_into(report: ReplayReport, config: BridgeConfig, count: int, duration: float) -> None:
    """Read the sample and replay it into `report`: messages numbered in reading order."""
    sample = await sample_all(config, count, duration)
    report.findings += sample.findings
    for number, sampled in enumerate(sample.messages, start=1):
        replayed = replay_message(config, number, sampled.record, max_payload=report.max_payload, exact=sampled.message)
        report.messages.append(replayed)
        report.where.append(sampled.where)
    report.findings += replay_findings(report.messages, report.input_file)
