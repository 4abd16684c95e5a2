"""The phase bucket is input like any other (issue 19): records written into `phase.<service>` by
hand — not JSON, an unknown phase, an array, wrong types, over 64 KiB, shadow -> retired with
delete_offsets, retired -> shadow — under a running `nats-bridge run` on real Kafka and a NATS
server of the test's own. The bridge keeps running and keeps its last valid phase; the consumer
group and the checkpoints stay; each record is an ERROR naming the key and revision, a count in
nats_bridge_phase_records_rejected_total, an entry in /status and in `nats-bridge status`. A
service with no valid record at start is held (none of its routes start) until an operator writes
its phase with `cutover --force`.

The phase bucket is made as versions before the schema made it (no value size limit), so an
oversize record reaches the bridges; a bucket cutover makes now refuses one at the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import nats
import nats.errors
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from kafka_helpers import BridgeProcess, fill_topic, stream_count, wait_for_count
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import APIError
from nats.js.kv import KeyValue
from private_nats import PrivateNatsServer

from bridge.config.services import Phase
from bridge.cutover.phases import MAX_RECORD_BYTES, PhaseRecord
from bridge.cutover.store import BUCKET, HISTORY, REPORTS_BUCKET, PhaseStore, phase_key, report_key

if TYPE_CHECKING:
    from conftest import TopicFactory

pytestmark = [pytest.mark.nats, pytest.mark.kafka]

ROOT = Path(__file__).resolve().parents[2]
BridgeFactory = Callable[[Path], BridgeProcess]
FAST = ("--stall-after", "4s")
NOW = "2025-03-01T10:00:00Z"


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[PrivateNatsServer]:
    server = PrivateNatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def pnc(private_nats: PrivateNatsServer) -> AsyncIterator[NatsClient]:
    client = await nats.connect(private_nats.url, name="pytest")
    yield client
    await client.close()


async def old_phase_bucket(js: JetStreamContext) -> KeyValue:
    """The phase bucket as earlier versions made it: history 16, no limit on a value's size."""
    config = js_api.KeyValueConfig(bucket=BUCKET, history=HISTORY, storage=js_api.StorageType.FILE)
    return await js.create_key_value(config)


async def cli(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", *args, cwd=ROOT, env={**os.environ, "COLUMNS": "250"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 180)
    return process.returncode or 0, out.decode()


def record(phase: str, previous: str | None, **extra: Any) -> bytes:
    """A record shaped as cutover writes one (all fields, by mallory)."""
    document: dict[str, Any] = {
        "phase": phase, "previous": previous, "changed_by": "mallory", "changed_at": NOW, "reason": "by hand",
        "quiet_for": 30.0, "delete_offsets": False, "forced": False, "drained_at": None, "drained_by": None,
        "drain_reports": {}, "retired_cleanup": {},
    }  # fmt: skip
    document.update(extra)
    return json.dumps(document).encode()


# (what, value, kind): the records the finding wrote, and a few more.
MALFORMED: list[tuple[str, bytes, str]] = [
    ("not JSON", b"{not json", "invalid"),
    ("unknown phase", b'{"phase":"paused"}', "invalid"),
    ("an array", b'["retired"]', "invalid"),
    ("wrong types", record("drain", "shadow", delete_offsets="true", quiet_for="2"), "invalid"),
    ("oversize", record("drain", "shadow", reason="x" * (MAX_RECORD_BYTES + 1)), "invalid"),
    (
        "shadow -> retired with delete_offsets",
        record("retired", "drain", delete_offsets=True, drained_at=NOW, drained_by="mallory"),
        "transition",
    ),
]


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


async def group_offsets(bootstrap: str, group: str) -> int | None:
    """The sum of the group's committed offsets; None when the group does not exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if group not in {g[0] for g in await admin.list_consumer_groups()}:
            return None
        offsets = await admin.list_consumer_group_offsets(group)
        return sum(meta.offset for meta in offsets.values())
    finally:
        await admin.close()


async def checkpoints(js: JetStreamContext) -> int:
    kv = await js.key_value("nats_bridge_checkpoints")
    return len(await kv.keys())


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def rejected_metric(metrics: str, service: str, kind: str) -> float:
    prefix = f'nats_bridge_phase_records_rejected_total{{kind="{kind}",service="{service}"}} '
    (line,) = [line for line in metrics.splitlines() if line.startswith(prefix)]
    return float(line.removeprefix(prefix))


async def test_malformed_phase_records_are_ignored_and_the_bridge_keeps_its_phase(
    tmp_path: Path,
    private_nats: PrivateNatsServer,
    pnc: NatsClient,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    unique_name: str,
    bridge_process: BridgeFactory,
) -> None:
    service, stream = unique_name, unique_name.upper()
    group = f"nats-bridge.{service}.copy"
    js = pnc.jetstream()
    kv = await old_phase_bucket(js)
    topic = await kafka_topic(partitions=2)
    await fill_topic(kafka_bootstrap, topic, 50, 2)
    mapping = kafka_mapping(tmp_path / "m.yaml", private_nats.url, kafka_bootstrap, service, topic)
    bridge = bridge_process(mapping)
    bridge.args = FAST
    bridge.start()
    await wait_for_count(pnc, stream, 50, timeout=120, bridges=[bridge])
    await asyncio.sleep(1.5)  # a commit and its checkpoints
    assert await group_offsets(kafka_bootstrap, group) == 50
    kept_checkpoints = await checkpoints(js)
    assert kept_checkpoints >= 2

    key = phase_key(service)
    revisions: dict[int, str] = {}
    for what, value, kind in MALFORMED:
        revision = await kv.put(key, value)
        revisions[revision] = kind
        await bridge.wait_for_log(f"ignored {BUCKET}/{key} revision {revision} ({kind})", timeout=15)
        assert bridge.alive(), f"{what}:\n{bridge.log()}"
    assert "keeping phase shadow" in bridge.log()
    await asyncio.sleep(2)  # a few more polls of the same records: still running, logged once each
    assert bridge.alive(), bridge.log()
    assert bridge.log_path.read_text().count(f"revision {max(revisions)} (transition)") == 1
    # Still shadow: the route copies, the group and its checkpoints are where they were.
    await fill_topic(kafka_bootstrap, topic, 10, 2)
    await wait_for_count(pnc, stream, 60, timeout=60, bridges=[bridge])
    await asyncio.sleep(1.5)
    assert await group_offsets(kafka_bootstrap, group) == 60
    assert await checkpoints(js) >= kept_checkpoints

    base = await bridge.http_url()
    _, metrics = await get(f"{base}/metrics")
    assert rejected_metric(metrics, service, "invalid") == 5
    assert rejected_metric(metrics, service, "transition") == 1
    code, body = await get(f"{base}/status")
    (entry,) = [s for s in json.loads(body)["services"] if s["service"] == service]
    assert (entry["phase"], entry["record_valid"], entry["record_revision"]) == ("shadow", True, 0)
    assert {r["revision"]: r["kind"] for r in entry["ignored_records"]} == revisions
    assert all(r["key"] == f"{BUCKET}/{key}" for r in entry["ignored_records"])
    assert entry["rejected_records"] == {"invalid": 5, "transition": 1}
    code, body = await get(f"{base}/readyz")
    assert code == 200, body

    code, out = await cli("status", str(mapping), "--json", "--interval", "0.5s")
    assert code == 0, out
    (status,) = json.loads(out)["services"]
    assert (status["phase"], status["record_valid"]) == ("shadow", True)
    assert {r["revision"]: r["kind"] for r in status["ignored_records"]} == revisions
    code, out = await cli("status", str(mapping), "--interval", "0.5s")
    assert code == 0, out
    assert "phase records ignored" in out
    assert f"{BUCKET}/{key}" in out

    # Valid moves still work over the ignored revisions; then retired -> shadow is refused too.
    code, out = await cli(
        "cutover", service, str(mapping), "--to", "drain", "--reason", "moved", "--quiet", "2s",
        "--wait", "--timeout", "90s",
    )  # fmt: skip
    assert code == 0, out + bridge.log()
    code, out = await cli("cutover", service, str(mapping), "--to", "retired", "--reason", "done", "--wait")
    assert code == 0, out + bridge.log()
    assert f"kept consumer group '{group}'" in out
    await bridge.wait_for_log(f"service {service}: phase retired", timeout=10)
    revision = await kv.put(key, record("shadow", "retired"))
    await bridge.wait_for_log(f"ignored {BUCKET}/{key} revision {revision} (transition)", timeout=15)
    await fill_topic(kafka_bootstrap, topic, 10, 2)
    await asyncio.sleep(3)
    assert await stream_count(pnc, stream) == 60
    assert bridge.terminate() == 0, bridge.log()

    # A bridge started now reads the history the same way: retired, nothing copied again.
    again = bridge_process(mapping)
    again.args = FAST
    again.start()
    await again.wait_for_log(f"service {service}: phase retired", timeout=60)
    await again.wait_for_log(f"ignored {BUCKET}/{key} revision {revision} (transition)", timeout=10)
    await asyncio.sleep(5)
    assert await stream_count(pnc, stream) == 60
    assert await group_offsets(kafka_bootstrap, group) == 60
    assert await checkpoints(js) >= kept_checkpoints
    assert again.terminate() == 0, again.log()


async def test_a_service_without_a_valid_record_is_held_until_an_operator_writes_its_phase(
    tmp_path: Path,
    private_nats: PrivateNatsServer,
    pnc: NatsClient,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    unique_name: str,
    bridge_process: BridgeFactory,
) -> None:
    service, stream = unique_name, unique_name.upper()
    js = pnc.jetstream()
    kv = await old_phase_bucket(js)
    key = phase_key(service)
    await kv.put(key, record("retired", "drain", drained_at=NOW))
    await kv.purge(key)  # what it was is gone with its history
    revision = await kv.put(key, b"{not json")
    topic = await kafka_topic(partitions=1)
    await fill_topic(kafka_bootstrap, topic, 50, 1)
    mapping = kafka_mapping(tmp_path / "m.yaml", private_nats.url, kafka_bootstrap, service, topic)
    bridge = bridge_process(mapping)
    bridge.args = FAST
    bridge.start()
    await bridge.wait_for_log(f"service {service}: no valid phase record", timeout=60)
    await bridge.wait_for_log(f"ignored {BUCKET}/{key} revision {revision} (invalid)", timeout=5)
    base = await bridge.http_url()
    await asyncio.sleep(5)
    assert bridge.alive(), bridge.log()
    assert await stream_count(pnc, stream) == 0  # the route never started
    assert await group_offsets(kafka_bootstrap, f"nats-bridge.{service}.copy") is None
    code, body = await get(f"{base}/readyz")
    assert code == 503, body
    assert f"service {service}: no valid phase record" in body
    code, body = await get(f"{base}/status")
    (entry,) = [s for s in json.loads(body)["services"] if s["service"] == service]
    assert (entry["phase"], entry["record_valid"]) == ("held", False)

    code, out = await cli("status", str(mapping), "--json", "--interval", "0.5s")
    assert code == 0, out
    (status,) = json.loads(out)["services"]
    assert (status["phase"], status["record_valid"], status["safe_to_advance"]) == ("unknown", False, False)
    assert "--force" in status["advice"]
    code, out = await cli("cutover", service, str(mapping), "--to", "drain", "--reason", "guess")
    assert code == 2, out
    assert "holds no valid revision" in out
    code, out = await cli("cutover", service, str(mapping), "--to", "shadow", "--reason", "it never moved", "--force")
    assert code == 0, out
    await bridge.wait_for_log(f"service {service}: phase shadow", timeout=15)
    await wait_for_count(pnc, stream, 50, timeout=120, bridges=[bridge])
    for _ in range(50):  # the next health look sees the route's source
        code, body = await get(f"{base}/readyz")
        if code == 200:
            break
        await asyncio.sleep(0.2)
    assert code == 200, body
    assert bridge.terminate() == 0, bridge.log()


async def test_the_store_reads_a_key_s_history_with_direct_gets(pnc: NatsClient, unique_name: str) -> None:
    """What `read` makes of histories no bridge has to run for: one longer than the bucket keeps,
    the bucket removed under a reader, a bucket made now, an invalid bridge report."""
    js = pnc.jetstream()
    store = PhaseStore(js)
    service, key = unique_name, phase_key(unique_name)
    state, rejections = await store.read(service)
    assert (state.record, state.latest, rejections) == (PhaseRecord(), 0, [])

    record_ = await store.change(service, Phase.DRAIN, by="ops", reason="moved")
    kv = await js.key_value(BUCKET)
    known, _ = await store.read(service)
    assert known.record == record_
    for _ in range(HISTORY):  # the valid record drops out of the history the bucket keeps
        await kv.put(key, b"[]")
    state, rejections = await store.read(service, known)
    assert state.record == record_
    assert len(rejections) == HISTORY
    fresh, _ = await PhaseStore(js).read(service)
    assert fresh.held
    assert len(fresh.ignored) == 10

    # A bucket made now refuses an oversize value at the server.
    with pytest.raises(APIError):
        await kv.put(key, record("drain", "shadow", reason="x" * (MAX_RECORD_BYTES + 1)))

    # The bucket removed under a reader: it keeps what it had (the first look may find nobody
    # answering its direct gets: a read error, after which the bucket is looked up again).
    await js.delete_key_value(BUCKET)
    try:
        gone, rejections = await store.read(service, state)
    except nats.errors.Error:
        gone, rejections = await store.read(service, state)
    assert gone.record == record_
    assert [r.revision for r in rejections] == [0]
    assert await store.read(service, gone) == (gone, [])  # said once

    # An invalid report is named and treated as none.
    await PhaseStore(js).change(service, Phase.DRAIN, by="ops", reason="again")
    reports = await js.create_key_value(js_api.KeyValueConfig(bucket=REPORTS_BUCKET))
    revision = await reports.put(report_key(service), b'{"phase_revision": true}')
    report, at, rejection = await store.report(service)
    assert (report, at) == (None, revision)
    assert rejection is not None
    assert "phase_revision" in rejection.reason
