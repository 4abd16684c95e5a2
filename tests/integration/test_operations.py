"""Operating a running bridge: its HTTP endpoint, readiness, metrics, JSON logs and dead letters.

Each test runs `nats-bridge run` as operators do (`--http`, `--log-format json`) against
real Kafka and JetStream and reads what an operator would: /healthz, /readyz, /status,
/metrics and the log lines.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import aio_pika
import pytest
from aiokafka import AIOKafkaProducer
from kafka_helpers import BridgeProcess, fill_topic, wait_for_count
from nats.aio.client import Client as NatsClient
from nats.js import api as js_api
from private_nats import PrivateNatsServer
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bridge.brokers.rabbitmq.names import shadow_queue_name
from bridge.config import load_config_text
from bridge.operations.metrics import bridge_registry
from bridge.operations.names import METRICS, exported_sample_names
from bridge.runner import Bridge, RunSettings

pytestmark = pytest.mark.timeout(300)

TopicFactory = Callable[..., Awaitable[str]]


def mapping_text(*, nats_url: str, bootstrap: str, stream: str, topic: str, stream_extra: str = "") -> str:
    subject = stream.lower()
    text = textwrap.dedent(f"""\
        nats:
          servers: ["{nats_url}"]
        streams:
          - name: {stream}
            subjects: ["{subject}.>"]
        STREAM_EXTRA
        dead_letters:
          stream: {stream}_DLQ
          subject_prefix: {subject}-dlq
        sources:
          kafka:
            type: kafka
            bootstrap_servers: ["{bootstrap}"]
        services:
          svc:
            routes:
              - name: copy
                source: kafka
                from: {{topics: ["{topic}"], group: "bridge-{subject}"}}
                to: "{subject}.{{partition}}.{{key}}"
        """)
    return text.replace("STREAM_EXTRA\n", stream_extra + "\n" if stream_extra else "")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def fetch(url: str) -> tuple[int, str]:
    return await asyncio.to_thread(get, url)


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str, bridge: BridgeProcess) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if not bridge.alive():
            raise AssertionError(f"bridge exited while waiting for {what}:\n{bridge.log()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s\n{bridge.log()}")
        await asyncio.sleep(0.25)


def start_bridge(tmp_path: Path, text: str, *args: str, env: dict[str, str] | None = None) -> BridgeProcess:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(text)
    bridge = BridgeProcess(
        mapping,
        tmp_path / "bridge.log",
        args=("--http", "127.0.0.1:0", "--log-format", "json", *args),
        env=env,
    )
    bridge.start()
    return bridge


async def test_endpoint_reports_health_readiness_status_and_every_metric_and_logs_are_json(
    tmp_path: Path, nats_url: str, kafka_bootstrap: str, kafka_topic: TopicFactory, unique_name: str, nc: NatsClient
) -> None:
    topic = await kafka_topic(partitions=3)
    stream = unique_name.upper()
    await fill_topic(kafka_bootstrap, topic, 2_000, 3)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    for _ in range(5):  # no key: "{key}" cannot be rendered, so these are dead-lettered
        await producer.send_and_wait(topic, b"keyless", partition=1)
    await producer.stop()
    text = mapping_text(nats_url=nats_url, bootstrap=kafka_bootstrap, stream=stream, topic=topic)
    bridge = start_bridge(tmp_path, text, "--stall-after", "3s")
    try:
        base = await bridge.http_url()
        await wait_for_count(nc, stream, 2_000, 120, [bridge])
        await wait_for_count(nc, f"{stream}_DLQ", 5, 60, [bridge])

        assert await fetch(base + "/healthz") == (200, "ok\n")

        async def ready() -> bool:
            return (await fetch(base + "/readyz"))[0] == 200

        await until(ready, 30, "/readyz 200", bridge)

        async def settled() -> bool:
            samples = metric_samples((await fetch(base + "/metrics"))[1])
            lags = [v for (name, _), v in samples.items() if name == "nats_bridge_source_backlog_messages"]
            return len(lags) == 3 and sum(lags) == 0

        await until(settled, 30, "backlog 0 on all three partitions", bridge)
        status_code, body = await fetch(base + "/metrics")
        assert status_code == 200
        samples = metric_samples(body)
        route = {"service": "svc", "route": "copy"}
        assert value(samples, "nats_bridge_messages_received_total", **route) == 2_005
        assert value(samples, "nats_bridge_messages_published_total", **route) == 2_000
        assert value(samples, "nats_bridge_messages_dead_lettered_total", **route, reason="unmappable") == 5
        assert value(samples, "nats_bridge_publish_latency_seconds_count", **route) == 2_000
        assert value(samples, "nats_bridge_connection_up", connection="nats", kind="nats") == 1
        assert value(samples, "nats_bridge_service_phase", service="svc", phase="shadow") == 1
        assert value(samples, "nats_bridge_stream_messages", stream=stream) == 2_000
        assert value(samples, "nats_bridge_ready") == 1
        assert value(samples, "nats_bridge_route_stalled", **route) == 0
        exposed = {name for name, _ in samples}
        assert exposed <= exported_sample_names(), exposed - exported_sample_names()
        families = {family.name for family in text_string_to_metric_families(body)}
        assert {spec.family for spec in METRICS} <= families

        status = json.loads((await fetch(base + "/status"))[1])
        assert status["ready"] is True
        [route_status] = status["routes"]
        assert route_status["published"] == 2_000
        assert route_status["dead_lettered"] == {"unmappable": 5}
        assert route_status["backlog"] == {f"{topic}/{p}": 0 for p in range(3)}
        assert {s["name"] for s in status["streams"]} == {stream, f"{stream}_DLQ"}
    finally:
        assert bridge.terminate() == 0
    lines = [line for line in bridge.log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any("dead-lettered" in r["message"] and r["level"] == "WARNING" for r in records)


async def test_a_route_jetstream_refuses_pauses_stalls_readiness_and_resumes_by_itself(
    tmp_path: Path, nats_url: str, kafka_bootstrap: str, kafka_topic: TopicFactory, unique_name: str, nc: NatsClient
) -> None:
    topic = await kafka_topic(partitions=2)
    stream = unique_name.upper()
    await fill_topic(kafka_bootstrap, topic, 500, 2)
    text = mapping_text(
        nats_url=nats_url,
        bootstrap=kafka_bootstrap,
        stream=stream,
        topic=topic,
        stream_extra="    max_msgs: 100\n    discard: new",
    )
    bridge = start_bridge(tmp_path, text, "--stall-after", "2s")
    try:
        base = await bridge.http_url()

        async def stalled() -> bool:
            code, body = await fetch(base + "/readyz")
            return code == 503 and "route svc/copy: stalled" in body

        await until(stalled, 60, "/readyz 503 naming the stalled route", bridge)
        _, body = await fetch(base + "/readyz")
        assert "paused" in body, body
        assert "maximum messages" in body, body
        samples = metric_samples((await fetch(base + "/metrics"))[1])
        route = {"service": "svc", "route": "copy"}
        assert value(samples, "nats_bridge_route_stalled", **route) == 1
        assert value(samples, "nats_bridge_route_paused", **route) == 1
        assert value(samples, "nats_bridge_ready") == 0
        assert (await nc.jetstream().stream_info(stream)).state.messages == 100
        lag = sum(v for (name, _), v in samples.items() if name == "nats_bridge_source_backlog_messages")
        assert lag >= 400  # nothing acknowledged beyond what JetStream stored

        info = await nc.jetstream().stream_info(stream)
        await nc.jetstream().update_stream(js_api.StreamConfig.from_response({**info.config.as_dict(), "max_msgs": -1}))
        await wait_for_count(nc, stream, 500, 120, [bridge])

        async def ready() -> bool:
            return (await fetch(base + "/readyz"))[0] == 200

        await until(ready, 60, "/readyz 200 again", bridge)
    finally:
        assert bridge.terminate() == 0
    assert (await nc.jetstream().stream_info(stream)).state.messages == 500


async def test_readiness_follows_the_nats_connection_and_no_secret_reaches_logs_or_endpoints(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: TopicFactory, unique_name: str
) -> None:
    token = f"s3cret-{unique_name}-token"
    server = PrivateNatsServer(tmp_path / "nats", extra_args=("--auth", token))
    server.start()
    topic = await kafka_topic(partitions=1)
    stream = unique_name.upper()
    await fill_topic(kafka_bootstrap, topic, 50, 1)
    text = mapping_text(nats_url=server.url, bootstrap=kafka_bootstrap, stream=stream, topic=topic)
    text = text.replace("nats:\n", "nats:\n  token: ${NATS_TOKEN}\n", 1)
    bridge = start_bridge(tmp_path, text, "--log-level", "debug", env={"NATS_TOKEN": token})
    seen: list[str] = []
    try:
        base = await bridge.http_url()

        async def readiness(expected: int) -> bool:
            code, body = await fetch(base + "/readyz")
            seen.append(body)
            return code == expected

        await until(lambda: readiness(200), 60, "/readyz 200", bridge)
        server.stop(kill=True)
        await until(lambda: readiness(503), 30, "/readyz 503 while NATS is down", bridge)
        assert any("NATS: not connected" in body for body in seen)
        server.start()
        await until(lambda: readiness(200), 60, "/readyz 200 after NATS is back", bridge)
        for path in ("/status", "/metrics"):
            seen.append((await fetch(base + path))[1])
    finally:
        assert bridge.terminate() == 0
        server.stop(kill=True)
    log = bridge.log_path.read_text()
    assert "reconnected to NATS" in log
    assert token not in log
    assert all(token not in text for text in seen)


async def test_rabbitmq_route_reports_queue_depth_and_dead_letters_unmappable_deliveries(
    amqp_url: str, nats_url: str, unique_name: str, nc: NatsClient
) -> None:
    stream = unique_name.upper()
    exchange_name = f"{unique_name}-x"
    text = textwrap.dedent(f"""\
        nats: {{servers: ["{nats_url}"]}}
        streams: [{{name: {stream}, subjects: ["{unique_name}.>"]}}]
        dead_letters: {{stream: {stream}_DLQ, subject_prefix: {unique_name}-dlq}}
        sources:
          rabbit: {{type: rabbitmq, url: "{amqp_url}"}}
        services:
          svc:
            routes:
              - name: copy
                source: rabbit
                from: {{exchange: {exchange_name}, type: topic, bindings: ["#"]}}
                to: "{unique_name}.{{rk[0]}}.{{rk[1]}}"
        """)
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC, auto_delete=True)
    bridge = Bridge(load_config_text(text, "test.yaml", {}), RunSettings(stall_after=2.0))
    task = asyncio.create_task(bridge.run())
    queue = shadow_queue_name("svc", "copy")
    try:
        async with asyncio.timeout(60):
            while bridge.monitor is None or not bridge.monitor.routes["svc/copy"].source_up:
                if bridge.monitor is not None:
                    await bridge.monitor.refresh()
                await asyncio.sleep(0.1)
        for i in range(200):
            await exchange.publish(aio_pika.Message(b"m", message_id=f"m{i}"), routing_key=f"order.{i}")
        await exchange.publish(aio_pika.Message(b"short", message_id="short"), routing_key="oneword")
        await wait_for_count(nc, stream, 200, 60)
        await wait_for_count(nc, f"{stream}_DLQ", 1, 60)
        monitor = bridge.monitor
        assert monitor is not None

        async with asyncio.timeout(30):
            while True:
                await monitor.refresh()
                if monitor.routes["svc/copy"].backlog == {queue: 0} and bridge.pipelines[0].unsettled == 0:
                    break
                await asyncio.sleep(0.2)
        assert monitor.problems() == []
        samples = metric_samples(generate_latest(bridge_registry(monitor)).decode())
        route = {"service": "svc", "route": "copy"}
        assert value(samples, "nats_bridge_source_backlog_messages", **route, lane=queue) == 0
        assert value(samples, "nats_bridge_connection_up", connection="rabbit", kind="rabbitmq") == 1
        assert value(samples, "nats_bridge_messages_dead_lettered_total", **route, reason="unmappable") == 1
        letter = await nc.jetstream().get_msg(f"{stream}_DLQ", 1)
        headers = letter.headers or {}
        assert headers["Amqp-Routing-Key"] == "oneword"
        assert headers["Amqp-Message-Id"] == "short"
        assert headers["Nats-Msg-Id"] == "dlq:svc/copy/short"
        assert letter.data == b"short"
    finally:
        bridge.stop()
        await asyncio.wait_for(task, 60)
        await channel.queue_delete(queue)
        await connection.close()
