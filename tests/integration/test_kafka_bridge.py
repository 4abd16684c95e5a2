"""Kafka -> JetStream end to end, against real Kafka and real NATS.

Every test here asserts the bridge's promise on what JetStream finally holds: each Kafka
record stored exactly once, one message per (partition, offset), each partition in offset
order — through SIGKILLs, restarts after the duplicate window, a NATS restart, and a
consumer-group rebalance — while a legacy consumer group on the same topic is untouched.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka_helpers import (
    BridgeProcess,
    describe_duplicates,
    fill_topic,
    stored_offsets,
    stored_records,
    wait_for_count,
    write_mapping,
)
from nats.aio.client import Client as NatsClient
from private_nats import PrivateNatsServer

from bridge.config import load_config
from bridge.runner import Bridge, RunSettings

BridgeFactory = Callable[[Path], BridgeProcess]

pytestmark = [pytest.mark.kafka, pytest.mark.nats]

TopicFactory = Callable[..., Awaitable[str]]


def assert_exactly_once_in_order(stored: dict[int, list[int]], produced: dict[int, int]) -> None:
    """One stored message per (partition, offset), each partition in offset order."""
    assert sorted(stored) == sorted(produced)
    for partition, offsets in stored.items():
        count = produced[partition]
        assert len(offsets) == count, f"partition {partition}: {len(offsets)} stored, {count} produced"
        assert offsets == list(range(count)), f"partition {partition} is not stored once each, in order"


async def run_in_process(mapping: Path, until: Callable[[], Awaitable[bool]], timeout: float = 60) -> Bridge:
    """Run a Bridge on `mapping` in this event loop until `until()` holds; stop it cleanly."""
    bridge = Bridge(load_config(mapping, env={}), RunSettings())
    task = asyncio.create_task(bridge.run())
    try:
        async with asyncio.timeout(timeout):
            while not await until():
                if task.done():
                    task.result()
                    raise AssertionError("bridge stopped by itself")
                await asyncio.sleep(0.05)
    finally:
        bridge.stop()
        await asyncio.wait_for(task, 60)
    return bridge


async def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()


async def test_records_arrive_with_metadata_headers_and_offset_msg_ids(
    tmp_path: Path, nats_url: str, kafka_bootstrap: str, kafka_topic: TopicFactory, unique_name: str, nc: NatsClient
) -> None:
    topic = await kafka_topic(partitions=3)
    stream = unique_name.upper()
    await fill_topic(kafka_bootstrap, topic, 300, 3)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    await producer.send_and_wait(topic, None, key=b"gone", partition=0)  # a tombstone
    await producer.stop()
    group = f"bridge-{unique_name}"
    mapping = write_mapping(
        tmp_path / "m.yaml", nats_url=nats_url, bootstrap=kafka_bootstrap, stream=stream, topic=topic, group=group
    )

    async def all_there() -> bool:
        return (await nc.jetstream().stream_info(stream)).state.messages >= 301 if await _exists(nc, stream) else False

    bridge = await run_in_process(mapping, all_there)
    js = nc.jetstream()
    first = await js.get_msg(stream, 1)
    headers = first.headers or {}
    partition, offset = int(headers["Kafka-Partition"]), int(headers["Kafka-Offset"])
    assert headers["Kafka-Topic"] == topic
    assert headers["Nats-Msg-Id"] == f"svc/copy/{topic}/{partition}/{offset}"
    assert headers["Kafka-Key"].startswith("k")
    assert int(headers["Kafka-Timestamp"]) > 1_700_000_000_000
    assert headers["n"].isdigit()
    assert first.subject == f"{stream.lower()}.{partition}"
    assert first.data == b"v" * 100
    tombstone = await js.get_last_msg(stream, f"{stream.lower()}.0")
    assert (tombstone.headers or {})["Kafka-Tombstone"] == "true"
    assert tombstone.data in (b"", None)
    assert bridge.pipelines[0].stats.published == 301
    # Settled means committed: the group's offsets are at the end of every partition.
    assert await committed(kafka_bootstrap, group, topic, 3) == {0: 101, 1: 100, 2: 100}


async def _exists(nc: NatsClient, stream: str) -> bool:
    try:
        await nc.jetstream().stream_info(stream)
    except nats.js.errors.NotFoundError:
        return False
    return True


@pytest.mark.parametrize("ordering", ["pipelined", "batched"])
async def test_sigkill_three_times_and_restarts_after_the_duplicate_window_store_each_record_once_in_order(
    ordering: str,
    tmp_path: Path,
    bridge_process: BridgeFactory,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    unique_name: str,
    nc: NatsClient,
) -> None:
    partitions, total = 6, 100_000
    topic = await kafka_topic(partitions=partitions)
    await fill_topic(kafka_bootstrap, topic, total, partitions)
    stream = unique_name.upper()
    mapping = write_mapping(
        tmp_path / "m.yaml",
        nats_url=nats_url,
        bootstrap=kafka_bootstrap,
        stream=stream,
        topic=topic,
        group=f"bridge-{unique_name}",
        duplicate_window="1s",
        ordering=ordering,
    )
    bridge = bridge_process(mapping)
    kill_points = sorted(random.sample(range(10_000, 90_000), 3))
    bridge.start()
    restarted_at = 0
    for point in kill_points:
        # Kill mid-flow: past the random point, and after this run has stored something.
        restarted_at = await wait_for_count(nc, stream, max(point, restarted_at + 2_000), timeout=120, bridges=[bridge])
        bridge.kill()
        # Longer than the stream's 1 s duplicate window: JetStream no longer remembers the
        # Msg-Ids, so only the bridge's checkpoints stand between a restart and duplicates.
        await asyncio.sleep(1.5)
        bridge.start()
    await wait_for_count(nc, stream, total, timeout=180, bridges=[bridge])
    await asyncio.sleep(2)  # anything stored twice would arrive now
    assert bridge.terminate() == 0, bridge.log()
    records = await stored_records(nc, stream)
    stored: dict[int, list[int]] = {}
    for partition, offset, _ in records:
        stored.setdefault(partition, []).append(offset)
    produced = {p: total // partitions + (1 if p < total % partitions else 0) for p in range(partitions)}
    try:
        assert_exactly_once_in_order(stored, produced)
    except AssertionError as failure:
        raise AssertionError(f"{failure}\n{describe_duplicates(records)}\n{bridge.log()}") from None


@pytest.mark.parametrize("ordering", ["pipelined", "batched"])
async def test_nats_server_restarted_mid_run_loses_nothing_and_keeps_order(
    ordering: str, tmp_path: Path, kafka_bootstrap: str, kafka_topic: TopicFactory, unique_name: str
) -> None:
    partitions, per_partition = 3, 15_000
    topic = await kafka_topic(partitions=partitions)
    await fill_topic(kafka_bootstrap, topic, partitions * per_partition, partitions)
    server = PrivateNatsServer(tmp_path / "nats")
    server.start()
    stream = unique_name.upper()
    mapping = write_mapping(
        tmp_path / "m.yaml",
        nats_url=server.url,
        bootstrap=kafka_bootstrap,
        stream=stream,
        topic=topic,
        group=f"bridge-{unique_name}",
        ordering=ordering,
    )
    client = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    restarts = 0

    async def done() -> bool:
        nonlocal restarts
        try:
            count = (await client.jetstream().stream_info(stream)).state.messages
        except (nats.errors.Error, TimeoutError):
            return False
        if restarts < 2 and count > (restarts + 1) * 12_000:
            restarts += 1
            await asyncio.to_thread(server.restart, kill=True)
            return False
        return count >= partitions * per_partition

    try:
        await run_in_process(mapping, done, timeout=180)
        assert restarts == 2
        stored = await stored_offsets(client, stream)
    finally:
        await client.close()
        server.stop(kill=True)
    assert_exactly_once_in_order(stored, dict.fromkeys(range(partitions), per_partition))


async def test_legacy_consumer_group_sees_every_record_unaffected_by_the_bridge(
    tmp_path: Path, nats_url: str, kafka_bootstrap: str, kafka_topic: TopicFactory, unique_name: str, nc: NatsClient
) -> None:
    topic = await kafka_topic(partitions=2)
    legacy_group = f"legacy-{unique_name}"
    await fill_topic(kafka_bootstrap, topic, 2_000, 2)
    legacy = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=legacy_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await legacy.start()
    seen: list[tuple[int, int]] = []
    try:
        async with asyncio.timeout(60):
            while len(seen) < 2_000:
                for records in (await legacy.getmany(timeout_ms=500)).values():
                    seen.extend((r.partition, r.offset) for r in records)
        await legacy.commit({TopicPartition(topic, p): 1_000 for p in range(2)})
        before = await committed(kafka_bootstrap, legacy_group, topic, 2)

        stream = unique_name.upper()
        mapping = write_mapping(
            tmp_path / "m.yaml",
            nats_url=nats_url,
            bootstrap=kafka_bootstrap,
            stream=stream,
            topic=topic,
            group=f"bridge-{unique_name}",
        )

        async def copied() -> bool:
            return await _exists(nc, stream) and (await nc.jetstream().stream_info(stream)).state.messages >= 2_000

        await run_in_process(mapping, copied)
        assert await committed(kafka_bootstrap, legacy_group, topic, 2) == before == {0: 1_000, 1: 1_000}

        # The legacy consumer goes on receiving every new record, none taken by the bridge.
        await fill_topic(kafka_bootstrap, topic, 500, 2)
        async with asyncio.timeout(60):
            while len(seen) < 2_500:
                for records in (await legacy.getmany(timeout_ms=500)).values():
                    seen.extend((r.partition, r.offset) for r in records)
    finally:
        await legacy.stop()
    assert sorted(seen) == sorted((p, o) for p in range(2) for o in range(1_250))


async def test_rebalance_when_a_second_instance_joins_and_leaves_loses_and_doubles_nothing(
    tmp_path: Path,
    bridge_process: BridgeFactory,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    unique_name: str,
    nc: NatsClient,
) -> None:
    partitions, per_partition = 6, 10_000
    topic = await kafka_topic(partitions=partitions)
    await fill_topic(kafka_bootstrap, topic, partitions * per_partition, partitions)
    stream = unique_name.upper()
    mapping = write_mapping(
        tmp_path / "m.yaml",
        nats_url=nats_url,
        bootstrap=kafka_bootstrap,
        stream=stream,
        topic=topic,
        group=f"bridge-{unique_name}",
    )
    first = bridge_process(mapping)
    second = bridge_process(mapping)
    first.start()
    await wait_for_count(nc, stream, 10_000, timeout=120, bridges=[first])
    second.start()  # joins the group: every partition is revoked and shared out again
    await second.wait_for_log("assigned")
    await wait_for_count(nc, stream, 30_000, timeout=120, bridges=[first, second])
    assert second.terminate() == 0, second.log()  # leaves: another rebalance
    await wait_for_count(nc, stream, partitions * per_partition, timeout=180, bridges=[first])
    await asyncio.sleep(2)
    assert first.terminate() == 0, first.log()
    stored = await stored_offsets(nc, stream)
    assert_exactly_once_in_order(stored, dict.fromkeys(range(partitions), per_partition))


async def test_start_at_a_timestamp_skips_older_records_and_a_regex_matches_whole_names(
    tmp_path: Path, nats_url: str, kafka_bootstrap: str, kafka_topic: TopicFactory, unique_name: str, nc: NatsClient
) -> None:
    topic = await kafka_topic(partitions=2)
    await fill_topic(kafka_bootstrap, topic, 100, 2)
    await asyncio.sleep(1.1)
    start = datetime.now(UTC).isoformat()
    await asyncio.sleep(1.1)
    await fill_topic(kafka_bootstrap, topic, 60, 2)
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

    async def newer_ones_there() -> bool:
        return await _exists(nc, stream) and (await nc.jetstream().stream_info(stream)).state.messages >= 60

    await run_in_process(mapping, newer_ones_there)
    await asyncio.sleep(0.5)
    stored = await stored_offsets(nc, stream)
    assert stored == {0: list(range(50, 80)), 1: list(range(50, 80))}

    # A pattern matches whole topic names, as Kafka's Java client does: 'tX' must not take 'tX-1'.
    other = await kafka_topic(partitions=1)
    assert other == f"{topic}-1"
    await fill_topic(kafka_bootstrap, other, 5, 1)
    pattern_stream = f"P{stream}"
    pattern_mapping = write_mapping(
        tmp_path / "pattern.yaml",
        nats_url=nats_url,
        bootstrap=kafka_bootstrap,
        stream=pattern_stream,
        topic=topic,
        group=f"bridge-{unique_name}-pattern",
    )
    pattern_mapping.write_text(pattern_mapping.read_text().replace(f'topics: ["{topic}"]', f'topic_pattern: "{topic}"'))

    async def topic_copied() -> bool:
        return (
            await _exists(nc, pattern_stream)
            and (await nc.jetstream().stream_info(pattern_stream)).state.messages >= 160
        )

    await run_in_process(pattern_mapping, topic_copied)
    await asyncio.sleep(1)
    assert (await nc.jetstream().stream_info(pattern_stream)).state.messages == 160
    await nc.jetstream().delete_stream(pattern_stream)
