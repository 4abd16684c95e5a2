"""A subject too long for the server's control line is one message's problem, never the connection's.

nats-server bounds a publish's control line (`HPUB <subject> <reply> <hdr_len> <total_len>`)
by `max_control_line`, 4096 bytes by default, and answers a longer one with `-ERR 'Maximum
Control Line Exceeded'` — on which nats-py 2.16 closes its client for good. A route whose
subject takes a Kafka key (`{key}`) gets such a subject from one record with a long key (a
`*` is escaped to `%2A`: a 3,000-byte key of them is a 9,000-byte token). That record must
be dead-lettered as unmappable, saying which limit, and every record after it copied, on the
connection the bridge started with.
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
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka_helpers import BridgeProcess, wait_for_count
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

pytestmark = [pytest.mark.kafka, pytest.mark.nats, pytest.mark.timeout(300)]

TopicFactory = Callable[..., Awaitable[str]]

LONG_KEY = b"*" * 3000  # escaped into the subject as 9,000 bytes of %2A
NORMAL = 1000


def status(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(base + "/status", timeout=10) as response:
        document: dict[str, Any] = json.loads(response.read())
    return document


async def produce(bootstrap: str, topic: str) -> None:
    """The long-keyed record at offset 0, then NORMAL records with short keys, on one partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"the long one", key=LONG_KEY, partition=0)
        sent = [await producer.send(topic, f"v{i}".encode(), key=f"k{i}".encode(), partition=0) for i in range(NORMAL)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(topic, 0)) or 0
    finally:
        await consumer.stop()


async def test_a_kafka_key_too_long_for_the_control_line_is_dead_lettered_and_the_connection_survives(
    tmp_path: Path,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    unique_name: str,
    nc: NatsClient,
    jetstream: JetStreamContext,
) -> None:
    topic = await kafka_topic(partitions=1)
    await produce(kafka_bootstrap, topic)
    stream, group = unique_name.upper(), f"bridge-{unique_name}"
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        textwrap.dedent(f"""\
            nats:
              servers: ["{nats_url}"]
            streams:
              - name: {stream}
                subjects: ["{unique_name}.>"]
            dead_letters:
              stream: {stream}_DLQ
              subject_prefix: {unique_name}-dlq
            sources:
              kafka:
                type: kafka
                bootstrap_servers: ["{kafka_bootstrap}"]
            services:
              svc:
                routes:
                  - name: copy
                    source: kafka
                    from: {{topics: ["{topic}"], group: "{group}"}}
                    to: "{unique_name}.{{key}}"
            """)
    )
    bridge = BridgeProcess(mapping, tmp_path / "bridge.log", args=("--http", "127.0.0.1:0"))
    bridge.start()
    try:
        base = await bridge.http_url()
        await wait_for_count(nc, f"{stream}_DLQ", 1, timeout=120, bridges=[bridge])
        await wait_for_count(nc, stream, NORMAL, timeout=120, bridges=[bridge])
        deadline = time.monotonic() + 30
        while (route := (await asyncio.to_thread(status, base))["routes"][0])["backlog"] != {f"{topic}/0": 0}:
            assert time.monotonic() < deadline, f"backlog not drained: {route}"
            await asyncio.sleep(0.25)
        document = await asyncio.to_thread(status, base)
        assert bridge.alive(), bridge.log()
    finally:
        code = bridge.terminate() if bridge.alive() else None

    assert code == 0, bridge.log()
    nats = document["nats"]
    assert (nats["connected"], nats["disconnects"], nats["reconnects"]) == (True, 0, 0), nats
    [route] = document["routes"]
    assert route["published"] == NORMAL
    assert route["dead_lettered"] == {"unmappable": 1}
    assert (await jetstream.stream_info(stream)).state.messages == NORMAL
    assert (await jetstream.stream_info(f"{stream}_DLQ")).state.messages == 1
    assert await committed(kafka_bootstrap, group, topic) == NORMAL + 1

    letter = await jetstream.get_msg(f"{stream}_DLQ", 1)
    headers = letter.headers or {}
    assert letter.data == b"the long one"
    assert headers["Bridge-Dlq-Reason"] == "unmappable"
    assert "max_control_line (4096)" in headers["Bridge-Dlq-Error"], headers["Bridge-Dlq-Error"]
    subject_bytes = len(unique_name) + 1 + 3 * len(LONG_KEY)
    assert f"subject is {subject_bytes} bytes" in headers["Bridge-Dlq-Error"], headers["Bridge-Dlq-Error"]
    assert headers["Kafka-Offset"] == "0"
    assert headers["Kafka-Key"] == LONG_KEY.decode()
    # Where it was meant to go, cut short: the dead letter must stay storable whatever the subject.
    meant = headers["Bridge-Dlq-Subject"]
    assert meant.startswith(f"{unique_name}.%2A%2A%2A")
    assert meant.endswith(f"... ({subject_bytes} bytes)"), meant[-40:]
    assert len(meant) < 1100
    log = bridge.log_path.read_text(errors="replace")
    assert "disconnected from NATS" not in log
    assert "closed for good" not in log
