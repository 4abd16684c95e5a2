"""Order through graceful stops of the stream's leading node: the candidates side by side.

Issue 20 found that SIGTERM of the NATS node that leads a stream, while the bridge publishes
into it through that node, can store records out of partition order: the stopping leader drops
publishes it had received and not proposed, while a later one reaches the new leader. This runs
rounds of exactly that against the local 3-node cluster (R3 stream, Kafka topic with 6
partitions, a producer at --rate records/s) for each mode and counts, from the stream itself,
the records stored after a higher offset of their partition; and, from the bridge's
`nats_bridge_messages_reordered_total`, how many of them the bridge reported.

Modes (--modes takes their indexes):
0 pipelined + SIGTERM  (`ordering: pipelined`, nodes stopped the usual way; the default until issue 20)
1 strict + SIGTERM     (`ordering: strict`: one publish in flight per partition)
2 pipelined + ldm      (`ordering: pipelined`, nodes stopped with lame duck mode: SIGUSR2)
3 batched + SIGTERM    (`ordering: batched`: one JetStream atomic batch in flight per partition)
4 default + SIGTERM    (no `ordering:` line: the route as a new user writes it, batched today)

A round: find the node the bridge is connected to (/connz), make it the stream's leader
(leader stepdown with a preferred server), let traffic flow 3 s, stop that node, start it
again, wait until its replica is current.

    bash compose/brokers start kafka
    flock /tmp/nats-bridge-bench.lock .venv/bin/python bench/leader_stop_order.py [--rounds 12] [--rate 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import nats
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from nats.aio.client import Client as NatsClient

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "integration")]

import brokers_local  # noqa: E402  (tests/ holds the broker helpers the tests use)
from chaos.brokers import cluster_lock, start_cluster, wait_for_jetstream  # noqa: E402
from kafka_helpers import BridgeProcess, produce_at_rate, stored_records, wait_for_count  # noqa: E402

PARTITIONS = 6
MODES = (("pipelined", "term"), ("strict", "term"), ("pipelined", "ldm"), ("batched", "term"), ("default", "term"))


def http_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=3) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


def mapping(urls: list[str], name: str, stream: str, topic: str, ordering: str) -> str:
    servers = ", ".join(f'"{url}"' for url in urls)
    subject = stream.lower()
    return (
        f"nats: {{servers: [{servers}], name: {name}}}\n"
        f'streams: [{{name: {stream}, subjects: ["{subject}.>"], replicas: 3}}]\n'
        f'sources: {{kafka: {{type: kafka, bootstrap_servers: ["{os.environ["KAFKA_BOOTSTRAP"]}"]}}}}\n'
        "services:\n  bench:\n    routes:\n      - name: r\n        source: kafka\n"
        f'        from: {{topics: ["{topic}"], group: "bench-{subject}"}}\n'
        f'        to: "{subject}.{{partition}}"\n'
        + ("" if ordering == "default" else f"        ordering: {ordering}\n")
    )


class Cluster:
    def __init__(self) -> None:
        env = brokers_local.broker_env()
        self.urls = env["NATS_CLUSTER_URLS"].split(",")
        self.monitors = env["NATS_CLUSTER_MONITOR_URLS"].split(",")
        self.names = [f"bridge-test-n{i + 1}" for i in range(3)]
        self.pid_files = [ROOT / "compose" / ".state" / "nats-cluster" / f"n{i + 1}" / "nats.pid" for i in range(3)]

    def node_of(self, connection_name: str) -> int | None:
        for index, monitor in enumerate(self.monitors):
            with contextlib.suppress(OSError, ValueError):
                conns = http_json(f"{monitor}/connz?limit=1024").get("connections") or []
                if any(conn.get("name") == connection_name for conn in conns):
                    return index
        return None

    async def stop(self, node: int, how: str) -> None:
        """SIGTERM (how="term") or lame duck (how="ldm"), and wait until the process is gone."""
        pid = int(self.pid_files[node].read_text().strip())
        os.kill(pid, signal.SIGTERM if how == "term" else signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            await asyncio.sleep(0.1)
        os.kill(pid, signal.SIGKILL)

    async def start(self, node: int) -> None:
        await asyncio.to_thread(brokers_local.brokers, "start", f"nats-cluster-n{node + 1}")


async def make_leader(nc: NatsClient, stream: str, server: str, within: float = 30) -> bool:
    js = nc.jetstream(timeout=5)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            info = await js.stream_info(stream)
            if info.cluster and info.cluster.leader == server:
                return True
            body = json.dumps({"placement": {"preferred": server}}).encode()
            await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", body, timeout=5)
        await asyncio.sleep(1)
    return False


async def wait_current(nc: NatsClient, stream: str, within: float = 60) -> None:
    js = nc.jetstream(timeout=5)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            info = await js.stream_info(stream)
            replicas = info.cluster.replicas if info.cluster else None
            if info.cluster and info.cluster.leader and replicas and all(r.current for r in replicas):
                return
        await asyncio.sleep(0.5)


def out_of_order(records: list[tuple[int, int, int]]) -> tuple[int, int, int]:
    """(records stored after a higher offset of their partition, doubled, distinct)."""
    highest: dict[int, int] = {}
    seen: set[tuple[int, int]] = set()
    late = doubled = 0
    for partition, offset, _ in records:
        if (partition, offset) in seen:
            doubled += 1
            continue
        seen.add((partition, offset))
        if offset < highest.get(partition, -1):
            late += 1
        highest[partition] = max(highest.get(partition, -1), offset)
    return late, doubled, len(seen)


def reported(base: str) -> int:
    with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("nats_bridge_messages_reordered_total{"):
                return int(float(line.rsplit(" ", 1)[1]))
    return 0


async def _quiet(_error: Exception) -> None:
    """The checker's own reconnects are expected here; the bridge's log tells its story."""


async def stop_leaders(cluster: Cluster, nc: NatsClient, name: str, stream: str, how: str, rounds: int) -> int:
    """`rounds` times: make the bridge's node the leader, let traffic flow, stop it, start it."""
    stopped = 0
    for round_ in range(rounds):
        node = cluster.node_of(name)
        if node is None:
            print(f"  round {round_ + 1}: the bridge is on no node (reconnecting); waiting", flush=True)
            await asyncio.sleep(2)
            continue
        if not await make_leader(nc, stream, cluster.names[node]):
            print(f"  round {round_ + 1}: could not make {cluster.names[node]} the leader", flush=True)
            continue
        await asyncio.sleep(3)
        await cluster.stop(node, how)
        stopped += 1
        await asyncio.sleep(1)
        await cluster.start(node)
        await wait_current(nc, stream)
        print(f"  round {round_ + 1}: stopped {cluster.names[node]} ({how}) while it led", flush=True)
    return stopped


async def run_mode(cluster: Cluster, ordering: str, how: str, rounds: int, rate: int, work: Path) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    stream, topic, name = f"ORDER_{tag.upper()}", f"order-{tag}", f"bench-order-{tag}"
    admin = AIOKafkaAdminClient(bootstrap_servers=os.environ["KAFKA_BOOTSTRAP"])
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    (work / f"{tag}.yaml").write_text(mapping(cluster.urls, name, stream, topic, ordering))
    bridge = BridgeProcess(work / f"{tag}.yaml", work / f"{tag}.log", args=("--http", "127.0.0.1:0"))
    nc = await nats.connect(cluster.urls, error_cb=_quiet)
    stop, sent = asyncio.Event(), [0]
    try:
        bridge.start()
        base = await bridge.http_url()
        producer = asyncio.create_task(
            produce_at_rate(os.environ["KAFKA_BOOTSTRAP"], topic, rate, PARTITIONS, stop, sent)
        )
        await asyncio.sleep(3)
        stopped_leader = await stop_leaders(cluster, nc, name, stream, how, rounds)
        stop.set()
        await producer
        await wait_for_count(nc, stream, sent[0], 180)
        records = await stored_records(nc, stream)
        late, doubled, distinct = out_of_order(records)
        return {
            "mode": f"{ordering} + {how}",
            "rounds": stopped_leader,
            "produced": sent[0],
            "stored_distinct": distinct,
            "lost": sent[0] - distinct,
            "doubled": doubled,
            "out_of_order": late,
            "reported_by_bridge": reported(base),
        }
    finally:
        stop.set()
        if bridge.alive():
            bridge.terminate(timeout=60)
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(stream)
        await nc.close()
        with contextlib.suppress(Exception):
            await admin.delete_topics([topic])
        await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--modes", default="all", help="comma-separated indexes into MODES (0-4) or all")
    args = parser.parse_args()
    os.environ.setdefault("KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    modes = MODES if args.modes == "all" else [MODES[int(i)] for i in args.modes.split(",")]
    results = []
    # The lock the tests take before they stop nodes: nobody else's test loses quorum under us.
    with cluster_lock(start_cluster()), tempfile.TemporaryDirectory() as work:
        # Restart the cluster so every node runs with the current config (a short lame duck duration).
        brokers_local.brokers("stop", "nats-cluster")
        brokers_local.brokers("start", "nats-cluster")
        cluster = Cluster()
        await wait_for_jetstream(cluster.urls)
        for ordering, how in modes:
            print(f"{ordering} + {how}: {args.rounds} rounds at {args.rate} records/s", flush=True)
            results.append(await run_mode(cluster, ordering, how, args.rounds, args.rate, Path(work)))
    print()
    print(f"{'mode':20} {'rounds':>6} {'produced':>9} {'lost':>5} {'doubled':>7} {'out of order':>12} {'reported':>8}")
    for r in results:
        print(
            f"{r['mode']:20} {r['rounds']:>6} {r['produced']:>9} {r['lost']:>5} {r['doubled']:>7} "
            f"{r['out_of_order']:>12} {r['reported_by_bridge']:>8}"
        )
    print(f"\ncommand: {shlex.join([sys.executable, *sys.argv])}")


if __name__ == "__main__":
    asyncio.run(main())
