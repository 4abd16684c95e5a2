"""Cut-over phases against real brokers and a running `nats-bridge run`: the phase lives in NATS
KV, the CLI refuses invalid moves and records who/when/why, the running bridge follows within
seconds (drained report, withdrawn when a producer still publishes to the legacy side, retire
stops the routes and removes only what the bridge created), and a restarted bridge keeps a
retired service retired."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import aio_pika
import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from kafka_helpers import BridgeProcess, fill_topic, stream_count, wait_for_count
from nats.aio.client import Client as NatsClient

from bridge.config.services import Phase
from bridge.cutover.store import PhaseStore

if TYPE_CHECKING:
    from conftest import TopicFactory

pytestmark = [pytest.mark.nats, pytest.mark.kafka, pytest.mark.rabbitmq]

ROOT = Path(__file__).resolve().parents[2]
BridgeFactory = Callable[[Path], BridgeProcess]
FAST = ("--stall-after", "4s")  # health (and backlog) looks every second


async def cli(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 180)
    return process.returncode or 0, out.decode()


async def phase_record(nc: NatsClient, service: str) -> dict[str, object]:
    record, _ = await PhaseStore(nc.jetstream(), create=False).get(service)
    return json.loads(record.to_json())


async def wait_until(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.2)


def kafka_mapping(path: Path, nats_url: str, bootstrap: str, service: str, topic: str) -> Path:
    path.write_text(f"""
nats: {{servers: ["{nats_url}"]}}
streams:
  - {{name: {service.upper()}, subjects: ["{service}.>"]}}
sources:
  kafka: {{type: kafka, bootstrap_servers: ["{bootstrap}"]}}
services:
  {service}:
    routes:
      - {{name: copy, source: kafka, from: {{topics: ["{topic}"]}}, to: "{service}.{{partition}}"}}
""")
    return path


async def test_invalid_transitions_are_refused_and_every_change_is_recorded(
    tmp_path: Path, nats_url: str, kafka_bootstrap: str, unique_name: str, nc: NatsClient
) -> None:
    mapping = kafka_mapping(tmp_path / "m.yaml", nats_url, kafka_bootstrap, unique_name, unique_name)
    code, out = await cli("cutover", unique_name, str(mapping), "--to", "retired", "--reason", "too early")
    assert code == 2
    assert f"service '{unique_name}' cannot go from shadow to retired (allowed from shadow: drain)" in out
    code, out = await cli("cutover", "nope", str(mapping), "--to", "drain", "--reason", "x")
    assert code == 2
    assert "no service 'nope'" in out
    code, out = await cli("cutover", unique_name, str(mapping))  # neither a change nor a wait
    assert code == 2
    assert "give --to PHASE" in out
    code, out = await cli("cutover", unique_name, str(mapping), "--wait")
    assert code == 0, out
    assert f"service {unique_name}: in shadow, nothing to wait for" in out
    code, out = await cli(
        "cutover", unique_name, str(mapping), "--to", "drain", "--reason", "producers moved", "--by", "ops-amy"
    )
    assert code == 0, out
    assert f"service {unique_name}: shadow -> drain by ops-amy" in out
    record = await phase_record(nc, unique_name)
    assert (record["phase"], record["previous"], record["changed_by"], record["reason"]) == (
        "drain",
        "shadow",
        "ops-amy",
        "producers moved",
    )
    code, out = await cli("cutover", unique_name, str(mapping), "--to", "retired", "--reason", "done?")
    assert code == 2
    assert "has not been reported drained yet" in out
    code, out = await cli("cutover", unique_name, str(mapping), "--to", "shadow", "--reason", "back out")
    assert code == 0, out
    history = await PhaseStore(nc.jetstream(), create=False).history(unique_name)
    assert [(r.phase, r.reason) for r in history] == [(Phase.DRAIN, "producers moved"), (Phase.SHADOW, "back out")]


async def test_kafka_service_drains_is_retired_and_stays_retired(
    tmp_path: Path,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    unique_name: str,
    nc: NatsClient,
    bridge_process: BridgeFactory,
) -> None:
    topic = await kafka_topic(partitions=3)
    await fill_topic(kafka_bootstrap, topic, 3_000, 3)
    service = unique_name
    mapping = kafka_mapping(tmp_path / "m.yaml", nats_url, kafka_bootstrap, service, topic)
    bridge = bridge_process(mapping)
    bridge.args = FAST
    bridge.start()
    await wait_for_count(nc, service.upper(), 3_000, timeout=120, bridges=[bridge])

    # The runbook's step 2: move to drain, deploy the producers, then wait for the drained report.
    code, out = await cli(
        "cutover", service, str(mapping), "--to", "drain", "--reason", "producers on NATS", "--quiet", "2s"
    )  # fmt: skip
    assert code == 0, out
    code, out = await cli("cutover", service, str(mapping), "--wait", "--timeout", "90s")
    assert code == 0, out + bridge.log()
    assert f"service {service}: drained at" in out
    assert (await phase_record(nc, service))["drained_at"]

    # A producer still on Kafka: the report is withdrawn, and given again once it is quiet.
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"late", partition=0)
    finally:
        await producer.stop()
    await wait_until(lambda: phase_record(nc, service), 1, "record readable")
    await wait_until(
        lambda: _drained_is(nc, service, None), 30, "the drained report withdrawn after a late legacy message"
    )
    await bridge.wait_for_log("a producer still publishes there", timeout=5)
    await wait_for_count(nc, service.upper(), 3_001, timeout=30, bridges=[bridge])
    await wait_until(lambda: _drained_is(nc, service, True), 60, "drained again")

    code, out = await cli(
        "cutover", service, str(mapping), "--to", "retired", "--reason", "all moved", "--delete-offsets",
        "--wait", "--timeout", "90s",
    )  # fmt: skip
    assert code == 0, out + bridge.log()
    group = f"nats-bridge.{service}.copy"
    assert f"deleted consumer group '{group}'" in out
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        groups = {g[0] for g in await admin.list_consumer_groups()}
    finally:
        await admin.close()
    assert group not in groups
    # status reads no backlog of the deleted group (the whole topic would show as one)
    code, out = await cli("status", str(mapping), "--service", service, "--json", "--interval", "0.5s")
    assert code == 0, out
    [route] = json.loads(out)["services"][0]["routes"]
    assert (route["backlog_total"], route["backlog_note"]) == (0, "retired: the route reads nothing")
    # The route is stopped: what Kafka gets now is not copied.
    await fill_topic(kafka_bootstrap, topic, 30, 3)
    await asyncio.sleep(3)
    assert await stream_count(nc, service.upper()) == 3_001
    assert bridge.alive()
    assert bridge.terminate() == 0, bridge.log()

    # A bridge started later keeps the service retired: no group joined again.
    again = bridge_process(mapping)
    again.args = FAST
    again.start()
    await again.wait_for_log("phase retired", timeout=60)
    await asyncio.sleep(3)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert group not in {g[0] for g in await admin.list_consumer_groups()}
    finally:
        await admin.close()
    assert await stream_count(nc, service.upper()) == 3_001
    assert again.terminate() == 0, again.log()


async def _drained_is(nc: NatsClient, service: str, wanted: bool | None) -> bool:
    drained = (await phase_record(nc, service))["drained_at"]
    return drained is None if wanted is None else bool(drained)


async def test_rabbitmq_retire_deletes_the_shadow_queue_only_and_status_reports_it(
    tmp_path: Path,
    nats_url: str,
    rabbit_vhost_url: str,
    unique_name: str,
    nc: NatsClient,
    bridge_process: BridgeFactory,
) -> None:
    service = unique_name
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(f"{service}-ex", aio_pika.ExchangeType.TOPIC)
    legacy = await channel.declare_queue(f"{service}-legacy")
    await legacy.bind(exchange, "#")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(f"""
nats: {{servers: ["{nats_url}"]}}
streams:
  - {{name: {service.upper()}, subjects: ["{service}.>"]}}
sources:
  rabbit: {{type: rabbitmq, url: "{rabbit_vhost_url}"}}
services:
  {service}:
    routes:
      - {{name: orders, source: rabbit, from: {{exchange: {service}-ex, bindings: ["#"]}}, to: "{service}.{{rk}}"}}
""")
    bridge = bridge_process(mapping)
    bridge.args = FAST
    bridge.start()
    await bridge.wait_for_log("consuming queue", timeout=60)
    for i in range(200):
        await exchange.publish(aio_pika.Message(f"m{i}".encode(), message_id=f"m{i}"), routing_key=f"order.{i % 3}")
    await wait_for_count(nc, service.upper(), 200, timeout=60, bridges=[bridge])

    code, out = await cli("status", str(mapping), "--json", "--interval", "1s")
    assert code == 0, out
    (entry,) = json.loads(out)["services"]
    assert (entry["phase"], entry["safe_to_advance"]) == ("shadow", True), entry["advice"]
    (route,) = entry["routes"]
    assert route["backlog"] == {f"nats-bridge.{service}.orders": 0}
    assert route["streams"][0]["messages"] == 200

    code, out = await cli(
        "cutover",
        service,
        str(mapping),
        "--to",
        "drain",
        "--reason",
        "r",
        "--quiet",
        "2s",
        "--wait",
        "--timeout",
        "60s",
    )
    assert code == 0, out + bridge.log()
    code, out = await cli(
        "cutover", service, str(mapping), "--to", "retired", "--reason", "r", "--wait", "--timeout", "60s"
    )
    assert code == 0, out + bridge.log()
    assert f"deleted shadow queue 'nats-bridge.{service}.orders'" in out
    probe = await connection.channel()
    with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
        await probe.declare_queue(f"nats-bridge.{service}.orders", passive=True)
    probe = await connection.channel()
    assert (await probe.declare_queue(legacy.name, passive=True)).declaration_result.message_count == 200
    status_url = await bridge.http_url()
    code, out = await cli("status", str(mapping), "--json", "--interval", "0.5s")
    (entry,) = json.loads(out)["services"]
    assert entry["phase"] == "retired"
    assert entry["retired_cleanup"] == {f"{service}/orders": f"deleted shadow queue 'nats-bridge.{service}.orders'"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{status_url}/metrics") as response:
            metrics = await response.text()
        async with session.get(f"{status_url}/readyz") as response:
            assert response.status == 200, await response.text()
    assert f'nats_bridge_service_phase{{phase="retired",service="{service}"}} 1.0' in metrics
    assert bridge.terminate() == 0, bridge.log()
    await connection.close()
