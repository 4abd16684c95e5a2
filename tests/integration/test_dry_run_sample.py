"""`nats-bridge dry-run --sample N` against the real brokers: it shows what live messages would
become, and consumes, commits and acknowledges nothing (legacy consumers still get everything)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aio_pika
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

if TYPE_CHECKING:
    from conftest import TopicFactory
    from nats.js import JetStreamContext

pytestmark = [pytest.mark.kafka, pytest.mark.rabbitmq]

ROOT = Path(__file__).resolve().parents[2]


async def _start_sample(mapping: Path, *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "dry-run",
        str(mapping),
        "--json",
        *extra,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _finish(process: asyncio.subprocess.Process) -> tuple[int, Any]:
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert out, err.decode()
    return process.returncode or 0, json.loads(out)


def _routed(document: Any) -> list[tuple[str, str, str, str]]:
    """(read_from, route, subject, msg id) of every verdict, in reading order."""
    return [
        (message["read_from"], route["route"], route["subject"], route["msg_id"])
        for message in document["messages"]
        for route in message["routes"]
    ]


async def test_kafka_sample_reads_the_newest_records_without_a_group_and_commits_nothing(
    tmp_path: Path, nats_url: str, kafka_bootstrap: str, kafka_topic: TopicFactory, unique_name: str
) -> None:
    topic = await kafka_topic(partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        base = int(time.time() * 1000) - 60_000  # distinct timestamps: "newest" is well defined
        for i in range(20):
            await producer.send_and_wait(
                topic, f"v{i}".encode(), key=f"k{i}".encode(), partition=i % 2, timestamp_ms=base + i
            )
        # The newest record has no key: the route's template needs one, so it is unmappable.
        await producer.send_and_wait(topic, b"keyless", partition=1, timestamp_ms=base + 20)
    finally:
        await producer.stop()
    # A legacy group has read and committed part of the topic.
    legacy_group = f"{unique_name}-legacy"
    legacy = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=legacy_group, enable_auto_commit=False)
    await legacy.start()
    try:
        await legacy.getmany(timeout_ms=100)  # join the group
        partitions = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
        await legacy.commit({partitions[0]: 4, partitions[1]: 6})
    finally:
        await legacy.stop()
    mapping = tmp_path / "m.yaml"
    mapping.write_text(f"""
nats: {{servers: ["{nats_url}"]}}
streams:
  - {{name: {unique_name.upper()}, subjects: ["{unique_name}.>"]}}
sources:
  kafka: {{type: kafka, bootstrap_servers: ["{kafka_bootstrap}"]}}
services:
  {unique_name}:
    routes:
      - {{name: copy, source: kafka, from: {{topics: ["{topic}"]}}, to: "{unique_name}.{{key}}", on_error: dead-letter}}
""")

    code, document = await _finish(await _start_sample(mapping, "--sample", "5"))

    routed = _routed(document)
    # The five newest by time: offsets 8, 9 of partition 0 and 8, 9, 10 of partition 1.
    assert [where for where, *_ in routed] == [
        f"kafka {topic}/0@8",
        f"kafka {topic}/0@9",
        f"kafka {topic}/1@8",
        f"kafka {topic}/1@9",
        f"kafka {topic}/1@10",
    ]
    assert routed[0][1:] == (f"{unique_name}/copy", f"{unique_name}.k16", f"{unique_name}/copy/{topic}/0/8")
    keyless = document["messages"][-1]["routes"][0]
    assert (keyless["fate"], keyless["problem"]) == ("dead-letter", "unmappable")
    assert code == 1  # the unmappable one is a warning
    # Nothing joined a group or committed: the route's own group does not exist, the legacy
    # group's offsets are as it left them and it still gets every record after them.
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        groups = {group[0] for group in await admin.list_consumer_groups()}
        offsets = await admin.list_consumer_group_offsets(legacy_group)
    finally:
        await admin.close()
    assert f"nats-bridge.{unique_name}.copy" not in groups  # the route's own group was never made
    assert {tp.partition: meta.offset for tp, meta in offsets.items()} == {0: 4, 1: 6}
    legacy = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=legacy_group)
    await legacy.start()
    try:
        got: list[tuple[int, int]] = []
        while len(got) < 11:
            batches = await legacy.getmany(timeout_ms=5000)
            assert batches, f"legacy consumer starved after {got}"
            got += [(r.partition, r.offset) for records in batches.values() for r in records]
    finally:
        await legacy.stop()
    assert sorted(got) == [(0, o) for o in range(4, 10)] + [(1, o) for o in range(6, 11)]


async def test_rabbitmq_sample_copies_from_the_exchange_and_the_legacy_queue_keeps_everything(
    tmp_path: Path, nats_url: str, rabbit_vhost_url: str, unique_name: str
) -> None:
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(f"{unique_name}-ex", aio_pika.ExchangeType.TOPIC)
    legacy = await channel.declare_queue(f"{unique_name}-legacy")
    await legacy.bind(exchange, "#")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(f"""
nats: {{servers: ["{nats_url}"]}}
streams:
  - {{name: {unique_name.upper()}, subjects: ["{unique_name}.>"]}}
sources:
  rabbit: {{type: rabbitmq, url: "{rabbit_vhost_url}"}}
services:
  svc:
    routes:
      - name: orders
        source: rabbit
        from: {{exchange: {unique_name}-ex, bindings: ["order.#"]}}
        to: "{unique_name}.{{rk}}"
""")
    process = await _start_sample(mapping, "--sample", "10", "--duration", "4s")
    await asyncio.sleep(2.5)  # the sample's queue is bound by now (it listens 4 s)
    for key in ("order.eu.created", "audit.login", "order.us.paid"):
        await exchange.publish(aio_pika.Message(key.encode(), message_id=f"id-{key}"), routing_key=key)

    code, document = await _finish(process)

    messages = document["messages"]
    assert [m["read_from"] for m in messages] == [
        f"amqp {unique_name}-ex 'order.eu.created'",
        f"amqp {unique_name}-ex 'audit.login'",
        f"amqp {unique_name}-ex 'order.us.paid'",
    ]
    assert [(r["subject"], r["msg_id"]) for r in messages[0]["routes"]] == [
        (f"{unique_name}.order.eu.created", "svc/orders/id-order.eu.created")
    ]
    assert not messages[1]["routed"]
    assert "do not match routing key 'audit.login'" in messages[1]["misses"][0]["reason"]
    assert code == 1  # a message no route takes is a warning
    # The legacy queue got all three, the bridge's shadow queue was never declared.
    probe = await connection.channel()
    assert (await probe.declare_queue(legacy.name, passive=True)).declaration_result.message_count == 3
    with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
        await probe.declare_queue("nats-bridge.svc.orders", passive=True)
    await connection.close()


async def test_rabbitmq_stream_sample_reads_the_last_offsets(
    tmp_path: Path, nats_url: str, rabbit_vhost_url: str, unique_name: str, jetstream: JetStreamContext
) -> None:
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel()
    stream = await channel.declare_queue(f"{unique_name}-s", durable=True, arguments={"x-queue-type": "stream"})
    for i in range(30):
        await channel.default_exchange.publish(aio_pika.Message(f"m{i}".encode()), routing_key=stream.name)
    mapping = tmp_path / "m.yaml"
    mapping.write_text(f"""
nats: {{servers: ["{nats_url}"]}}
streams:
  - {{name: {unique_name.upper()}, subjects: ["{unique_name}.>"]}}
sources:
  rabbit: {{type: rabbitmq, url: "{rabbit_vhost_url}"}}
services:
  svc:
    routes:
      - {{name: s, source: rabbit, from: {{queue: {stream.name}, mode: stream}}, to: "{unique_name}.s"}}
""")

    code, document = await _finish(await _start_sample(mapping, "--sample", "4", "--duration", "5s"))

    assert code == 0, document["findings"]
    routed = _routed(document)
    assert [where for where, *_ in routed] == [f"amqp stream {stream.name}@{o}" for o in range(26, 30)]
    assert [msg_id for *_, msg_id in routed] == [f"svc/s/{stream.name}/{o}" for o in range(26, 30)]
    # Nothing was declared on NATS either.
    names = {info.config.name for info in await jetstream.streams_info()}
    assert unique_name.upper() not in names
    await connection.close()
