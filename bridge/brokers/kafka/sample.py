"""`dry-run --sample` on Kafka: the last records of each topic the routes read, by a consumer
without a group, assigned to every partition: nothing committed, no legacy consumer disturbed
(bridge.dryrun.sample says why each broker is read the way it is)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bridge.brokers.base import Level, Look, SampledMessage, SampleRead
from bridge.brokers.kafka import client
from bridge.brokers.kafka.names import full_match_pattern
from bridge.brokers.kafka.records import kafka_message
from bridge.config.routes import FromKafka, RouteConfig
from bridge.config.sources import KafkaSource

CHECK = "sample"


def sample_topics(source_name: str, routes: Sequence[tuple[str, RouteConfig]], existing: Iterable[str]) -> list[str]:
    """The topics the routes of one Kafka source read, as they exist on the cluster now."""
    existing = set(existing)
    wanted: set[str] = set()
    for _, route in routes:
        subscription = route.from_
        if route.source != source_name or not isinstance(subscription, FromKafka):
            continue
        if subscription.topics:
            wanted.update(topic for topic in subscription.topics if topic in existing)
        else:
            regex = full_match_pattern(subscription.topic_pattern or "")
            wanted.update(topic for topic in existing if regex.match(topic) and not topic.startswith("__"))
    return sorted(wanted)


async def sample_kafka(
    name: str,
    source: KafkaSource,
    routes: Sequence[tuple[str, RouteConfig]],
    *,
    count: int,
    duration: float,
    seconds: float,
) -> SampleRead:
    """The last `count` records of each topic the source's routes read (by timestamp across
    its partitions), read without a consumer group."""
    sample = SampleRead()
    consumer = client.consumer(
        source,
        purpose="dry-run-sample",
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        request_timeout_ms=int(seconds * 1000),
    )
    admin = client.admin(source, purpose="dry-run-sample")
    servers = ",".join(source.bootstrap_servers)
    try:
        await asyncio.wait_for(asyncio.gather(consumer.start(), admin.start()), seconds * 2)
        topics = sample_topics(name, routes, await admin.list_topics())
        described = await admin.describe_topics(topics) if topics else []
        partitions = [
            TopicPartition(item["topic"], partition["partition"])
            for item in described
            for partition in item["partitions"]
        ]
        records = await _read_tails(consumer, partitions, count, duration) if partitions else {}
    except (KafkaError, OSError, TimeoutError) as error:
        text = str(error) or type(error).__name__
        sample.looks.append(Look(Level.ERROR, CHECK, f"kafka source '{name}'", f"cannot read {servers}: {text}"))
        return sample
    finally:
        with contextlib.suppress(KafkaError, OSError, TimeoutError, RuntimeError):
            await consumer.stop()
        with contextlib.suppress(KafkaError, OSError, TimeoutError, RuntimeError):
            await admin.close()
    for topic in topics:
        newest = sorted(records.get(topic, []), key=lambda r: (r.timestamp, r.partition, r.offset))[-count:]
        for record in sorted(newest, key=lambda r: (r.partition, r.offset)):
            where = f"kafka {record.topic}/{record.partition}@{record.offset}"
            sample.messages.append(SampledMessage(where, kafka_message(record), exact=True))
        sample.looks.append(
            Look(Level.INFO, CHECK, f"kafka topic '{topic}'", f"sampled the last {len(newest)} record(s)")
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
