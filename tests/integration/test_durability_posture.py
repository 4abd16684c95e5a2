"""`dry-run --connect` and `status` show each stream's durability posture against the legacy side
(issue 20, item 4), on the real brokers: a RabbitMQ quorum queue (one works on a single node)
copied onto an R1 stream is a warning naming the route, as is a Kafka topic onto a memory stream;
a classic queue onto an R1 file stream is not; sync_interval is "unknown" unless a server's
monitoring endpoint is listed, and read from /varz when it is."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aio_pika
import pytest
from private_nats import PrivateNatsServer

if TYPE_CHECKING:
    from conftest import TopicFactory
    from nats.js import JetStreamContext

pytestmark = [pytest.mark.nats, pytest.mark.rabbitmq, pytest.mark.kafka]

ROOT = Path(__file__).resolve().parents[2]


async def cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode(), err.decode()


def mapping(
    path: Path,
    *,
    nats_url: str,
    amqp: str,
    api: str,
    kafka: str,
    name: str,
    topic: str,
    monitor: str | None = None,
    classic_only: bool = False,
) -> Path:
    """ORDERS (R1 file) takes a shadow copy of the exchange where a quorum queue is bound, and a
    drain of that queue; AUDIT (R1 file) the keys a classic queue is bound with; MEM (memory)
    a Kafka topic (replication factor 1 here). on_error skip: no dead-letter stream, so the
    only warnings left are the durability ones."""
    monitor_line = f', monitor_urls: ["{monitor}"]' if monitor else ""
    routes = f"""
      - {{name: audit, source: rabbit, from: {{exchange: {name}-ex, bindings: ["audit.#"]}},
          to: "{name}.audit.{{rk}}", on_error: skip}}"""
    if not classic_only:
        routes += f"""
      - {{name: orders, source: rabbit, from: {{exchange: {name}-ex, bindings: ["order.*"]}},
          to: "{name}.orders.{{rk}}", on_error: skip}}
      - {{name: drain, source: rabbit, from: {{queue: {name}-quorum}}, to: "{name}.orders.q.{{rk}}", on_error: skip}}
      - {{name: clicks, source: kafka, from: {{topics: ["{topic}"]}}, to: "{name}.mem.{{partition}}",
          on_error: skip}}"""
    streams = f"""
  - {{name: {name.upper()}_AUDIT, subjects: ["{name}.audit", "{name}.audit.>"]}}"""
    if not classic_only:
        streams += f"""
  - {{name: {name.upper()}_ORDERS, subjects: ["{name}.orders.>"]}}
  - {{name: {name.upper()}_MEM, subjects: ["{name}.mem.>"], storage: memory}}"""
    path.write_text(f"""
version: 1
nats: {{servers: ["{nats_url}"]{monitor_line}}}
streams:{streams}
sources:
  rabbit: {{type: rabbitmq, url: "{amqp}", management: {{url: "{api}"}}}}
  kafka: {{type: kafka, bootstrap_servers: ["{kafka}"]}}
services:
  {name}:
    routes:{routes}
""")
    return path


async def legacy_estate(amqp: str, name: str) -> None:
    """An exchange with a quorum queue bound `order.#` and a classic queue bound `audit.#`."""
    connection = await aio_pika.connect(amqp)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(f"{name}-ex", aio_pika.ExchangeType.TOPIC)
        quorum = await channel.declare_queue(f"{name}-quorum", durable=True, arguments={"x-queue-type": "quorum"})
        await quorum.bind(exchange, "order.#")
        classic = await channel.declare_queue(f"{name}-classic", durable=True)
        await classic.bind(exchange, "audit.#")
    finally:
        await connection.close()


def warnings_of(document: dict[str, Any]) -> list[str]:
    return [
        f"{f['subject']}: {f['message']}"
        for f in document["findings"]
        if f["severity"] == "warning" and f["check"] == "durability"
    ]


@pytest.fixture
def api(rabbitmq_api_url: str | None) -> str:
    if rabbitmq_api_url is None:
        pytest.fail("the durability posture reads queue types from the management API: set RABBITMQ_API_URL")
    return rabbitmq_api_url


async def test_dry_run_warns_for_a_quorum_queue_onto_r1_and_a_topic_onto_memory(
    tmp_path: Path,
    nats_url: str,
    rabbit_vhost_url: str,
    api: str,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    jetstream: JetStreamContext,
    unique_name: str,
) -> None:
    topic = await kafka_topic()
    await legacy_estate(rabbit_vhost_url, unique_name)
    file = mapping(
        tmp_path / "m.yaml",
        nats_url=nats_url,
        amqp=rabbit_vhost_url,
        api=api,
        kafka=kafka_bootstrap,
        name=unique_name,
        topic=topic,
    )
    code, out, err = await cli("streams", "apply", str(file))
    assert code == 0, out + err

    code, out, err = await cli("dry-run", str(file), "--connect", "--json")
    assert out, err
    document = json.loads(out)
    warnings = warnings_of(document)
    others = [f for f in document["findings"] if f["severity"] != "info" and f["check"] != "durability"]
    assert others == [], others
    assert code == 1, (warnings, err)  # warnings only: dry-run exits 1, as for every warning

    orders, mem = f"{unique_name.upper()}_ORDERS", f"{unique_name.upper()}_MEM"
    quorum = f"quorum queue '{unique_name}-quorum'"
    for route in ("orders", "drain"):  # shadowed where the quorum queue is bound; drained from it
        (warning,) = [w for w in warnings if w.startswith(f"{unique_name}/{route}: ") and "replicas 1" in w]
        assert quorum in warning
        assert f"stream {orders} replicas 1" in warning
        assert "`replicas: 3`" in warning
    (memory,) = [w for w in warnings if w.startswith(f"{unique_name}/clicks: ")]
    assert f"Kafka topic '{topic}' (replication factor 1" in memory
    assert f"stream {mem} storage memory" in memory
    assert "`storage: file`" in memory
    assert not [w for w in warnings if w.startswith(f"{unique_name}/audit: ")]  # classic queue: no warning
    assert len(warnings) == 3, warnings

    durability = document["durability"]
    postures = {s["stream"]: s for s in durability["streams"]}
    assert postures[orders]["replicas"] == 1
    assert postures[orders]["storage"] == "file"
    assert postures[orders]["origin"] == "server"
    assert postures[mem]["storage"] == "memory"
    assert postures[orders]["sync_interval"]["text"] == "unknown (not revealed to clients)"
    routes = {r["route"]: r for r in durability["routes"]}
    assert [s["kind"] for s in routes[f"{unique_name}/audit"]["legacy"]["sources"]] == ["classic queue"]
    assert [s["name"] for s in routes[f"{unique_name}/orders"]["legacy"]["sources"]] == [f"{unique_name}-quorum"]
    (kafka,) = routes[f"{unique_name}/clicks"]["legacy"]["sources"]
    assert (kafka["kind"], kafka["copies"]) == ("Kafka topic", 1)
    assert {w["route"] for w in durability["warnings"]} == {f"{unique_name}/{r}" for r in ("orders", "drain", "clicks")}
    findings = document["findings"]
    notes = [f["message"] for f in findings if (f["check"], f["subject"]) == ("durability", "sync_interval")]
    assert any("not revealed to clients" in note and "sync_interval: always" in note for note in notes)

    # The table names the same: the posture per stream and the warnings.
    code, text, _ = await cli("dry-run", str(file), "--connect")
    assert code == 1
    flat = " ".join(text.split())
    assert "durability: what each stream keeps" in flat
    assert "guest:guest" not in text


async def test_classic_queue_onto_an_r1_file_stream_is_clean(
    tmp_path: Path,
    nats_url: str,
    rabbit_vhost_url: str,
    api: str,
    kafka_bootstrap: str,
    jetstream: JetStreamContext,
    unique_name: str,
) -> None:
    await legacy_estate(rabbit_vhost_url, unique_name)
    file = mapping(
        tmp_path / "m.yaml",
        nats_url=nats_url,
        amqp=rabbit_vhost_url,
        api=api,
        kafka=kafka_bootstrap,
        name=unique_name,
        topic="unused",
        classic_only=True,
    )
    code, out, err = await cli("streams", "apply", str(file))
    assert code == 0, out + err
    code, out, err = await cli("dry-run", str(file), "--connect", "--json")
    document = json.loads(out)
    assert code == 0, [f for f in document["findings"] if f["severity"] != "info"]
    (route,) = document["durability"]["routes"]
    assert route["legacy_text"].startswith(f"classic queue '{unique_name}-classic' (durable")
    assert document["durability"]["warnings"] == []
    # A note, not a warning: a classic queue confirms after fsync, JetStream (by default) does not.
    (note,) = document["durability"]["notes"]
    assert "sync_interval: always" in note["fix"]


async def test_status_shows_the_posture_and_warnings_without_changing_its_exit_code(
    tmp_path: Path,
    nats_url: str,
    rabbit_vhost_url: str,
    api: str,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    jetstream: JetStreamContext,
    unique_name: str,
) -> None:
    topic = await kafka_topic()
    await legacy_estate(rabbit_vhost_url, unique_name)
    file = mapping(
        tmp_path / "m.yaml",
        nats_url=nats_url,
        amqp=rabbit_vhost_url,
        api=api,
        kafka=kafka_bootstrap,
        name=unique_name,
        topic=topic,
    )
    code, out, err = await cli("streams", "apply", str(file))
    assert code == 0, out + err

    code, out, err = await cli("status", str(file), "--json", "--interval", "0.5s")
    assert code == 0, err
    (service,) = json.loads(out)["services"]
    durability = service["durability"]
    warnings = {(w["route"], w["stream"], w["setting"]) for w in durability["warnings"]}
    orders, mem = f"{unique_name.upper()}_ORDERS", f"{unique_name.upper()}_MEM"
    assert warnings == {
        (f"{unique_name}/orders", orders, "replicas 1"),
        (f"{unique_name}/drain", orders, "replicas 1"),
        (f"{unique_name}/clicks", mem, "storage memory"),
    }
    postures = {s["stream"]: (s["replicas"], s["storage"], s["sync_interval"]["text"]) for s in durability["streams"]}
    assert postures[orders] == (1, "file", "unknown (not revealed to clients)")
    assert postures[mem] == (1, "memory", "unknown (not revealed to clients)")

    code, text, err = await cli("status", str(file), "--interval", "0.5s")
    assert code == 0, err
    flat = " ".join(text.split())
    assert f"warning: {unique_name}/orders: quorum queue '{unique_name}-quorum'" in flat
    assert f"warning: {unique_name}/clicks: Kafka topic '{topic}'" in flat
    assert f"warning: {unique_name}/audit" not in flat  # the classic queue: a note at most
    assert "guest:guest" not in text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_sync_interval_is_read_from_the_monitoring_endpoint(
    tmp_path: Path,
    rabbit_vhost_url: str,
    api: str,
    kafka_bootstrap: str,
    unique_name: str,
) -> None:
    """A server run with `sync_interval: always`: with its monitoring endpoint listed, the quorum
    queue's remaining warning is the one copy (R1), not the fsync; without it, unknown."""
    await legacy_estate(rabbit_vhost_url, unique_name)
    config = tmp_path / "nats.conf"
    config.write_text("jetstream { sync_interval: always }\n")
    monitor_port = _free_port()
    server = PrivateNatsServer(tmp_path / "nats", extra_args=("-c", str(config), "-m", str(monitor_port)))
    server.start()
    try:
        file = mapping(
            tmp_path / "m.yaml",
            nats_url=server.url,
            amqp=rabbit_vhost_url,
            api=api,
            kafka=kafka_bootstrap,
            name=unique_name,
            topic="unused",
            monitor=f"http://127.0.0.1:{monitor_port}",
        )
        code, out, err = await cli("streams", "apply", str(file))
        assert code == 0, out + err
        code, out, _ = await cli("dry-run", str(file), "--connect", "--json")
        document = json.loads(out)
        orders = f"{unique_name.upper()}_ORDERS"
        postures = {s["stream"]: s for s in document["durability"]["streams"]}
        assert postures[orders]["sync_interval"] == {
            "known": True,
            "always": True,
            "interval_seconds": None,
            "text": "always",
        }
        quorum = [w for w in document["durability"]["warnings"] if w["route"] == f"{unique_name}/orders"]
        assert [w["setting"] for w in quorum] == ["replicas 1"]
        assert document["durability"]["notes"] == []  # the classic queue's fsync is kept too

        # A monitoring endpoint that does not answer is a warning, and the interval unknown.
        silent = _free_port()
        file = mapping(
            tmp_path / "m2.yaml",
            nats_url=server.url,
            amqp=rabbit_vhost_url,
            api=api,
            kafka=kafka_bootstrap,
            name=unique_name,
            topic="unused",
            monitor=f"http://127.0.0.1:{silent}",
        )
        code, out, _ = await cli("dry-run", str(file), "--connect", "--json")
        document = json.loads(out)
        assert any(
            f["subject"] == "probe" and f"NATS monitoring at http://127.0.0.1:{silent}/varz" in f["message"]
            for f in document["findings"]
            if f["severity"] == "warning"
        )
        postures = {s["stream"]: s for s in document["durability"]["streams"]}
        assert postures[orders]["sync_interval"]["known"] is False
    finally:
        server.stop()
