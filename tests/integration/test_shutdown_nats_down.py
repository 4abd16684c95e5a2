"""SIGTERM while NATS is down: the bridge exits within its drain timeout, committing only what is stored.

When JetStream stops answering, the route's sender fills the publisher's window and waits
for space; when the connection then breaks, every publish in flight fails, the window
empties, and the sender moves on to wait for the connection — which does not come back. A
stop must end that wait: the bridge has 10 s (PipelineSettings.drain_timeout) to settle
what JetStream acknowledged and leave, and must never acknowledge at the source a record
JetStream did not store.

The test gets there for certain: nats-server is frozen (SIGSTOP: nothing is acknowledged,
the window fills), then killed (its sockets close: the bridge sees the connection break).
It runs with `sync_interval: always`, so whatever it acknowledged before it froze survives
the kill, and the test can compare the commits with what is stored.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka_helpers import BridgeProcess, contiguous_prefix, fill_topic, stored_offsets, wait_for_count, write_mapping
from private_nats import PrivateNatsServer

from bridge.pipeline.settings import PipelineSettings

pytestmark = [pytest.mark.kafka, pytest.mark.nats, pytest.mark.timeout(300)]

TopicFactory = Callable[..., Awaitable[str]]

PARTITIONS = 3
RECORDS = 300_000  # far more than the bridge copies before NATS goes: it is mid-flow, window full
DRAIN_TIMEOUT = PipelineSettings().drain_timeout
MARGIN = 5.0  # closing the Kafka consumer and the NATS client, on a loaded 2-core machine


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets, asked of the coordinator without joining the group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) or 0 for p in range(PARTITIONS)}
    finally:
        await consumer.stop()


async def test_sigterm_while_nats_is_down_exits_within_the_drain_timeout_committing_only_what_is_stored(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: TopicFactory, unique_name: str
) -> None:
    topic = await kafka_topic(partitions=PARTITIONS)
    await fill_topic(kafka_bootstrap, topic, RECORDS, PARTITIONS)
    config = tmp_path / "nats.conf"
    config.write_text("jetstream { sync_interval: always }\n")
    server = PrivateNatsServer(tmp_path / "nats", extra_args=("-c", str(config)))
    server.start()
    stream, group = unique_name.upper(), f"bridge-{unique_name}"
    mapping = write_mapping(
        tmp_path / "m.yaml", nats_url=server.url, bootstrap=kafka_bootstrap, stream=stream, topic=topic, group=group
    )
    bridge = BridgeProcess(mapping, tmp_path / "bridge.log")
    try:
        client = await nats.connect(server.url, connect_timeout=5, allow_reconnect=False)
        try:
            bridge.start()
            await wait_for_count(client, stream, RECORDS // 20, timeout=120, bridges=[bridge])
        finally:
            await client.close()
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)
        await asyncio.sleep(1.5)  # the window fills; well inside the 5 s PubAck timeout
        await asyncio.to_thread(server.stop, kill=True)
        await bridge.wait_for_log("disconnected from NATS", timeout=30)
        await asyncio.sleep(0.5)  # the route has failed its publishes and waits for the connection

        assert bridge.process is not None
        stopping = time.monotonic()
        bridge.process.send_signal(15)
        try:
            code = await asyncio.to_thread(bridge.process.wait, DRAIN_TIMEOUT + 30)
        except Exception as error:
            raise AssertionError(f"the bridge did not exit after SIGTERM:\n{bridge.log()}") from error
        took = time.monotonic() - stopping
        assert code == 0, bridge.log()
        assert took <= DRAIN_TIMEOUT + MARGIN, f"exited {took:.1f}s after SIGTERM\n{bridge.log()}"

        committed = await committed_offsets(kafka_bootstrap, group, topic)
        await asyncio.to_thread(server.start)
        client = await nats.connect(server.url, connect_timeout=5)
        try:
            stored = await stored_offsets(client, stream)
        finally:
            await client.close()
    finally:
        if bridge.alive():
            bridge.kill()
        server.stop(kill=True)
    assert sum(committed.values()) > 0, "nothing was committed before NATS went away"
    assert sum(committed.values()) < RECORDS, "everything was done before NATS went away: nothing tested"
    for partition, offset in committed.items():
        assert offset <= contiguous_prefix(stored.get(partition, [])), (
            f"partition {partition} committed to {offset}, past what JetStream stored"
        )
