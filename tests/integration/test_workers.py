"""`run --workers 2` on real brokers: the supervisor's workers share a Kafka topic's partitions,
one SIGKILLed worker is started again, every record is stored exactly once, the supervisor's one
endpoint answers for both, and SIGTERM stops everything with exit 0.

The workers are the bridge's own `run` processes, so what they promise (exactly once through a
member's death, by the consumer group, checkpoints and de-duplication) is test_scale_out.py's;
this test pins what the supervisor adds: start, restart, forward the signal, answer for all.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError
from kafka_helpers import BridgeProcess, fill_topic, stored_offsets, wait_for_count, write_mapping
from nats.aio.client import Client as NatsClient
from processes import alive

PARTITIONS = 4
FIRST = 3_000  # records before the SIGKILL
SECOND = 2_000  # and after it
# The supervisor's own line; a worker's says `worker=K` before the logger's name.
SERVING = re.compile(r"INFO +bridge\.operations\.http: serving /metrics /healthz /readyz /status on (http://\S+)")


async def until(
    condition: Callable[[], Awaitable[bool]], what: str, bridge: BridgeProcess, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if not bridge.alive():
            raise AssertionError(f"the supervisor exited while waiting for {what}:\n{bridge.log()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout}s:\n{bridge.log()}")
        await asyncio.sleep(0.2)


async def supervisor_url(bridge: BridgeProcess) -> str:
    found: list[str] = []

    async def logged() -> bool:
        found[:] = SERVING.findall(bridge.log_path.read_text(errors="replace"))
        return bool(found)

    await until(logged, "the supervisor's endpoint", bridge)
    return found[0]


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
            return response.status, await response.text()
    except (aiohttp.ClientError, TimeoutError) as error:
        return 0, str(error)


async def members(admin: AIOKafkaAdminClient, group: str) -> tuple[str, list[set[int]]]:
    """The group's state and each member's partitions (empty while the coordinator can't say)."""
    try:
        (response,) = await admin.describe_consumer_groups([group])
    except KafkaError:
        return "", []
    (described,) = response.to_object()["groups"]
    shares = []
    for member in described["members"]:
        raw = member["member_assignment"]
        shares.append(
            {tp.partition for tp in ConsumerProtocolMemberAssignment.decode(raw).partitions()} if raw else set()
        )
    return described["state"], shares


@pytest.mark.timeout(240)
async def test_two_workers_share_the_partitions_a_sigkilled_one_comes_back_and_sigterm_stops_all(
    tmp_path: Path,
    bridge_process: Callable[..., BridgeProcess],
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: Callable[..., Awaitable[str]],
    unique_name: str,
    nc: NatsClient,
) -> None:
    started = time.monotonic()
    topic = await kafka_topic(partitions=PARTITIONS)
    stream = unique_name.upper()
    group = f"bridge-{unique_name}"
    mapping = write_mapping(
        tmp_path / "m.yaml", nats_url=nats_url, bootstrap=kafka_bootstrap, stream=stream, topic=topic, group=group
    )
    await fill_topic(kafka_bootstrap, topic, FIRST, PARTITIONS)
    bridge = bridge_process(mapping, "--workers", "2")
    bridge.start()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        async with aiohttp.ClientSession() as session:
            url = await supervisor_url(bridge)
            status: dict[str, Any] = {}

            async def both_serving_and_sharing() -> bool:
                nonlocal status
                code, text = await get(session, f"{url}/status")
                status = json.loads(text) if code == 200 else {}
                state, shares = await members(admin, group)
                return (
                    (await get(session, f"{url}/healthz"))[0] == 200
                    and state == "Stable"
                    and len(shares) == 2
                    and all(shares)
                    and set().union(*shares) == set(range(PARTITIONS))
                )

            # The one endpoint is healthy only with both workers; the group splits the topic between them.
            await until(both_serving_and_sharing, "two healthy workers sharing the partitions", bridge)
            assert sorted(status["workers"]) == ["1", "2"], status
            pids = {key: worker["pid"] for key, worker in status["workers"].items()}
            assert all(isinstance(pid, int) and alive(pid) for pid in pids.values()), status
            await wait_for_count(nc, stream, FIRST, timeout=60, bridges=[bridge])

            os.kill(pids["2"], signal.SIGKILL)
            restarted: dict[str, Any] = {}

            async def worker_2_back() -> bool:
                nonlocal restarted
                code, text = await get(session, f"{url}/status")
                if code != 200:
                    return False
                restarted = json.loads(text)["workers"]["2"]
                return restarted["running"] and restarted["pid"] != pids["2"] and restarted["restarts"] == 1

            await until(worker_2_back, "worker 2 started again", bridge)
            assert f"worker 2 (pid {pids['2']}) was killed by SIGKILL" in bridge.log_path.read_text(errors="replace")
            assert restarted["last_exit"] == "was killed by SIGKILL"

            await fill_topic(kafka_bootstrap, topic, SECOND, PARTITIONS)
            await wait_for_count(nc, stream, FIRST + SECOND, timeout=90, bridges=[bridge])
            await until(both_serving_and_sharing, "both workers sharing the partitions again", bridge, timeout=90)
            pids["2b"] = status["workers"]["2"]["pid"]
            code, metrics = await get(session, f"{url}/metrics")
            assert code == 200
            assert 'nats_bridge_worker_restarts_total{worker="2"} 1.0' in metrics
            assert metrics.count("# TYPE nats_bridge_messages_published_total counter") == 1
            for worker in ("1", "2"):
                assert re.search(rf'nats_bridge_messages_published_total\{{[^}}]*worker="{worker}"', metrics), metrics

            produced = dict.fromkeys(range(PARTITIONS), (FIRST + SECOND) // PARTITIONS)

            async def committed_to_the_end() -> bool:
                try:
                    offsets = await admin.list_consumer_group_offsets(group)
                except KafkaError:
                    return False
                return {tp.partition: meta.offset for tp, meta in offsets.items()} == produced

            # Committed means settled: anything stored twice would have been stored before this.
            await until(committed_to_the_end, "commits at the end of every partition", bridge)
    finally:
        await admin.close()

    assert bridge.terminate(timeout=90) == 0, bridge.log()
    assert not [pid for pid in pids.values() if alive(pid)], "a worker outlived its supervisor"
    log = bridge.log_path.read_text(errors="replace")
    assert "all 2 workers stopped cleanly" in log
    stored = await stored_offsets(nc, stream)
    assert sorted(stored) == list(range(PARTITIONS))
    for partition, offsets in stored.items():
        assert sorted(offsets) == list(range(produced[partition])), f"partition {partition}: not each offset once"
    print(f"\n[workers] {time.monotonic() - started:.1f}s")
