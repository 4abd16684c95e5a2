"""deploy/nats-permissions.conf is enough, and no more than that, for the bridge to do its job.

A nats-server of the test's own runs with the accounts and users of that file (its `estate`
names replaced by the test's, a 64 KiB max_payload so a large record goes to the object store,
and two users for the test itself: a producer that publishes to the stream, an admin that
looks). Under the `bridge` user the bridge copies a Kafka topic, dead-letters a record without
a key and one too large for a message (object store), and follows the phases the `operator`
user's `cutover` writes: it reports the service drained, runs the reverse route in drain (the
operator's `status` shows how far it wrote; its `reverse` switches it off, then removes its durable), and
on retire deletes its group and checkpoints — with no permission violation anywhere in its log.
The `bridge` user cannot write a phase record or purge the phase bucket: the server refuses.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import nats
import nats.errors
import nats.js.errors
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka_helpers import BridgeProcess, fill_topic, stream_count, wait_for_count
from nats.aio.client import Client as NatsClient
from private_nats import PrivateNatsServer

from bridge.config.services import Phase
from bridge.cutover.phases import PhaseRecord
from bridge.cutover.store import BUCKET, PhaseStore, phase_key

if TYPE_CHECKING:
    from conftest import TopicFactory

pytestmark = [pytest.mark.nats, pytest.mark.kafka]

ROOT = Path(__file__).resolve().parents[2]
PERMISSIONS = ROOT / "deploy" / "nats-permissions.conf"
BridgeFactory = Callable[[Path], BridgeProcess]
PASSWORDS = {"bridge": "bridge-pw-1", "operator": "operator-pw-2", "producer": "producer-pw-3", "admin": "admin-pw-4"}
MARKER = "      # Applications that publish to or consume the streams get users of their own here.\n"
VIOLATIONS = ("permissions violation", "lacks the permission", "refused the bridge's subscription")


def templated(u: str) -> str:
    """The shipped file with the test's names, and the test's own two users."""
    text = PERMISSIONS.read_text()
    for old, new in (("estate.", f"{u}."), ("ESTATE_", f"{u.upper()}_")):
        assert old in text, old
        text = text.replace(old, new)
    assert MARKER in text
    extra = (
        f'      {{ user: producer, password: "{PASSWORDS["producer"]}", '
        f'permissions: {{ publish: ["{u}.payments.>"], subscribe: ["_INBOX.>"] }} }}\n'
        f'      {{ user: admin, password: "{PASSWORDS["admin"]}" }}\n'
    )
    return text.replace(MARKER, extra)


@pytest.fixture
def secured_nats(tmp_path: Path, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateNatsServer]:
    directory = tmp_path / "nats"
    directory.mkdir()
    (directory / "nats-permissions.conf").write_text(templated(unique_name))
    (directory / "server.conf").write_text("max_payload: 65536\ninclude ./nats-permissions.conf\n")
    monkeypatch.setenv("NATS_BRIDGE_PASSWORD", PASSWORDS["bridge"])  # read by the server's config
    monkeypatch.setenv("NATS_OPERATOR_PASSWORD", PASSWORDS["operator"])
    server = PrivateNatsServer(directory, extra_args=("-c", str(directory / "server.conf")))
    server.start()
    yield server
    server.stop()


async def connect(server: PrivateNatsServer, user: str, errors: list[str] | None = None) -> NatsClient:
    async def error_cb(error: Exception) -> None:
        if errors is not None:
            errors.append(str(error))

    return await nats.connect(server.url, user=user, password=PASSWORDS[user], name=f"pytest-{user}", error_cb=error_cb)


@pytest.fixture
async def admin(secured_nats: PrivateNatsServer) -> AsyncIterator[NatsClient]:
    client = await connect(secured_nats, "admin")
    yield client
    await client.close()


def as_user(user: str) -> dict[str, str]:
    return {"NATS_USER": user, "NATS_PASSWORD": PASSWORDS[user]}


async def cli(*args: str, user: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", *args, cwd=ROOT, env={**os.environ, "COLUMNS": "250", **as_user(user)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 180)
    return process.returncode or 0, out.decode()


async def test_the_bridge_user_copies_and_follows_phases_and_only_the_operator_writes_them(
    tmp_path: Path,
    secured_nats: PrivateNatsServer,
    admin: NatsClient,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    unique_name: str,
    bridge_process: BridgeFactory,
) -> None:
    u = unique_name
    service, stream = f"{u}-payments", f"{u.upper()}_PAYMENTS"
    topic = await kafka_topic(partitions=2)
    legacy = await kafka_topic(partitions=1)  # where the reverse route writes
    mapping = tmp_path / "m.yaml"
    mapping.write_text(f"""
nats: {{servers: ["{secured_nats.url}"], user: "${{NATS_USER}}", password: "${{NATS_PASSWORD}}"}}
streams:
  - {{name: {stream}, subjects: ["{u}.payments.>"]}}
sources:
  kafka: {{type: kafka, bootstrap_servers: ["{kafka_bootstrap}"]}}
services:
  {service}:
    routes:
      - {{name: records, source: kafka, from: {{topics: ["{topic}"]}}, to: "{u}.payments.{{partition}}.{{key}}"}}
    reverse:
      - {{name: to-kafka, stream: {stream}, to: {{source: kafka, topic: "{legacy}", key: "{{header:Account}}"}}}}
""")
    await fill_topic(kafka_bootstrap, topic, 20, 2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=1024 * 1024)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"no key", partition=0)  # unmappable: dead-lettered
        await producer.send_and_wait(topic, b"x" * 100_000, key=b"big", partition=1)  # over max_payload
    finally:
        await producer.stop()

    bridge = bridge_process(mapping)
    bridge.args = ("--stall-after", "4s")
    bridge.env = as_user("bridge")
    bridge.start()
    await wait_for_count(admin, stream, 20, timeout=120, bridges=[bridge])
    await wait_for_count(admin, "NATS_BRIDGE_DLQ", 2, timeout=60, bridges=[bridge])
    objects = await (await admin.jetstream().object_store("nats_bridge_dlq_payloads")).list()
    assert len(objects) == 1
    assert objects[0].size == 100_000

    # The operator starts the drain; the bridge follows, reports it drained, runs the reverse route.
    code, out = await cli(
        "cutover", service, str(mapping), "--to", "drain", "--reason", "producers on NATS", "--quiet", "2s",
        "--wait", "--timeout", "90s", user="operator",
    )  # fmt: skip
    assert code == 0, out + bridge.log()
    assert f"service {service}: drained at" in out
    await bridge.wait_for_log("reverse route to-kafka starts", timeout=10)
    app = await connect(secured_nats, "producer")
    try:
        await app.jetstream().publish(f"{u}.payments.nats.1", b"from NATS", headers={"Account": "acct-1"})
    finally:
        await app.close()
    consumer = AIOKafkaConsumer(legacy, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=30_000, max_records=10)
        records = [record for part in batch.values() for record in part]
    finally:
        await consumer.stop()
    assert [(r.key, r.value) for r in records] == [(b"acct-1", b"from NATS")], bridge.log()

    # The operator sees how far the reverse route wrote, switches it off, then removes its durable.
    for _ in range(10):  # the record is in Kafka; the route acks it to JetStream just after
        code, out = await cli("status", str(mapping), "--json", "--interval", "0.5s", user="operator")
        assert code == 0, out
        (leg,) = json.loads(out)["services"][0]["reverse"]
        if leg["durable_state"]["acked_through"] == 21:  # 20 records copied, then the one from NATS
            break
    assert (leg["runs"], leg["durable_state"]["exists"], leg["durable_state"]["acked_through"]) == (True, True, 21), out
    assert leg["writer"].startswith(f"{socket.gethostname()}:"), out  # the bridge holding the route's lease
    code, out = await cli(
        "reverse", service, "to-kafka", str(mapping), "--to", "off", "--reason", "test", "--wait", "20s",
        user="operator",
    )  # fmt: skip
    assert code == 0, out + bridge.log()
    await bridge.wait_for_log("reverse route to-kafka stops", timeout=10)
    code, out = await cli(
        "reverse", service, "to-kafka", str(mapping), "--to", "removed", "--reason", "test", "--wait", "20s",
        user="operator",
    )  # fmt: skip
    assert code == 0, out + bridge.log()
    assert f"durable nats-bridge-reverse-{service}-to-kafka deleted" in out, out
    with pytest.raises(nats.js.errors.NotFoundError):
        await admin.jetstream().consumer_info(stream, f"nats-bridge-reverse-{service}-to-kafka")

    # The bridge's user cannot write a phase record, nor purge the phase bucket.
    errors: list[str] = []
    intruder = await connect(secured_nats, "bridge", errors)
    try:
        js = intruder.jetstream(timeout=2)
        store = PhaseStore(js, create=False)
        record, revision = await store.get(service)
        assert record.phase is Phase.DRAIN  # it can read it
        forged = PhaseRecord(Phase.RETIRED, Phase.DRAIN, "mallory", record.changed_at, "forged", forced=True)
        with pytest.raises((nats.errors.Error, TimeoutError)):
            await store.put(service, forged, revision)
        with pytest.raises((nats.errors.Error, TimeoutError)):
            await js.purge_stream(f"KV_{BUCKET}")
    finally:
        await intruder.close()
    refused = "\n".join(errors).lower()  # nats-py writes the server's -ERR in lower case
    for subject in (f"$KV.{BUCKET}.{phase_key(service)}", f"$JS.API.STREAM.PURGE.KV_{BUCKET}"):
        assert f'permissions violation for publish to "{subject.lower()}"' in refused, errors
    assert (await PhaseStore(admin.jetstream(), create=False).get(service))[0].phase is Phase.DRAIN

    # The operator retires it; the bridge stops the route and deletes its group and checkpoints.
    code, out = await cli(
        "cutover", service, str(mapping), "--to", "retired", "--reason", "consumers moved", "--delete-offsets",
        "--wait", "--timeout", "90s", user="operator",
    )  # fmt: skip
    assert code == 0, out + bridge.log()
    assert f"deleted consumer group 'nats-bridge.{service}.records'" in out
    assert "2 checkpoint(s) removed" in out
    code, out = await cli("status", str(mapping), "--json", "--interval", "0.5s", user="operator")
    assert code == 0, out
    (status,) = json.loads(out)["services"]
    assert (status["phase"], status["record_valid"]) == ("retired", True)
    assert status["routes"][0]["streams"][0]["messages"] == 21

    assert await stream_count(admin, stream) == 21
    assert bridge.terminate() == 0, bridge.log()
    log = bridge.log_path.read_text()
    assert not [line for line in log.splitlines() if any(v in line.lower() for v in VIOLATIONS)], bridge.log()
    assert "phase not read" not in log
    assert "cannot read service phases" not in log
