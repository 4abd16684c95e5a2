"""`nats-bridge dry-run --connect` against the real brokers: it reports, and touches nothing."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aio_pika
import pytest
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from bridge.brokers.nats.admin import all_stream_infos

if TYPE_CHECKING:
    from conftest import TopicFactory
    from nats.js import JetStreamContext

ROOT = Path(__file__).resolve().parents[2]


async def _dry_run(mapping: Path, *extra: str) -> tuple[int, Any, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "dry-run",
        str(mapping),
        "--connect",
        *extra,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    text = out.decode() + err.decode()
    document = json.loads(out) if "--json" in extra else None
    return process.returncode or 0, document, text


def _mapping(tmp_path: Path, nats_url: str, amqp: str, kafka: str, name: str, topic: str) -> Path:
    path = tmp_path / "mapping.yaml"
    path.write_text(f"""
version: 1
nats: {{servers: ["{nats_url}"]}}
streams:
  - {{name: {name.upper()}_A, subjects: ["{name}.a.>"], max_age: 1d}}
sources:
  rabbit: {{type: rabbitmq, url: "{amqp}"}}
  kafka: {{type: kafka, bootstrap_servers: ["{kafka}"]}}
services:
  {name}:
    routes:
      - {{name: shadow, source: rabbit, from: {{exchange: {name}-ex, bindings: ["#"]}}, to: "{name}.a.{{rk}}"}}
      - {{name: drain, source: rabbit, from: {{queue: {name}-missing-q}}, to: "{name}.a.q.{{rk}}"}}
      - {{name: records, source: kafka, from: {{topics: ["{topic}"]}}, to: "{name}.a.k.{{partition}}"}}
      - {{name: absent, source: kafka, from: {{topics: ["{name}-absent"]}}, to: "{name}.a.x.{{partition}}"}}
""")
    return path


def _messages(document: Any) -> list[str]:
    return [f"{f['severity']} {f['check']} {f['subject']}: {f['message']}" for f in document["findings"]]


async def test_dry_run_connect_reports_and_touches_nothing(
    tmp_path: Path,
    nats_url: str,
    rabbit_vhost_url: str,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    jetstream: JetStreamContext,
    unique_name: str,
) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

    topic = await kafka_topic()
    stream = f"{unique_name.upper()}_A"
    # The stream exists with another max_age: the drift table must show it.
    await jetstream.add_stream(js_api.StreamConfig(name=stream, subjects=[f"{unique_name}.a.>"], max_age=3600))
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(f"{unique_name}-ex", aio_pika.ExchangeType.TOPIC)
    legacy = await channel.declare_queue(f"{unique_name}-legacy")
    await legacy.bind(exchange, "#")
    mapping = _mapping(tmp_path, nats_url, rabbit_vhost_url, kafka_bootstrap, unique_name, topic)

    code, document, _ = await _dry_run(mapping, "--json")

    lines = _messages(document)
    assert code == 2, lines
    assert any(line.startswith("info connect nats") for line in lines), lines
    assert any("queue '" + f"{unique_name}-missing-q' does not exist" in line for line in lines), lines
    assert any(f"topic '{unique_name}-absent' does not exist" in line for line in lines), lines
    assert any(f"exchange '{unique_name}-ex' exists" in line for line in lines), lines
    assert any(f"topic '{topic}' exists" in line for line in lines), lines
    (plan,) = [s for s in document["streams"]["streams"] if s["stream"] == stream]
    assert plan["action"] == "update"
    assert {"field": "max_age", "server": 3600.0, "file": 86400.0} in plan["changes"]

    # Nothing was touched: no new stream, no shadow queue, no Kafka group, the legacy queue untouched.
    names = set(await all_stream_infos(jetstream))  # every page: the shared server may hold 256+ streams
    assert [name for name in names if unique_name.upper() in name] == [stream]
    shadow = f"nats-bridge.{unique_name}.shadow"
    probe = await connection.channel()
    with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
        await probe.declare_queue(shadow, passive=True)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        groups = {group[0] for group in await admin.list_consumer_groups()}
    finally:
        await admin.close()
    assert not {g for g in groups if g.startswith(f"nats-bridge.{unique_name}.")}, groups
    # A legacy consumer still gets every message.
    await exchange.publish(aio_pika.Message(b"one"), routing_key="x.y")
    async with legacy.iterator() as messages:
        async for message in messages:
            assert message.body == b"one"
            await message.ack()
            break
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    await producer.send_and_wait(topic, b"record")
    await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, group_id=f"{unique_name}-legacy", auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 30)
        assert record.value == b"record"
    finally:
        await consumer.stop()
    await connection.close()


async def test_stream_missing_is_reported_and_not_created(
    tmp_path: Path, nats_url: str, amqp_url: str, kafka_bootstrap: str, jetstream: JetStreamContext, unique_name: str
) -> None:
    mapping = _mapping(tmp_path, nats_url, amqp_url, kafka_bootstrap, unique_name, f"{unique_name}-t")
    code, document, _ = await _dry_run(mapping, "--json")
    assert code == 2
    assert any(f"{unique_name.upper()}_A: missing on the server" in line for line in _messages(document))
    names = {info.config.name for info in await jetstream.streams_info()}
    assert f"{unique_name.upper()}_A" not in names


async def test_wrong_rabbitmq_password_is_clear_and_redacted(
    tmp_path: Path,
    nats_url: str,
    amqp_url: str,
    kafka_bootstrap: str,
    unique_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A password is a reference, never written in the URL (validate refuses that).
    monkeypatch.setenv("WRONG_AMQP_PASSWORD", "s3cret-pw")
    wrong = amqp_url.replace("guest:guest@", "guest:${WRONG_AMQP_PASSWORD}@")
    mapping = _mapping(tmp_path, nats_url, wrong, kafka_bootstrap, unique_name, f"{unique_name}-t")
    code, document, json_text = await _dry_run(mapping, "--json")
    assert code == 2
    (error,) = [line for line in _messages(document) if "cannot connect to RabbitMQ" in line]
    assert "error connect rabbitmq source 'rabbit': cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1" in error
    _, _, table_text = await _dry_run(mapping)
    assert "s3cret-pw" not in json_text
    assert "s3cret-pw" not in table_text


async def test_declared_consumers_drift_is_reported_and_nothing_is_made(
    tmp_path: Path, nats_url: str, amqp_url: str, jetstream: JetStreamContext, unique_name: str
) -> None:
    """Each declared consumer as `consumers plan` sees it: missing (info), drifted (warning), a
    change JetStream refuses (error) — and dry-run makes or changes none of them."""
    name, stream = unique_name, f"{unique_name.upper()}_A"
    await jetstream.add_stream(js_api.StreamConfig(name=stream, subjects=[f"{name}.a.>"]))
    await jetstream.add_consumer(
        stream, js_api.ConsumerConfig(durable_name="drifted", ack_policy=js_api.AckPolicy.EXPLICIT, max_ack_pending=5)
    )
    await jetstream.add_consumer(
        stream,
        js_api.ConsumerConfig(
            durable_name="refused", ack_policy=js_api.AckPolicy.EXPLICIT, deliver_policy=js_api.DeliverPolicy.NEW
        ),
    )
    path = tmp_path / "mapping.yaml"
    path.write_text(f"""
nats: {{servers: ["{nats_url}"]}}
streams:
  - {{name: {stream}, subjects: ["{name}.a.>"]}}
sources:
  rabbit: {{type: rabbitmq, url: "{amqp_url}"}}
services:
  {name}:
    routes:
      - {{name: shadow, source: rabbit, from: {{exchange: {name}-ex, bindings: ["#"]}}, to: "{name}.a.{{rk}}"}}
    consumers:
      - {{name: drifted, stream: {stream}, max_ack_pending: 50}}
      - {{name: refused, stream: {stream}}}
      - {{name: fresh, stream: {stream}}}
""")
    code, document, _ = await _dry_run(path, "--json")
    lines = [line for line in _messages(document) if " consumers " in line]
    drifted = "differs from the file in max_ack_pending: `consumers apply` would update it"
    assert f"warning consumers {stream}/drifted: {drifted}" in lines
    assert f"info consumers {stream}/fresh: not on the server yet: `consumers apply` makes it" in lines
    assert any(line.startswith(f"error consumers {stream}/refused: deliver_policy") for line in lines), lines
    assert code == 2
    assert (await jetstream.consumer_info(stream, "drifted")).config.max_ack_pending == 5
    with pytest.raises(NotFoundError):
        await jetstream.consumer_info(stream, "fresh")
