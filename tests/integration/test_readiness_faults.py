"""Readiness tells the truth within seconds (issue 20, item 2).

Before: a stream that was full, or a cluster without quorum, left `/readyz` at 200 and `/status`
with no problem for a minute (until `stall_after`), every route paused all the while; a frozen
server was noticed after 14-16 s; and after every start `/readyz` said "source not connected"
for about 5 s while records already flowed. Each case here runs the real `nats-bridge run`
against real servers, polls `/readyz` the way a load balancer would, and holds it to:

- 503 naming the cause within 10 s of JetStream refusing (a full `discard: new` stream, a
  frozen server, a stream without quorum), and 200 again once it accepts;
- nothing lost and nothing stored twice through it all;
- no "source unreachable" while the bridge starts, and ready as soon as records flow.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import brokers_local
import nats
import pytest
from chaos.brokers import cluster_lock, start_cluster, wait_for_jetstream
from kafka_helpers import BridgeProcess, describe_duplicates, produce_at_rate, stored_records, wait_for_count
from private_nats import PrivateNatsServer

pytestmark = [pytest.mark.kafka, pytest.mark.nats, pytest.mark.timeout(420)]

TopicFactory = Callable[..., Awaitable[str]]

PARTITIONS = 3
WITHIN = 10.0  # the promise: /readyz says 503 this soon after JetStream stops storing


def readyz(base: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=3) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:
        return 0, str(error)


@dataclass
class ReadyzLog:
    """Every /readyz answer, with the moment it came (monotonic)."""

    answers: list[tuple[float, int, str]] = field(default_factory=list)

    def first(self, status: int, after: float, containing: str = "") -> tuple[float, str] | None:
        for at, code, text in self.answers:
            if at >= after and code == status and containing in text:
                return at, text
        return None

    def describe(self, after: float) -> str:
        return "\n".join(f"  +{at - after:5.1f}s {code} {text.strip()[:300]}" for at, code, text in self.answers[-40:])


async def poll_readyz(base: str, log: ReadyzLog, stop: asyncio.Event) -> None:
    while not stop.is_set():
        code, text = await asyncio.to_thread(readyz, base)
        log.answers.append((time.monotonic(), code, text))
        await asyncio.sleep(0.25)


def mapping_text(nats_urls: list[str], stream: str, topic: str, bootstrap: str, stream_extra: str = "") -> str:
    """One Kafka route into `stream`; `stream_extra`: more keys of the stream, one per line."""
    servers = ", ".join(f'"{url}"' for url in nats_urls)
    extra = "".join(f"    {line.strip()}\n" for line in stream_extra.splitlines() if line.strip())
    subject = stream.lower()
    return (
        f"nats:\n  servers: [{servers}]\n"
        f'streams:\n  - name: {stream}\n    subjects: ["{subject}.>"]\n{extra}'
        f'sources:\n  kafka:\n    type: kafka\n    bootstrap_servers: ["{bootstrap}"]\n'
        "services:\n  svc:\n    routes:\n      - name: copy\n        source: kafka\n"
        f'        from: {{topics: ["{topic}"], group: "bridge-{subject}"}}\n'
        f'        to: "{subject}.{{partition}}"\n'
    )


async def assert_each_record_once(nc: nats.NATS, stream: str, sent: int, timeout: float = 120) -> None:
    await wait_for_count(nc, stream, sent, timeout)
    records = await stored_records(nc, stream)
    keys = {(partition, offset) for partition, offset, _ in records}
    assert len(records) == sent, f"{len(records)} stored for {sent} sent\n{describe_duplicates(records)}"
    assert len(keys) == sent, describe_duplicates(records)


@contextlib.asynccontextmanager
async def running(bridge: BridgeProcess) -> AsyncIterator[str]:
    bridge.start()
    try:
        yield await bridge.http_url()
    finally:
        if bridge.alive():
            bridge.terminate(timeout=60)


async def test_a_full_stream_turns_readyz_503_within_seconds_naming_it_and_back_to_200_when_it_has_room(
    tmp_path: Path, nats_url: str, kafka_bootstrap: str, kafka_topic: TopicFactory, unique_name: str
) -> None:
    topic = await kafka_topic(partitions=PARTITIONS)
    stream = unique_name.upper()
    limit = 400
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(mapping_text([nats_url], stream, topic, kafka_bootstrap, f"max_msgs: {limit}\ndiscard: new"))
    bridge = BridgeProcess(mapping, tmp_path / "bridge.log", args=("--http", "127.0.0.1:0"))
    nc = await nats.connect(nats_url)
    stop_producing, stop_polling = asyncio.Event(), asyncio.Event()
    sent = [0]
    answers = ReadyzLog()
    try:
        async with running(bridge) as base:
            producer = asyncio.create_task(
                produce_at_rate(kafka_bootstrap, topic, 300, PARTITIONS, stop_producing, sent)
            )
            poller = asyncio.create_task(poll_readyz(base, answers, stop_polling))
            await wait_for_count(nc, stream, limit, 60, bridges=[bridge])
            full_at = time.monotonic()
            await asyncio.sleep(WITHIN + 2)
            found = answers.first(503, full_at, "JetStream stored nothing")
            assert found is not None, f"no 503 after the stream filled:\n{answers.describe(full_at)}"
            at, text = found
            assert at - full_at <= WITHIN, f"503 came {at - full_at:.1f}s after the stream filled"
            assert "maximum messages" in text, text
            status = await asyncio.to_thread(_get_json, base + "/status")
            route = status["routes"][0]
            assert (route["refusing_for"] or 0) > 0, route

            # Room again: ready by itself, and every record stored once.
            js = nc.jetstream()
            info = await js.stream_info(stream)
            await js.update_stream(dataclasses.replace(info.config, max_msgs=-1))
            room_at = time.monotonic()
            stop_producing.set()
            await producer
            await assert_each_record_once(nc, stream, sent[0])
            await asyncio.sleep(1)
            ready = answers.first(200, room_at)
            assert ready is not None, f"never ready again:\n{answers.describe(room_at)}"
            stop_polling.set()
            await poller
    finally:
        stop_producing.set()
        stop_polling.set()
        await nc.close()


async def test_a_frozen_server_turns_readyz_503_within_seconds_and_the_bridge_recovers_losing_nothing(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: TopicFactory, unique_name: str
) -> None:
    server = PrivateNatsServer(tmp_path / "nats")
    server.start()
    topic = await kafka_topic(partitions=PARTITIONS)
    stream = unique_name.upper()
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(mapping_text([server.url], stream, topic, kafka_bootstrap))
    bridge = BridgeProcess(mapping, tmp_path / "bridge.log", args=("--http", "127.0.0.1:0"))
    stop_producing, stop_polling = asyncio.Event(), asyncio.Event()
    sent = [0]
    answers = ReadyzLog()
    nc = await nats.connect(server.url)
    assert server.process is not None
    try:
        async with running(bridge) as base:
            producer = asyncio.create_task(
                produce_at_rate(kafka_bootstrap, topic, 300, PARTITIONS, stop_producing, sent)
            )
            poller = asyncio.create_task(poll_readyz(base, answers, stop_polling))
            await wait_for_count(nc, stream, 500, 60, bridges=[bridge])
            server.process.send_signal(signal.SIGSTOP)
            frozen_at = time.monotonic()
            await asyncio.sleep(WITHIN + 2)
            found = answers.first(503, frozen_at)
            assert found is not None, f"no 503 while the server was frozen:\n{answers.describe(frozen_at)}"
            at, text = found
            assert at - frozen_at <= WITHIN, f"503 came {at - frozen_at:.1f}s after the server froze:\n{text}"
            assert "NATS" in text or "JetStream" in text, text

            server.process.send_signal(signal.SIGCONT)
            thawed_at = time.monotonic()
            await asyncio.sleep(3)
            stop_producing.set()
            await producer
            await assert_each_record_once(nc, stream, sent[0])
            await asyncio.sleep(1)
            assert answers.first(200, thawed_at) is not None, f"never ready again:\n{answers.describe(thawed_at)}"
            stop_polling.set()
            await poller
    finally:
        stop_producing.set()
        stop_polling.set()
        with contextlib.suppress(Exception):
            server.process.send_signal(signal.SIGCONT)
        with contextlib.suppress(Exception):
            await nc.close()
        server.stop(kill=True)


async def test_after_a_start_readyz_never_calls_a_source_unreachable_and_is_ready_once_records_flow(
    tmp_path: Path, nats_url: str, kafka_bootstrap: str, kafka_topic: TopicFactory, unique_name: str
) -> None:
    topic = await kafka_topic(partitions=PARTITIONS)
    stream = unique_name.upper()
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(mapping_text([nats_url], stream, topic, kafka_bootstrap))
    bridge = BridgeProcess(mapping, tmp_path / "bridge.log", args=("--http", "127.0.0.1:0"))
    nc = await nats.connect(nats_url)
    stop_producing, stop_polling = asyncio.Event(), asyncio.Event()
    sent = [0]
    answers = ReadyzLog()
    try:
        async with running(bridge) as base:
            poller = asyncio.create_task(poll_readyz(base, answers, stop_polling))
            producer = asyncio.create_task(
                produce_at_rate(kafka_bootstrap, topic, 200, PARTITIONS, stop_producing, sent)
            )
            await wait_for_count(nc, stream, 1, 60, bridges=[bridge])
            flowing_at = time.monotonic()
            await asyncio.sleep(3)
            stop_producing.set()
            await producer
            stop_polling.set()
            await poller
            unreachable = [text for _, code, text in answers.answers if "unreachable" in text]
            assert not unreachable, f"a source was called unreachable while starting: {unreachable[0]}"
            ready = answers.first(200, 0.0)
            assert ready is not None, f"never ready:\n{answers.describe(flowing_at)}"
            assert ready[0] - flowing_at <= 2.0, (
                f"ready {ready[0] - flowing_at:.1f}s after records flowed:\n{answers.describe(flowing_at)}"
            )
            await assert_each_record_once(nc, stream, sent[0])
    finally:
        stop_producing.set()
        stop_polling.set()
        await nc.close()


async def test_quorum_loss_turns_readyz_503_within_seconds_and_nothing_is_lost_or_doubled(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: TopicFactory, unique_name: str
) -> None:
    """An R3 stream on the local 3-node cluster; the bridge lists one node; the other two are
    killed: the node still answers pings, JetStream answers nothing (no quorum)."""
    cluster = start_cluster()
    topic = await kafka_topic(partitions=PARTITIONS)
    stream = unique_name.upper()
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(mapping_text([cluster.urls[0]], stream, topic, kafka_bootstrap, "replicas: 3"))
    bridge = BridgeProcess(mapping, tmp_path / "bridge.log", args=("--http", "127.0.0.1:0"))
    stop_producing, stop_polling = asyncio.Event(), asyncio.Event()
    sent = [0]
    answers = ReadyzLog()
    with cluster_lock(cluster):
        nc = await nats.connect(list(cluster.urls))
        try:
            await wait_for_jetstream(list(cluster.urls))
            async with running(bridge) as base:
                producer = asyncio.create_task(
                    produce_at_rate(kafka_bootstrap, topic, 300, PARTITIONS, stop_producing, sent)
                )
                poller = asyncio.create_task(poll_readyz(base, answers, stop_polling))
                await wait_for_count(nc, stream, 500, 60, bridges=[bridge])
                await asyncio.to_thread(brokers_local.brokers, "kill", cluster.node_name(1))
                await asyncio.to_thread(brokers_local.brokers, "kill", cluster.node_name(2))
                lost_at = time.monotonic()
                await asyncio.sleep(WITHIN + 2)
                found = answers.first(503, lost_at)
                assert found is not None, f"no 503 without quorum:\n{answers.describe(lost_at)}"
                at, text = found
                assert at - lost_at <= WITHIN, f"503 came {at - lost_at:.1f}s after quorum was lost:\n{text}"
                assert "JetStream" in text, text

                await asyncio.to_thread(start_cluster)
                back_at = time.monotonic()
                await asyncio.sleep(3)
                stop_producing.set()
                await producer
                await nc.close()
                nc = await nats.connect(list(cluster.urls))
                await assert_each_record_once(nc, stream, sent[0], timeout=180)
                await asyncio.sleep(1)
                assert answers.first(200, back_at) is not None, f"never ready again:\n{answers.describe(back_at)}"
                stop_polling.set()
                await poller
                with contextlib.suppress(Exception):
                    await nc.jetstream().delete_stream(stream)
        finally:
            stop_producing.set()
            stop_polling.set()
            with contextlib.suppress(Exception):
                await nc.close()


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data
