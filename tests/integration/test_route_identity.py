"""Two routes that store copies of one Kafka topic into one stream, against real brokers.

JetStream de-duplicates by Nats-Msg-Id per stream, not per subject, and a checkpoint scan
reads the stream by (topic, partition, offset): before every message named its route, route A
dropped route B's copies as duplicates and skipped the offsets B had stored as "already
stored". These tests show each route storing every record once, through a SIGKILL, a restart
after the duplicate window, and an upgrade from messages stored before `Bridge-Route`.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka_helpers import BridgeProcess, fill_topic, stream_count, wait_for_count
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BucketNotFoundError

from bridge.jetstream.checkpoints import BUCKET, checkpoint_key
from bridge.mapping import ROUTE_NAME_HEADER

ROUTES = {"one/copy": "a", "two/copy": "b"}


def _mapping(path: Path, nats_url: str, bootstrap: str, stream: str, topic: str, services: list[str]) -> Path:
    blocks = "".join(
        textwrap.indent(
            textwrap.dedent(f"""\
                {service}:
                  routes:
                    - name: copy
                      source: kafka
                      from: {{topics: ["{topic}"], group: "{stream}-{service}"}}
                      to: "{stream}.{prefix}.{{partition}}"
            """),
            "  ",
        )
        for service, prefix in (("one", "a"), ("two", "b"))
        if service in services
    )
    path.write_text(
        textwrap.dedent(f"""\
            nats:
              servers: ["{nats_url}"]
            streams:
              - name: {stream.upper()}
                subjects: ["{stream}.a.>", "{stream}.b.>"]
                duplicate_window: 2s
            sources:
              kafka:
                type: kafka
                bootstrap_servers: ["{bootstrap}"]
            services:
            """)
        + blocks
    )
    return path


async def _stored(nc: NatsClient, stream: str) -> list[tuple[str, dict[str, str]]]:
    """(subject, headers) of every message in `stream`, in stream order."""
    js = nc.jetstream(timeout=20)
    total = (await js.stream_info(stream)).state.messages
    config = js_api.ConsumerConfig(ack_policy=js_api.AckPolicy.NONE, headers_only=True)
    subscription = await js.pull_subscribe("", stream=stream, config=config)
    found: list[tuple[str, dict[str, str]]] = []
    while len(found) < total:
        batch = await subscription.fetch(min(total - len(found), 2000), timeout=20)
        found += [(message.subject, dict(message.headers or {})) for message in batch]
    await subscription.unsubscribe()
    return found


def _per_route(stored: list[tuple[str, dict[str, str]]], stream: str) -> dict[str, Counter[tuple[int, int]]]:
    """Per route (named by the subject it stored to) the count of each (partition, offset)."""
    copies: dict[str, Counter[tuple[int, int]]] = {route: Counter() for route in ROUTES}
    for subject, headers in stored:
        route = next(r for r, prefix in ROUTES.items() if subject.startswith(f"{stream}.{prefix}."))
        copies[route][(int(headers["Kafka-Partition"]), int(headers["Kafka-Offset"]))] += 1
    return copies


def _exactly_once(copies: Counter[tuple[int, int]], expected: set[tuple[int, int]]) -> str:
    missing = sorted(expected - set(copies))
    doubled = sorted(key for key, count in copies.items() if count > 1)
    if not missing and not doubled:
        return ""
    return f"{len(missing)} missing (first {missing[:5]}), {len(doubled)} doubled (first {doubled[:5]})"


async def test_two_routes_on_one_topic_into_one_stream_each_store_every_record_once_through_a_sigkill(
    tmp_path: Path,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: Callable[..., object],
    jetstream: JetStreamContext,
    nc: NatsClient,
    unique_name: str,
    bridge_process: Callable[[Path], BridgeProcess],
) -> None:
    count, partitions = 6000, 2
    topic = await kafka_topic(partitions=partitions)  # type: ignore[misc]
    stream = unique_name.upper()
    mapping = _mapping(tmp_path / "m.yaml", nats_url, kafka_bootstrap, unique_name, topic, ["one", "two"])
    await fill_topic(kafka_bootstrap, topic, count, partitions)
    first = bridge_process(mapping)
    first.start()
    # Killed while both routes are half way: copies in flight, checkpoints written, commits lagging.
    await wait_for_count(nc, stream, count // 2, timeout=120, bridges=[first])
    first.kill()
    second = bridge_process(mapping)
    second.start()
    await wait_for_count(nc, stream, 2 * count, timeout=120, bridges=[second])
    await asyncio.sleep(3)  # anything stored twice would land now
    stored = await _stored(nc, stream)
    expected = {(i % partitions, i // partitions) for i in range(count)}
    copies = _per_route(stored, unique_name)
    for route in ROUTES:
        problem = _exactly_once(copies[route], expected)
        assert not problem, f"route {route}: {problem}; stream holds {len(stored)}\n{second.log()}"
    assert {headers[ROUTE_NAME_HEADER] for _, headers in stored} == set(ROUTES)
    assert await stream_count(nc, stream) == 2 * count


async def test_a_restart_after_the_window_never_takes_another_routes_copies_for_its_own(
    tmp_path: Path,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: Callable[..., object],
    jetstream: JetStreamContext,
    nc: NatsClient,
    unique_name: str,
    bridge_process: Callable[[Path], BridgeProcess],
) -> None:
    """Route one stores half the topic and stops; route two then stores all of it; route one,
    restarted after the duplicate window, scans the stream from its checkpoint, meets route
    two's copies of the offsets it has still to do, and must store them all the same."""
    half, partitions = 500, 2
    topic = await kafka_topic(partitions=partitions)  # type: ignore[misc]
    stream = unique_name.upper()
    only_one = _mapping(tmp_path / "one.yaml", nats_url, kafka_bootstrap, unique_name, topic, ["one"])
    only_two = _mapping(tmp_path / "two.yaml", nats_url, kafka_bootstrap, unique_name, topic, ["two"])
    await fill_topic(kafka_bootstrap, topic, half, partitions)
    one = bridge_process(only_one)
    one.start()
    await wait_for_count(nc, stream, half, timeout=120, bridges=[one])
    assert one.terminate() == 0, one.log()
    await fill_topic(kafka_bootstrap, topic, half, partitions)
    two = bridge_process(only_two)
    two.start()
    await wait_for_count(nc, stream, 3 * half, timeout=120, bridges=[two])
    assert two.terminate() == 0, two.log()
    await asyncio.sleep(3)  # past the 2 s duplicate window: only the checkpoint scan can tell
    again = bridge_process(only_one)
    again.start()
    await wait_for_count(nc, stream, 4 * half, timeout=120, bridges=[again])
    await again.wait_for_log("resuming", timeout=30)
    await asyncio.sleep(2)
    assert again.terminate() == 0, again.log()
    copies = _per_route(await _stored(nc, stream), unique_name)
    expected = {(i % partitions, i // partitions) for i in range(2 * half)}
    for route in ROUTES:
        problem = _exactly_once(copies[route], expected)
        assert not problem, f"route {route}: {problem}\n{again.log()}"


async def _commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def test_an_upgrade_stores_nothing_again_that_the_old_id_format_stored(
    tmp_path: Path,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: Callable[..., object],
    jetstream: JetStreamContext,
    nc: NatsClient,
    unique_name: str,
    bridge_process: Callable[[Path], BridgeProcess],
) -> None:
    """What a bridge before `Bridge-Route` left behind after a crash: records 0..799 stored
    under Msg-Ids `topic/partition/offset` without the header, a checkpoint through 599 and a
    group commit at 600. The upgraded bridge re-reads from 600 under the new id format, which
    JetStream cannot match; its scan must take 600..799 for stored and copy only 800..999."""
    count, stored_before, checkpoint = 1000, 800, 599
    topic = await kafka_topic(partitions=1)  # type: ignore[misc]
    stream = unique_name.upper()
    mapping = _mapping(tmp_path / "m.yaml", nats_url, kafka_bootstrap, unique_name, topic, ["one"])
    await fill_topic(kafka_bootstrap, topic, count, 1)
    await jetstream.add_stream(name=stream, subjects=[f"{unique_name}.a.>", f"{unique_name}.b.>"], duplicate_window=2.0)
    first_seq = 0
    for offset in range(stored_before):
        ack = await jetstream.publish(
            f"{unique_name}.a.0",
            b"v" * 100,
            headers={
                "Kafka-Topic": topic,
                "Kafka-Partition": "0",
                "Kafka-Offset": str(offset),
                "Nats-Msg-Id": f"{topic}/0/{offset}",
            },
        )
        first_seq = first_seq or ack.seq
    group = f"{unique_name}-one"
    try:
        kv = await jetstream.key_value(BUCKET)
    except BucketNotFoundError:  # a fresh server: the bridge has not made it yet
        kv = await jetstream.create_key_value(js_api.KeyValueConfig(bucket=BUCKET, history=1))
    await kv.put(
        checkpoint_key(f"one/copy|kafka-group:{group}", (topic, 0)),
        json.dumps({"position": checkpoint, "scan_from": {stream: first_seq + checkpoint}}).encode(),
    )
    await _commit(kafka_bootstrap, group, {TopicPartition(topic, 0): checkpoint + 1})
    await asyncio.sleep(2.5)  # past the duplicate window: the old ids are forgotten anyway
    bridge = bridge_process(mapping)
    bridge.start()
    await wait_for_count(nc, stream, count, timeout=120, bridges=[bridge])
    await asyncio.sleep(2)
    assert bridge.terminate() == 0, bridge.log()
    stored = await _stored(nc, stream)
    offsets = Counter(int(headers["Kafka-Offset"]) for _, headers in stored)
    doubled = sorted(offset for offset, copies in offsets.items() if copies > 1)
    assert not doubled, f"{len(doubled)} stored again after the upgrade (first {doubled[:5]})\n{bridge.log()}"
    assert set(offsets) == set(range(count))
    new = [headers for _, headers in stored if ROUTE_NAME_HEADER in headers]
    assert sorted(int(h["Kafka-Offset"]) for h in new) == list(range(stored_before, count))
    assert all(h["Nats-Msg-Id"] == f"one/copy/{topic}/0/{h['Kafka-Offset']}" for h in new)
