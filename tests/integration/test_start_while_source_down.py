"""A source broker that does not answer when the bridge starts is waited out, not a reason to exit.

The bridge exited 2 when Kafka or RabbitMQ refused the connection at start. Under a supervisor that
is a crash loop for every outage that overlaps a restart; in the fault-schedule suite (CI, seed
392896395) it was worse: a bridge restarted while Kafka was down had its forward route fail that way
while the service's reverse route ran, the reverse route lost the cancellation that should have
ended it, and the process neither exited nor copied — 832 records not copied by the end of the run.
Now a route whose broker does not answer logs one WARNING, tries again (1 s doubling to 5 s), and
/readyz says 503 naming it, until the broker answers; what needs a person (a refused login, vhost
or TLS handshake, a missing queue) still ends the bridge with exit 2 and one `error:` line.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest
from kafka_helpers import BridgeProcess, fill_topic, stream_count, wait_for_count, write_mapping
from nats.aio.client import Client as NatsClient
from private_kafka import PrivateKafka, PrivateKafkaError
from tcp_proxy import TcpProxy
from test_rabbitmq_bridge import fanout_mapping, queue_exists, until
from test_readiness_faults import readyz
from test_shutdown_kafka_down import create_topic

from bridge.pipeline.route import START_RETRY_MAX

WAITED = 8.0  # long enough for several attempts (1, 2, 4 s): an exit would have come by now
START_BOUND = START_RETRY_MAX + 5.0  # the last wait, then a connect, a declare (or a join) and a copy


def _bridge(tmp_path: Path, mapping_path: Path) -> BridgeProcess:
    return BridgeProcess(mapping_path, tmp_path / "bridge.log", args=("--http", "127.0.0.1:0"))


async def _assert_waiting(bridge: BridgeProcess, route: str, reason: str) -> None:
    """Alive after WAITED seconds, one WARNING (not one per attempt), /readyz 503 naming the route."""
    await bridge.wait_for_log("nothing is read until it answers", timeout=60)
    base = await bridge.http_url()
    await asyncio.sleep(WAITED)
    assert bridge.alive(), f"the bridge exited while its source was down:\n{bridge.log()}"
    text = bridge.log_path.read_text(errors="replace")
    assert "error:" not in text, text
    warnings = [line for line in text.splitlines() if "nothing is read until it answers" in line]
    assert len(warnings) == 1, "\n".join(warnings)
    assert route in warnings[0], warnings[0]
    assert reason in warnings[0], warnings[0]
    code, body = await asyncio.to_thread(readyz, base)
    assert code == 503, body
    assert route in body, body
    assert reason in body, body


@pytest.mark.rabbitmq
@pytest.mark.nats
async def test_a_bridge_started_while_rabbitmq_is_down_waits_and_copies_once_it_answers(
    tmp_path: Path, rabbit_vhost_url: str, nats_url: str, unique_name: str, nc: NatsClient
) -> None:
    proxy, via = TcpProxy.in_front_of(rabbit_vhost_url)
    proxy.kill()  # down before the bridge starts: every connection refused
    stream = unique_name.upper()
    bridge = _bridge(tmp_path, fanout_mapping(tmp_path / "m.yaml", nats_url, via, stream))
    connection = await aio_pika.connect(rabbit_vhost_url)  # straight to RabbitMQ, never through the proxy
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange("ex", aio_pika.ExchangeType.FANOUT)
        bridge.start()
        await _assert_waiting(bridge, "svc/r", "is not reachable")

        await asyncio.to_thread(proxy.restore)
        back = time.monotonic()
        await until(lambda: queue_exists(channel, connection, "nats-bridge.svc.r"), timeout=60)
        subscribed_after = time.monotonic() - back
        assert subscribed_after < START_BOUND, f"subscribed {subscribed_after:.1f}s after RabbitMQ answered"
        for n in range(100):
            await exchange.publish(aio_pika.Message(b"after", message_id=f"after-{n}"), routing_key="")
        async with asyncio.timeout(60):
            while await stream_count(nc, stream) < 100:
                await asyncio.sleep(0.1)
        assert bridge.alive(), bridge.log()
        assert bridge.terminate() == 0, bridge.log()
        assert await stream_count(nc, stream) == 100
    finally:
        if bridge.alive():
            bridge.kill()
        await connection.close()
        proxy.close()


@pytest.fixture
def kafka_not_started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateKafka]:
    """A Kafka of the test's own, with its port chosen but not started: nothing listens there."""
    kafka = PrivateKafka(tmp_path_factory.mktemp("late-kafka"))
    try:
        yield kafka
    finally:
        kafka.stop()


@pytest.mark.kafka
@pytest.mark.nats
async def test_a_bridge_started_before_kafka_waits_and_copies_once_it_answers(
    tmp_path: Path, nats_url: str, unique_name: str, nc: NatsClient, kafka_not_started: PrivateKafka
) -> None:
    kafka = kafka_not_started
    stream = unique_name.upper()
    topic = unique_name
    path = write_mapping(
        tmp_path / "m.yaml",
        nats_url=nats_url,
        bootstrap=kafka.bootstrap,
        stream=stream,
        topic=topic,
        group=f"bridge-{unique_name}",
    )
    bridge = _bridge(tmp_path, path)
    bridge.start()
    try:
        await _assert_waiting(bridge, "svc/copy", f"Kafka at {kafka.bootstrap} is not reachable")
        # aiokafka's ERROR for every attempt (about seven a second) comes once a minute, with a count
        flood = [line for line in bridge.log_path.read_text().splitlines() if "Unable connect to" in line]
        assert 1 <= len(flood) <= 2, "\n".join(flood)
        try:
            await asyncio.to_thread(kafka.start)
        except PrivateKafkaError as error:
            pytest.fail(f"could not start a private Kafka: {error}", pytrace=False)
        # One partition: the bridge's consumer may ask for the topic first, and Kafka then creates it
        # with its default of one partition.
        await create_topic(kafka.bootstrap, topic, 1)
        await fill_topic(kafka.bootstrap, topic, 100, 1)
        await wait_for_count(nc, stream, 100, 90, bridges=[bridge])
        base = await bridge.http_url()
        async with asyncio.timeout(30):
            while (await asyncio.to_thread(readyz, base))[0] != 200:
                await asyncio.sleep(0.25)
        assert bridge.terminate() == 0, bridge.log()
        assert await stream_count(nc, stream) == 100
    finally:
        if bridge.alive():
            bridge.kill()


@pytest.mark.rabbitmq
@pytest.mark.nats
async def test_a_refused_vhost_still_ends_the_bridge_with_one_error_line(
    tmp_path: Path, rabbit_vhost_url: str, nats_url: str, unique_name: str
) -> None:
    """Not an outage: waiting would never end, so the bridge says what to fix and exits 2."""
    split = urllib.parse.urlsplit(rabbit_vhost_url)
    missing = split._replace(path=f"/no-such-vhost-{unique_name}").geturl()
    bridge = _bridge(tmp_path, fanout_mapping(tmp_path / "m.yaml", nats_url, missing, unique_name.upper()))
    bridge.start()
    try:
        assert bridge.process is not None
        code = await asyncio.to_thread(bridge.process.wait, 60)
        text = bridge.log_path.read_text(errors="replace")
        assert code == 2, text
        errors = [line for line in text.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, text
        assert "refused access to the vhost" in errors[0], errors[0]
        assert f":{split.password}@" not in text  # the password shown as *** (here it equals the user)
        assert "Traceback" not in text, text
    finally:
        if bridge.alive():
            bridge.kill()
