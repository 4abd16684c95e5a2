"""NATS failover: SIGKILL the cluster node the bridge is connected to, mid-flow; nothing is lost.

Issue 5, deliverable 3. Runs a real `nats-bridge run` against the local 3-node NATS cluster
(`compose/brokers start nats-cluster`, started here on demand) with an R3 stream and a Kafka topic
full of records. Mid-flow the test finds, through each node's /connz, which node the bridge's
connection (its unique `nats.name`) is on, and SIGKILLs exactly that node — once while that node
leads the stream (the stream must elect a new leader while the bridge reconnects) and once while it
is a follower (the leader survives, but every publish in flight through the dead node is lost).

What must hold, on what the brokers finally say rather than on the bridge's own counters:
- the bridge reconnects by itself: its log says so and a surviving node's /connz lists it;
- the stream holds every record exactly once: N messages, each (partition, offset) once, each
  with its `<topic>/<partition>/<offset>` Nats-Msg-Id;
- each partition is stored in offset order;
- the bridge's consumer group has committed every partition to its end.

The killed node is restarted afterwards, on failure too, so later tests find a healthy cluster. An
inter-process lock keeps two test sessions from killing nodes under each other. The cluster comes
from compose/brokers only (a node must be SIGKILLed, so it has to be ours): if it cannot be
started the test fails, it is never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import tempfile
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import brokers_local
import nats
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka_helpers import BridgeProcess, fill_topic
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js import api as js_api

pytestmark = [pytest.mark.kafka, pytest.mark.nats]

TopicFactory = Callable[..., Awaitable[str]]
BridgeFactory = Callable[[Path], BridgeProcess]

PARTITIONS = 6
TOTAL = 42_000  # 7,000 a partition
KILL_AT = 8_000  # stored messages before the kill: well into the flow, far from its end
LOCK_TIMEOUT = 300.0  # seconds to wait for another session's failover test to finish

T = TypeVar("T")


@dataclass(frozen=True)
class Cluster:
    """The local 3-node cluster: node i (0-based) is compose/brokers' `nats-cluster-n{i+1}`."""

    urls: tuple[str, ...]  # client URLs, node by node
    monitors: tuple[str, ...]  # monitoring base URLs, node by node

    def broker_name(self, node: int) -> str:
        return f"nats-cluster-n{node + 1}"

    def server_name(self, node: int) -> str:
        """The node's server_name, as stream info reports leaders and replicas."""
        return str(http_json(f"{self.monitors[node]}/varz")["server_name"])


def http_json(url: str, timeout: float = 2.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


def start_cluster() -> str:
    """`compose/brokers start nats-cluster`: starts whichever nodes are down, waits for all three."""
    try:
        return brokers_local.brokers("start", "nats-cluster")
    except brokers_local.BrokersError as error:
        pytest.fail(f"could not start the local 3-node NATS cluster:\n{error}", pytrace=False)


@pytest.fixture(scope="module")
def nats_cluster() -> Iterator[Cluster]:
    """The cluster, started through compose/brokers when it is not running (never skipped).

    Like the other local brokers it is left running for the next run, unless
    BRIDGE_TEST_STOP_BROKERS=1 (compose/test under CI=true stops it at exit either way).
    """
    output = start_cluster()
    env = brokers_local.broker_env()
    yield Cluster(
        urls=tuple(env["NATS_CLUSTER_URLS"].split(",")),
        monitors=tuple(env["NATS_CLUSTER_MONITOR_URLS"].split(",")),
    )
    if "started in" in output and os.environ.get("BRIDGE_TEST_STOP_BROKERS") == "1":
        brokers_local.brokers("stop", "nats-cluster")


@pytest.fixture
def failover_cluster(nats_cluster: Cluster) -> Iterator[Cluster]:
    """The cluster for one test that kills a node: held exclusively (another pytest session
    running this test at the same time would kill a second node and take the quorum away), and
    whole again afterwards, whatever happened in the test."""
    port = urllib.parse.urlsplit(nats_cluster.urls[0]).port
    lock_path = Path(tempfile.gettempdir()) / f"nats-bridge-failover-{port}.lock"
    with lock_path.open("w") as lock:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another test session held {lock_path} for {LOCK_TIMEOUT:g}s", pytrace=False)
                time.sleep(0.5)
        try:
            start_cluster()  # a node a crashed earlier session left dead comes back first
            yield nats_cluster
        finally:
            start_cluster()
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_cluster_mapping(
    path: Path, *, cluster: Cluster, name: str, bootstrap: str, stream: str, topic: str, group: str
) -> Path:
    """A mapping that lists all three nodes and declares the stream with three replicas."""
    subject = stream.lower()
    servers = ", ".join(f'"{url}"' for url in cluster.urls)
    path.write_text(
        textwrap.dedent(f"""\
            version: 1
            nats:
              servers: [{servers}]
              name: "{name}"
            streams:
              - name: {stream}
                subjects: ["{subject}.>"]
                replicas: 3
                duplicate_window: 2m
            sources:
              kafka:
                type: kafka
                bootstrap_servers: ["{bootstrap}"]
            services:
              svc:
                routes:
                  - name: copy
                    source: kafka
                    from: {{topics: ["{topic}"], group: "{group}"}}
                    to: "{subject}.{{partition}}"
            """)
    )
    return path


@contextlib.asynccontextmanager
async def cluster_client(cluster: Cluster, name: str) -> AsyncIterator[NatsClient]:
    """The test's own connection: it must outlive the kill too, so it reconnects forever."""

    async def quiet(_error: Exception) -> None:
        """Reconnect attempts to the dead node are expected; nats-py would log each one."""

    client = await nats.connect(
        servers=list(cluster.urls),
        name=f"pytest-{name}",
        connect_timeout=5,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=quiet,
    )
    try:
        yield client
    finally:
        await client.close()


async def until(
    probe: Callable[[], Awaitable[T | None]],
    what: str,
    timeout: float,
    bridge: BridgeProcess | None = None,
    *,
    interval: float = 0.1,
) -> T:
    """Poll `probe` until it returns something other than None; fail after `timeout` seconds.

    NATS errors and timeouts count as "not yet": JetStream's API answers nothing useful while a
    node is dead and a stream or the meta group elects a new leader.
    """
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            value = await probe()
        except (nats.errors.Error, TimeoutError, OSError) as error:
            value, last_error = None, f" (last error: {type(error).__name__}: {error})"
        if value is not None:
            return value
        if bridge is not None and not bridge.alive():
            raise AssertionError(f"bridge exited while waiting for {what}:\n{bridge.log()}")
        if time.monotonic() > deadline:
            tail = f"\n{bridge.log()}" if bridge is not None else ""
            raise AssertionError(f"no {what} within {timeout:g}s{last_error}{tail}")
        await asyncio.sleep(interval)


def connection_nodes(cluster: Cluster, name: str) -> list[int]:
    """The nodes whose /connz lists a client connection called `name` (dead nodes list nothing)."""
    nodes = []
    for node, monitor in enumerate(cluster.monitors):
        try:
            connz = http_json(f"{monitor}/connz?limit=1024")
        except (OSError, urllib.error.URLError, ValueError):
            continue
        if any(conn.get("name") == name for conn in connz.get("connections") or ()):
            nodes.append(node)
    return nodes


async def connected_node(cluster: Cluster, name: str, bridge: BridgeProcess, *, timeout: float) -> int:
    """The one node the bridge's connection is on, once exactly one node lists it."""

    async def probe() -> int | None:
        nodes = await asyncio.to_thread(connection_nodes, cluster, name)
        return nodes[0] if len(nodes) == 1 else None

    return await until(probe, f"single node listing connection {name!r} in /connz", timeout, bridge)


async def led_stream_info(js: JetStreamContext, stream: str) -> js_api.StreamInfo | None:
    """The stream's info once it exists and has a leader (a new R3 stream elects one first)."""
    info = await js.stream_info(stream)
    return info if info.cluster is not None and info.cluster.leader else None


async def move_leader(js: JetStreamContext, nc: NatsClient, stream: str, server: str, bridge: BridgeProcess) -> None:
    """Make `server` the stream's leader (a stepdown naming it as preferred), and wait until it is."""

    async def probe() -> bool | None:
        info = await js.stream_info(stream)
        leader = info.cluster.leader if info.cluster else None
        if leader == server:
            return True
        if leader:  # not mid-election: ask again
            await nc.request(
                f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}",
                json.dumps({"placement": {"preferred": server}}).encode(),
                timeout=5,
            )
            await asyncio.sleep(0.5)
        return None

    await until(probe, f"stream {stream} led by {server}", 60, bridge)


async def stream_count(js: JetStreamContext, stream: str) -> int:
    return (await js.stream_info(stream)).state.messages


async def wait_for_count(
    js: JetStreamContext, stream: str, at_least: int, bridge: BridgeProcess, *, timeout: float
) -> int:
    async def probe() -> int | None:
        count = await stream_count(js, stream)
        return count if count >= at_least else None

    return await until(probe, f"{at_least} messages in stream {stream}", timeout, bridge)


async def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    """The group's committed offsets, asked without joining the group (no rebalance)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class Stored:
    partition: int
    offset: int
    msg_id: str


async def read_stream(js: JetStreamContext, stream: str) -> list[Stored]:
    """Every stored message's Kafka-Partition, Kafka-Offset and Nats-Msg-Id, in stream order."""
    total = (await js.stream_info(stream)).state.messages
    config = js_api.ConsumerConfig(ack_policy=js_api.AckPolicy.NONE, headers_only=True)
    subscription = await js.pull_subscribe("", stream=stream, config=config)
    found: list[Stored] = []
    try:
        while len(found) < total:
            for message in await subscription.fetch(min(total - len(found), 2000), timeout=20):
                headers = message.headers or {}
                found.append(
                    Stored(int(headers["Kafka-Partition"]), int(headers["Kafka-Offset"]), headers["Nats-Msg-Id"])
                )
    finally:
        await subscription.unsubscribe()
    return found


def assert_each_record_once_in_order(stored: list[Stored], topic: str, per_partition: dict[int, int]) -> None:
    """Exactly one message per (partition, offset) with its offset Msg-Id; offsets rise per partition."""
    assert len(stored) == sum(per_partition.values()), f"{len(stored)} stored, {sum(per_partition.values())} produced"
    by_partition: dict[int, list[int]] = {}
    for message in stored:
        assert message.msg_id == f"svc/copy/{topic}/{message.partition}/{message.offset}", message
        by_partition.setdefault(message.partition, []).append(message.offset)
    assert sorted(by_partition) == sorted(per_partition)
    for partition, offsets in by_partition.items():
        count = per_partition[partition]
        assert sorted(set(offsets)) == list(range(count)), f"partition {partition}: not every offset exactly once"
        assert offsets == list(range(count)), f"partition {partition}: stored out of offset order"


@pytest.mark.timeout(420)
@pytest.mark.parametrize("killed_role", ["stream-leader", "stream-follower"])
async def test_sigkill_of_the_node_the_bridge_is_connected_to_loses_nothing(
    killed_role: str,
    tmp_path: Path,
    failover_cluster: Cluster,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    unique_name: str,
    bridge_process: BridgeFactory,
) -> None:
    cluster = failover_cluster
    topic = await kafka_topic(partitions=PARTITIONS)
    per_partition = dict.fromkeys(range(PARTITIONS), TOTAL // PARTITIONS)
    stream = unique_name.upper()
    connection = f"nats-bridge-{unique_name}"  # how the nodes' /connz name the bridge's connection
    group = f"bridge-{unique_name}"
    mapping = write_cluster_mapping(
        tmp_path / "m.yaml",
        cluster=cluster,
        name=connection,
        bootstrap=kafka_bootstrap,
        stream=stream,
        topic=topic,
        group=group,
    )
    killed: int | None = None
    filling: asyncio.Task[None] | None = None
    async with cluster_client(cluster, unique_name) as nc:
        js = nc.jetstream(timeout=10)
        bridge = bridge_process(mapping)
        try:
            # Set the scene before any record exists, so the kill cannot race the flow's end:
            # the bridge connected, its stream (declared R3 by the bridge) led by the chosen node,
            # its partitions assigned. Only then are the records produced.
            bridge.start()
            node = await connected_node(cluster, connection, bridge, timeout=60)
            info = await until(lambda: led_stream_info(js, stream), f"stream {stream} with a leader", 60, bridge)
            assert info.config.num_replicas == 3
            assert info.cluster is not None
            assert len(info.cluster.replicas or ()) == 2, info.cluster
            names = [await asyncio.to_thread(cluster.server_name, i) for i in range(3)]
            leader = node if killed_role == "stream-leader" else (node + 1) % 3
            await move_leader(js, nc, stream, names[leader], bridge)
            await bridge.wait_for_log(f"): assigned {topic}/", timeout=60)
            filling = asyncio.create_task(fill_topic(kafka_bootstrap, topic, TOTAL, PARTITIONS))

            stored_before = await wait_for_count(js, stream, KILL_AT, bridge, timeout=180)
            assert await connected_node(cluster, connection, bridge, timeout=10) == node
            at_kill = await until(lambda: led_stream_info(js, stream), f"stream {stream} with a leader", 30, bridge)
            assert at_kill.cluster is not None
            assert at_kill.cluster.leader == names[leader], f"the killed node must be the stream's {killed_role}"
            await asyncio.to_thread(brokers_local.brokers, "kill", cluster.broker_name(node))
            killed = node
            assert stored_before < TOTAL, "the bridge was done before the kill: raise TOTAL"

            # The bridge reconnects by itself, to a surviving node.
            await bridge.wait_for_log("reconnected to NATS at", timeout=120)
            survivor = await connected_node(cluster, connection, bridge, timeout=60)
            assert survivor != node
            log = bridge.log_path.read_text(errors="replace")
            assert "disconnected from NATS; reconnecting" in log
            last_reconnect = log[log.rindex("reconnected to NATS at") :].splitlines()[0]
            assert last_reconnect.endswith(cluster.urls[survivor]), last_reconnect

            # Every record arrives, and the group commits every partition to its end.
            await asyncio.wait_for(filling, 120)
            await wait_for_count(js, stream, TOTAL, bridge, timeout=240)

            async def all_committed() -> bool | None:
                return await committed(kafka_bootstrap, group, topic, PARTITIONS) == per_partition or None

            await until(all_committed, "commits at the end of every partition", 120, bridge, interval=0.5)
            assert bridge.terminate() == 0, bridge.log()
            log = bridge.log_path.read_text(errors="replace")
            assert "Traceback" not in log, bridge.log()

            # Read back through JetStream's API, which waits out the meta group's own election when
            # the killed node led it (creating the reading consumer needs a meta leader).
            final = await until(lambda: led_stream_info(js, stream), f"stream {stream} with a leader", 60)
            assert final.state.messages == TOTAL
            if killed_role == "stream-leader":
                assert final.cluster is not None
                assert final.cluster.leader != names[node]
            stored = await until(lambda: read_stream(js, stream), f"stream {stream} read back", 120)
            assert_each_record_once_in_order(stored, topic, per_partition)
        finally:
            if filling is not None and not filling.done():
                filling.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await filling
            if bridge.alive():
                bridge.kill()
            if killed is not None:
                # Before deleting the stream, so all three replicas go; the fixture's teardown
                # restarts the node too and fails the test loudly if it cannot.
                with contextlib.suppress(brokers_local.BrokersError):
                    await asyncio.to_thread(brokers_local.brokers, "start", "nats-cluster")
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await js.delete_stream(stream)
