"""`nats-bridge import` writes the consumer side from real brokers: a durable per RabbitMQ queue (from
its bindings and arguments) and per Kafka group with committed offsets, in files that validate and
whose consumers pass dry-run's offline checks."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path

import aio_pika
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from nats.js import JetStreamContext
from test_import_brokers import ROOT, _api, _cli

from bridge.config import load_config
from bridge.config.model import BridgeConfig
from bridge.dryrun.checks import offline_checks
from bridge.dryrun.report import Finding, Severity

CONSUMER_CHECKS = ("coverage", "inexact", "wider", "legacy-headers")


async def _ack(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    await message.ack()


async def _apply(mapping: Path, nats_url: str) -> None:
    """Make the file's streams and consumers on the NATS server: JetStream accepts what was imported."""
    for what in ("streams", "consumers"):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            what,
            "apply",
            str(mapping),
            cwd=ROOT,
            env={**os.environ, "NATS_URL": nats_url},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0, out.decode()


def _consumer_findings(config: BridgeConfig) -> list[Finding]:
    return [f for f in offline_checks(config) if f.check in CONSUMER_CHECKS]


async def test_import_rabbitmq_writes_a_consumer_per_queue(
    rabbit_vhost_url: str,
    rabbitmq_api_url: str | None,
    nats_url: str,
    jetstream: JetStreamContext,
    unique_name: str,
    tmp_path: Path,
) -> None:
    assert rabbitmq_api_url is not None, "this test needs the management API"
    vhost = urllib.parse.unquote(urllib.parse.urlsplit(rabbit_vhost_url).path.lstrip("/"))
    v = urllib.parse.quote(vhost, safe="")
    u = unique_name
    _api(rabbitmq_api_url, "PUT", f"/exchanges/{v}/{u}.events", {"type": "topic", "durable": True})
    _api(rabbitmq_api_url, "PUT", f"/exchanges/{v}/{u}.events.dlx", {"type": "fanout", "durable": True})
    quorum = {"x-queue-type": "quorum", "x-delivery-limit": 3, "x-dead-letter-exchange": f"{u}.events.dlx"}
    _api(rabbitmq_api_url, "PUT", f"/queues/{v}/payments", {"durable": True, "arguments": quorum})
    _api(rabbitmq_api_url, "PUT", f"/queues/{v}/audit", {"durable": True, "arguments": {"x-max-length": 100}})
    _api(rabbitmq_api_url, "PUT", f"/queues/{v}/parked", {"durable": True})
    _api(rabbitmq_api_url, "POST", f"/bindings/{v}/e/{u}.events/q/payments", {"routing_key": "payment.*"})
    _api(rabbitmq_api_url, "POST", f"/bindings/{v}/e/{u}.events/q/audit", {"routing_key": "a.#.b"})
    _api(rabbitmq_api_url, "POST", f"/bindings/{v}/e/{u}.events.dlx/q/parked", {"routing_key": ""})
    exported = tmp_path / "definitions.json"
    exported.write_text(json.dumps(_api(rabbitmq_api_url, "GET", f"/definitions/{v}")))
    mapping = tmp_path / "mapping.yaml"
    connection = await aio_pika.connect(rabbit_vhost_url)
    try:  # two workers of the legacy payments consumer, 7 and 3 messages unacknowledged at most
        for prefetch in (7, 3):
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=prefetch)
            await (await channel.get_queue("payments")).consume(_ack)
        result = await asyncio.to_thread(
            _cli, "import", "rabbitmq", str(exported), "--vhost", vhost, "--prefix", u, "--api", rabbitmq_api_url,
            "--output", str(mapping),
        )  # fmt: skip
    finally:
        await connection.close()

    assert result.returncode == 0, result.stderr
    prefetch_read = "could not be read" not in result.stderr  # a node with management stats off cannot say
    validated = _cli("validate", str(mapping))
    assert validated.returncode == 1, validated.stdout  # valid; its one warning is the 'a.#.b' consumer's
    assert "valid — 2 streams, 1 source, 2 services, 2 routes, 3 consumers" in validated.stdout
    assert [line.split(":")[:3] for line in validated.stdout.splitlines()[1:]] == [
        ["warning", " inexact", f" {u}-events/audit"]
    ]
    config = load_config(mapping, env={})
    consumers = {c.name: c for c in config.services[f"{u}-events"].consumers}
    payments, audit = consumers["payments"], consumers["audit"]
    assert payments.name == "payments"
    assert payments.stream == f"RMQ_{u.upper()}_EVENTS"
    assert payments.filter_subjects == [f"{u}.{u}%2Eevents.payment.*"]  # the exchange name is one token
    assert payments.max_deliver == 4  # x-delivery-limit 3: three redeliveries after the first delivery
    assert payments.max_ack_pending == (10 if prefetch_read else None)  # the workers' prefetch, 7 + 3, via --api
    assert "guest" not in mapping.read_text()  # the API's login is not copied
    assert payments.replaces is not None
    assert payments.replaces.queue == "payments"
    assert payments.replaces.bindings == ["payment.*"]
    assert audit.filter_subjects == [f"{u}.{u}%2Eevents.a.>"]  # 'a.#.b' has no exact filter: the narrowest cover
    assert audit.max_ack_pending == 100
    [parked] = config.services[f"{u}-events-dlx"].consumers
    assert parked.filter_subjects == [f"{u}.{u}%2Eevents%2Edlx"]
    text = mapping.read_text()
    assert f"dead-letters to exchange '{u}.events.dlx'" in text
    assert "wider than the queue's binding" in text
    findings = _consumer_findings(config)
    assert [f for f in findings if f.severity is Severity.ERROR] == []
    assert {(f.check, f.subject) for f in findings if f.severity is Severity.WARNING} == {
        ("inexact", f"{u}-events/audit")
    }
    await _apply(mapping, nats_url)
    made = await jetstream.consumer_info(payments.stream, "payments")
    assert made.config.max_deliver == 4
    assert made.config.filter_subject == f"{u}.{u}%2Eevents.payment.*"


async def _produce(kafka_bootstrap: str, topic: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for index in range(count):
            await producer.send_and_wait(topic, f"record {index}".encode(), partition=0)
    finally:
        await producer.stop()


async def _commit(kafka_bootstrap: str, group: str, offsets: dict[str, int]) -> None:
    """The legacy group processed `offsets[topic]` records of partition 0 of each topic, then stopped."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0) for topic in offsets])
        await consumer.commit({TopicPartition(topic, 0): offset for topic, offset in offsets.items()})
    finally:
        await consumer.stop()


async def test_import_kafka_writes_a_consumer_per_group(
    kafka_bootstrap: str,
    kafka_topic: Callable[..., Awaitable[str]],
    nats_url: str,
    jetstream: JetStreamContext,
    unique_name: str,
    tmp_path: Path,
) -> None:
    orders = await kafka_topic(partitions=1)
    payments = await kafka_topic(partitions=1)
    alone = await kafka_topic(partitions=1)
    for topic in (orders, payments, alone):
        await _produce(kafka_bootstrap, topic, 5)
    await _commit(kafka_bootstrap, f"{unique_name}.ledger", {orders: 3, payments: 5})
    await _commit(kafka_bootstrap, f"{unique_name}-live", {alone: 2})
    member = AIOKafkaConsumer(
        alone, bootstrap_servers=kafka_bootstrap, group_id=f"{unique_name}-live", enable_auto_commit=False
    )
    await member.start()
    mapping = tmp_path / "kafka.yaml"
    try:
        await member.getmany(timeout_ms=3000)  # joined: the group has an active member
        result = await asyncio.to_thread(
            _cli, "import", "kafka", "--bootstrap", kafka_bootstrap, "--topics", f"{unique_name}.*", "-o", str(mapping)
        )
    finally:
        await member.stop()

    assert result.returncode == 0, result.stderr
    assert _cli("validate", str(mapping)).returncode == 0
    config = load_config(mapping, env={})
    consumers = {c.name: c for service in config.services.values() for c in service.consumers}
    assert sorted(consumers) == sorted([f"{unique_name}-ledger", f"{unique_name}-live"])
    ledger = consumers[f"{unique_name}-ledger"]
    assert ledger.filter_subjects == [f"kafka.{orders}.*", f"kafka.{payments}.*"]  # one stream holds both topics
    assert ledger.replaces is not None
    assert ledger.replaces.group == f"{unique_name}.ledger"
    [stream] = [s for s in config.streams if s.name == ledger.stream]
    assert stream.subjects == [f"kafka.{orders}.*", f"kafka.{payments}.*"]
    live = consumers[f"{unique_name}-live"]
    assert live.filter_subjects == [f"kafka.{alone}.*"]
    text = mapping.read_text()
    assert f"topic '{orders}': committed offsets p0 3 (lag 2); lag 2 in all." in text
    assert f"topic '{payments}': committed offsets p0 5 (lag 0); lag 0 in all." in text
    assert "1 active member(s)" in text
    assert [f for f in _consumer_findings(config) if f.severity in (Severity.ERROR, Severity.WARNING)] == []
    await _apply(mapping, nats_url)
    made = await jetstream.consumer_info(ledger.stream, ledger.name)
    assert sorted(made.config.filter_subjects or []) == sorted([f"kafka.{orders}.*", f"kafka.{payments}.*"])
