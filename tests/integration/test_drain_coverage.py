"""A draining service is drained only when every partition was seen empty by the instance that
owns it — against real Kafka and NATS, with two `nats-bridge run` instances in one group.

One instance owns the topic's only partition and cannot drain it (its stream is full, with
`discard: new`, so JetStream refuses and the route stays paused with records waiting); the other
owns nothing, so to it the backlog is unknown and nothing arrives: it is quiet. It must not report
the service drained, and `cutover --to retired` without `--force` must refuse. Once the stream
takes messages again, the owner drains its partition and the service is reported drained.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from kafka_helpers import BridgeProcess, fill_topic, stream_count, wait_for_count
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from bridge.cutover.store import PhaseStore

pytestmark = [pytest.mark.nats, pytest.mark.kafka]

ROOT = Path(__file__).resolve().parents[2]
BridgeFactory = Callable[[Path], BridgeProcess]
TopicFactory = Callable[..., Awaitable[str]]
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


async def record_of(nc: NatsClient, service: str) -> dict[str, object]:
    record, _ = await PhaseStore(nc.jetstream(), create=False).get(service)
    return json.loads(record.to_json())


async def owner_and_idle(a: BridgeProcess, b: BridgeProcess, topic: str, timeout: float = 90) -> tuple[str, str]:
    """Which instance owns the partition after the second one joined (the group's assignor decides)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = {}
        for name, bridge in (("a", a), ("b", b)):
            lines = [line for line in bridge.log_path.read_text().splitlines() if "): assigned " in line]
            last[name] = lines[-1] if lines else ""
        if last.get("b"):
            owners = [name for name, line in last.items() if line.endswith(f"assigned {topic}/0")]
            idle = [name for name, line in last.items() if line.endswith("assigned nothing")]
            if len(owners) == 1 and len(idle) == 1:
                return owners[0], idle[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"no clear owner after the rebalance:\n{a.log()}\n{b.log()}")


async def test_an_instance_owning_no_partition_does_not_report_a_service_with_a_backlog_drained(
    tmp_path: Path,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    unique_name: str,
    jetstream: JetStreamContext,
    nc: NatsClient,
    bridge_process: BridgeFactory,
) -> None:
    service, stream = unique_name, unique_name.upper()
    topic = await kafka_topic(partitions=1)
    mapping = tmp_path / "m.yaml"
    mapping.write_text(f"""
nats: {{servers: ["{nats_url}"]}}
streams:
  - {{name: {stream}, subjects: ["{service}.>"], max_msgs: 10, discard: new}}
sources:
  kafka: {{type: kafka, bootstrap_servers: ["{kafka_bootstrap}"]}}
services:
  {service}:
    routes:
      - {{name: copy, source: kafka, from: {{topics: ["{topic}"]}}, to: "{service}.{{partition}}"}}
""")
    a = bridge_process(mapping)
    a.args = FAST
    a.start()
    await a.wait_for_log(f"assigned {topic}/0", timeout=60)
    await fill_topic(kafka_bootstrap, topic, 40, 1)
    await wait_for_count(nc, stream, 10, timeout=60, bridges=[a])  # full: 30 records wait in Kafka
    b = bridge_process(mapping)
    b.args = FAST
    b.start()
    owner, idle = await owner_and_idle(a, b, topic)
    bridges = {"a": a, "b": b}

    code, out = await cli(
        "cutover", service, str(mapping), "--to", "drain", "--reason", "producers moved", "--quiet", "2s"
    )
    assert code == 0, out
    # Five times the quiet period: the idle instance has every chance to call it drained.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        record = await record_of(nc, service)
        assert record["drained_at"] is None, f"{record}\n{bridges[idle].log()}"
        await asyncio.sleep(0.2)
    assert record["drain_reports"] == {}
    await bridges[idle].wait_for_log("this instance's part is empty and quiet", timeout=5)
    assert await stream_count(nc, stream) == 10
    code, out = await cli("cutover", service, str(mapping), "--to", "retired", "--reason", "too early")
    assert code == 2, out
    assert "has not been reported drained yet" in out

    # The stream takes messages again: the owner drains its partition, and only then is the
    # service drained, on the owner's report.
    info = await jetstream.stream_info(stream)
    await jetstream.update_stream(dataclasses.replace(info.config, max_msgs=-1))
    await wait_for_count(nc, stream, 40, timeout=60, bridges=[a, b])
    deadline = time.monotonic() + 60
    while (record := await record_of(nc, service))["drained_at"] is None:
        assert time.monotonic() < deadline, f"not drained:\n{a.log()}\n{b.log()}"
        await asyncio.sleep(0.2)
    reports = record["drain_reports"]
    assert isinstance(reports, dict)
    process = bridges[owner].process
    assert process is not None
    assert reports == {f"{socket.gethostname()}:{process.pid}": {f"{service}/copy": [f"{topic}/0"]}}
    assert record["drained_by"] == f"{socket.gethostname()}:{process.pid}"
    code, out = await cli("cutover", service, str(mapping), "--to", "retired", "--reason", "drained")
    assert code == 0, out
    for bridge in (a, b):
        assert bridge.terminate() == 0, bridge.log()
