"""A route's source backlog seen from outside the bridge (for `status` and `cutover --wait`).

The running bridge knows its own backlog, but an operator's command must not depend on a
bridge answering, and with several instances no single one sees every partition. So this
asks the brokers directly, read-only: Kafka end offsets against the bridge group's committed
offsets (an admin request, no group joined), and a RabbitMQ passive declare of the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import aiormq
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bridge.config.model import (
    BridgeConfig,
    FromKafka,
    FromRabbitMQ,
    KafkaSource,
    RabbitMQMode,
    RabbitMQSource,
    RouteConfig,
)
from bridge.sources.kafka import default_group, full_match_pattern, kafka_client_options
from bridge.sources.rabbitmq import RabbitMQConnectError, open_connection, shadow_queue_name

TIMEOUT = 10.0


@dataclass(slots=True)
class Backlog:
    """Per lane (`topic/partition`, or the queue) what waits at the source; `error` when unknown.
    `lanes` is empty and `note` says why for sources without a backlog figure (stream queues)."""

    lanes: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    note: str | None = None

    @property
    def total(self) -> int:
        return sum(self.lanes.values())


async def route_backlog(config: BridgeConfig, service: str, route: RouteConfig) -> Backlog:
    source = config.sources[route.source]
    subscription = route.from_
    if isinstance(subscription, FromKafka) and isinstance(source, KafkaSource):
        return await _kafka_backlog(source, subscription, subscription.group or default_group(service, route.name))
    assert isinstance(subscription, FromRabbitMQ)
    assert isinstance(source, RabbitMQSource)
    mode = subscription.effective_mode
    if mode is RabbitMQMode.STREAM:
        return Backlog(note="a stream queue keeps what is read: no backlog figure")
    queue = subscription.queue or shadow_queue_name(service, route.name)
    return await _queue_depth(source, queue)


async def _kafka_backlog(source: KafkaSource, subscription: FromKafka, group: str) -> Backlog:
    options = kafka_client_options(source, client_suffix="-status")
    admin = AIOKafkaAdminClient(**options, request_timeout_ms=int(TIMEOUT * 1000))
    consumer = AIOKafkaConsumer(**options, group_id=None, enable_auto_commit=False)
    try:
        await asyncio.wait_for(asyncio.gather(admin.start(), consumer.start()), TIMEOUT)
        existing = await admin.list_topics()
        if subscription.topics:
            topics = [topic for topic in subscription.topics if topic in existing]
        else:
            regex = full_match_pattern(subscription.topic_pattern or "")
            topics = sorted(t for t in existing if regex.match(t) and not t.startswith("__"))
        if not topics:
            return Backlog(note="no topic of the route exists yet")
        described = await admin.describe_topics(topics)
        partitions = [TopicPartition(item["topic"], p["partition"]) for item in described for p in item["partitions"]]
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        committed = await admin.list_consumer_group_offsets(group)
    except (KafkaError, OSError, TimeoutError) as error:
        return Backlog(error=f"Kafka at {','.join(source.bootstrap_servers)}: {error or type(error).__name__}")
    finally:
        with contextlib.suppress(KafkaError, OSError, TimeoutError, RuntimeError):
            await consumer.stop()
        with contextlib.suppress(KafkaError, OSError, TimeoutError, RuntimeError):
            await admin.close()
    lanes = {}
    for tp in sorted(partitions):
        meta = committed.get(tp)
        position = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
        lanes[f"{tp.topic}/{tp.partition}"] = max(0, ends[tp] - position)
    return Backlog(lanes)


async def _queue_depth(source: RabbitMQSource, queue: str) -> Backlog:
    try:
        connection = await open_connection(source, connect_timeout=TIMEOUT)
    except RabbitMQConnectError as error:
        return Backlog(error=str(error))
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return Backlog({queue: int(declared.declaration_result.message_count or 0)})
    except aiormq.exceptions.ChannelNotFoundEntity:
        return Backlog(note=f"queue '{queue}' does not exist")
    except (aiormq.exceptions.AMQPError, ConnectionError) as error:
        return Backlog(error=f"queue '{queue}': {error}")
    finally:
        with contextlib.suppress(aiormq.exceptions.AMQPError, OSError, RuntimeError):
            await connection.close()
