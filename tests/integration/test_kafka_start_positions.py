"""Where a Kafka route starts reading a partition, against real Kafka and NATS.

`start: latest` is a decision about the records that were there before the route first ran; it
must never apply to a committed offset that retention removed (the bridge resumes at the earliest
offset still held, and says so) nor to a partition added to the topic later (all of its records
are new traffic). And a newly assigned partition hands the pipeline no record before its lane is
prepared and its start position is set.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, RecordsToDelete
from kafka_helpers import BridgeProcess, fill_topic, stored_offsets, wait_for_count, write_mapping
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from bridge.config import load_config
from bridge.runner import Bridge, RunSettings

pytestmark = [pytest.mark.kafka, pytest.mark.nats]

BridgeFactory = Callable[[Path], BridgeProcess]
TopicFactory = Callable[..., Awaitable[str]]


async def produce(bootstrap: str, topic: str, count: int, *, partition: int, first: int = 0) -> None:
    """`count` records into one partition, values `v<first>`, `v<first+1>`..., each acked."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        deadline = time.monotonic() + 30
        while partition not in (await producer.partitions_for(topic)):
            # A partition just added: the producer's metadata may not know it yet.
            if time.monotonic() > deadline:
                raise AssertionError(f"producer never saw partition {partition} of {topic}")
            producer.client.force_metadata_update()
            await asyncio.sleep(0.2)
        for i in range(first, first + count):
            await producer.send_and_wait(topic, f"v{i}".encode(), partition=partition)
    finally:
        await producer.stop()


async def test_a_removed_commit_resumes_at_the_earliest_offset_held_and_says_so(
    tmp_path: Path,
    bridge_process: BridgeFactory,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    unique_name: str,
    jetstream: JetStreamContext,
    nc: NatsClient,
) -> None:
    topic = await kafka_topic(partitions=1)
    await fill_topic(kafka_bootstrap, topic, 100, 1)  # before the route's first start: `latest` skips them
    stream = unique_name.upper()
    mapping = write_mapping(
        tmp_path / "m.yaml",
        nats_url=nats_url,
        bootstrap=kafka_bootstrap,
        stream=stream,
        topic=topic,
        group=f"bridge-{unique_name}",
        extra_from=", start: latest",
    )
    bridge = bridge_process(mapping)
    bridge.start()
    await bridge.wait_for_log(f"assigned {topic}/0", timeout=60)
    await asyncio.sleep(2)  # the first position taken (the end, 100) before anything newer arrives
    await produce(kafka_bootstrap, topic, 50, partition=0, first=100)  # offsets 100..149
    await wait_for_count(nc, stream, 50, timeout=60, bridges=[bridge])
    assert bridge.terminate() == 0, bridge.log()  # commits 150

    # While the bridge is away: 100 more records, and the head up to 200 removed (retention, or
    # DeleteRecords as here) — the group's commit, 150, is no longer held.
    await produce(kafka_bootstrap, topic, 100, partition=0, first=150)  # offsets 150..249
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        low = await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(before_offset=200)})
    finally:
        await admin.close()
    assert low[TopicPartition(topic, 0)] == 200

    again = bridge_process(mapping)
    again.start()
    await wait_for_count(nc, stream, 100, timeout=60, bridges=[again])
    await asyncio.sleep(1)  # anything more would arrive now
    assert again.terminate() == 0, again.log()
    stored = await stored_offsets(nc, stream)
    assert stored == {0: list(range(100, 150)) + list(range(200, 250))}, again.log()
    log = again.log_path.read_text()
    assert "WARNING" in log, log[-3000:]
    assert f"{topic}/0: its committed offset 150 is no longer held" in log, log[-3000:]
    assert "resuming at the earliest offset held, 200" in log, log[-3000:]


async def test_a_partition_added_while_the_bridge_runs_is_copied_from_its_first_record(
    tmp_path: Path,
    bridge_process: BridgeFactory,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    unique_name: str,
    jetstream: JetStreamContext,
    nc: NatsClient,
) -> None:
    topic = await kafka_topic(partitions=1)
    await fill_topic(kafka_bootstrap, topic, 30, 1)  # before the first start: skipped, as `latest` says
    stream = unique_name.upper()
    mapping = write_mapping(
        tmp_path / "m.yaml",
        nats_url=nats_url,
        bootstrap=kafka_bootstrap,
        stream=stream,
        topic=topic,
        group=f"bridge-{unique_name}",
        extra_from=", start: latest",
    )
    bridge = bridge_process(mapping)
    bridge.start()
    await bridge.wait_for_log(f"assigned {topic}/0", timeout=60)
    await asyncio.sleep(2)
    await produce(kafka_bootstrap, topic, 10, partition=0, first=30)
    await wait_for_count(nc, stream, 10, timeout=60, bridges=[bridge])

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_partitions({topic: NewPartitions(total_count=2)})
    finally:
        await admin.close()
    # Written before the bridge notices the new partition (its metadata is up to 30 s old).
    await produce(kafka_bootstrap, topic, 20, partition=1)
    await bridge.wait_for_log(f"assigned {topic}/0, {topic}/1", timeout=90)
    await wait_for_count(nc, stream, 30, timeout=60, bridges=[bridge])
    await asyncio.sleep(1)
    assert bridge.terminate() == 0, bridge.log()
    stored = await stored_offsets(nc, stream)
    assert stored == {0: list(range(30, 40)), 1: list(range(20))}, bridge.log()


async def test_no_record_of_a_new_partition_is_taken_before_it_is_prepared_and_positioned(
    tmp_path: Path,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    unique_name: str,
    jetstream: JetStreamContext,
    nc: NatsClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A route that starts at a time: finding the offset for that time is slowed (as a slow
    broker would), and meanwhile aiokafka already fetches the partition from its first record.
    Nothing older than the start time may be stored."""
    topic = await kafka_topic(partitions=2)
    await fill_topic(kafka_bootstrap, topic, 100, 2)
    await asyncio.sleep(1.1)
    start = datetime.now(UTC).isoformat()
    await asyncio.sleep(1.1)
    await fill_topic(kafka_bootstrap, topic, 40, 2)  # offsets 50..69 of each partition
    stream = unique_name.upper()
    mapping = write_mapping(
        tmp_path / "m.yaml",
        nats_url=nats_url,
        bootstrap=kafka_bootstrap,
        stream=stream,
        topic=topic,
        group=f"bridge-{unique_name}",
        extra_from=f', start: "{start}"',
    )
    original = AIOKafkaConsumer.offsets_for_times

    async def slow_offsets_for_times(self: AIOKafkaConsumer, timestamps: Any) -> Any:
        await asyncio.sleep(3)
        return await original(self, timestamps)

    monkeypatch.setattr(AIOKafkaConsumer, "offsets_for_times", slow_offsets_for_times)
    bridge = Bridge(load_config(mapping, env={}), RunSettings(http=None))
    task = asyncio.create_task(bridge.run())
    try:
        await wait_for_count(nc, stream, 40, timeout=60)
        await asyncio.sleep(1.5)  # anything older would have been stored by now
    finally:
        bridge.stop()
        await asyncio.wait_for(task, 60)
    stored = await stored_offsets(nc, stream)
    assert stored == {0: list(range(50, 70)), 1: list(range(50, 70))}
