"""The brokers a fault schedule runs on, and the broker faults it inflicts.

Fault schedules restart Kafka and RabbitMQ, so they never touch the shared test brokers (other
tests, and other people's sessions on the same machine, use those): compose/brokers runs
instances of their own, each in a state directory of its own, on ports of their own. No change to
compose/brokers is needed for that: `BRIDGE_STATE_DIR` and the port variables move everything,
and the Kafka jars are linked from the main state directory (compose/install fetches them once).

- kafka-a: Kafka, the main cluster, 127.0.0.1:19192 (controller 19193), state .state/chaos-a/
- kafka-b: Kafka, the second cluster (topology b), 127.0.0.1:19292 (controller 19293), .state/chaos-b/
- rabbitmq: RabbitMQ node chaos@localhost, AMQP 127.0.0.1:15683 (management 15690, stream protocol
  15562, Erlang distribution 35683, its own epmd 14379), .state/chaos-a/

NATS: the shared single server (streams on it get only full-stream faults, which touch nothing
but the schedule's own streams), and the shared 3-node `nats-cluster` of compose/brokers for
streams whose faults include losing a node. While a schedule uses the cluster it holds the lock
tests/integration/test_nats_failover.py holds, so the two never kill nodes under each other.

Like compose/brokers' own brokers these stay running after a run, for the next one; `stop_private`
stops them (bench/chaos.py --stop-brokers, and the CI test when CI=true or
BRIDGE_TEST_STOP_BROKERS=1).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import brokers_local
import nats
from nats.errors import Error as NatsError

ROOT = Path(__file__).resolve().parents[2]
BROKERS_SCRIPT = ROOT / "compose" / "brokers"
MAIN_STATE = Path(os.environ.get("BRIDGE_STATE_DIR") or ROOT / "compose" / ".state")
HOST = "127.0.0.1"
CLUSTER_LOCK_TIMEOUT = 300.0  # seconds to wait for another session's failover test or schedule


class BrokerError(RuntimeError):
    """A broker could not be started, stopped or restarted."""


@dataclass(frozen=True)
class PrivateBroker:
    """One broker of compose/brokers run under settings of the chaos suite's own."""

    name: str  # kafka-a | kafka-b | rabbitmq
    kind: str  # compose/brokers' name for it: kafka | rabbitmq
    state: Path
    settings: Mapping[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """Kafka: its bootstrap address; RabbitMQ: its AMQP URL (guest, the default vhost)."""
        if self.kind == "kafka":
            return f"{HOST}:{self.settings['BRIDGE_KAFKA_PORT']}"
        return f"amqp://guest:guest@{HOST}:{self.settings['BRIDGE_AMQP_PORT']}/"

    @property
    def api_url(self) -> str:
        """RabbitMQ's management API (the suite makes a vhost per schedule through it)."""
        return f"http://{HOST}:{self.settings['BRIDGE_RABBITMQ_MGMT_PORT']}/api"

    def run(self, *args: str, timeout: float = 300.0) -> str:
        """`compose/brokers ARGS...` for this instance; its output, or BrokerError."""
        env = {**os.environ, "BRIDGE_STATE_DIR": str(self.state), **self.settings}
        try:
            proc = subprocess.run(
                [str(BROKERS_SCRIPT), *args],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"{self.name}: compose/brokers {' '.join(args)} took over {timeout:g}s") from exc
        if proc.returncode != 0:
            raise BrokerError(
                f"{self.name}: compose/brokers {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
            )
        return proc.stdout + proc.stderr

    def start(self) -> str:
        if self.kind == "kafka":
            self.link_kafka_jars()
        return self.run("start", self.kind)

    def link_kafka_jars(self) -> None:
        jars = MAIN_STATE / "kafka" / "libs"
        if not any(jars.glob("kafka_2.13-*.jar")):
            raise BrokerError(f"{self.name}: no Kafka jars in {jars}: run `bash compose/install`")
        link = self.state / "kafka" / "libs"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink() or link.resolve() != jars.resolve():
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            link.symlink_to(jars, target_is_directory=True)

    def stop(self) -> str:
        return self.run("stop", self.kind)

    def kill(self) -> str:
        return self.run("kill", self.kind)

    def log_path(self) -> str:
        return self.run("logs", self.kind).strip()


KAFKA_A = PrivateBroker(
    "kafka-a",
    "kafka",
    MAIN_STATE / "chaos-a",
    {"BRIDGE_KAFKA_PORT": "19192", "BRIDGE_KAFKA_CONTROLLER_PORT": "19193", "BRIDGE_KAFKA_HEAP": "256m"},
)
KAFKA_B = PrivateBroker(
    "kafka-b",
    "kafka",
    MAIN_STATE / "chaos-b",
    {"BRIDGE_KAFKA_PORT": "19292", "BRIDGE_KAFKA_CONTROLLER_PORT": "19293", "BRIDGE_KAFKA_HEAP": "256m"},
)
RABBITMQ = PrivateBroker(
    "rabbitmq",
    "rabbitmq",
    MAIN_STATE / "chaos-a",
    {
        "BRIDGE_AMQP_PORT": "15683",
        "BRIDGE_RABBITMQ_MGMT_PORT": "15690",
        "BRIDGE_RABBITMQ_STREAM_PORT": "15562",  # its rabbitmq_stream listener, beside the main node's 15552
        "BRIDGE_RABBITMQ_DIST_PORT": "35683",
        "BRIDGE_RABBITMQ_EPMD_PORT": "14379",
        "BRIDGE_RABBITMQ_NODENAME": "chaos@localhost",
    },
)
PRIVATE = {broker.name: broker for broker in (KAFKA_A, KAFKA_B, RABBITMQ)}


def start_private(names: list[str] | None = None) -> None:
    """Start the named private brokers (all by default) side by side; BrokerError names each that failed."""
    wanted = [PRIVATE[name] for name in names or PRIVATE]
    with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
        futures = {broker.name: pool.submit(broker.start) for broker in wanted}
    errors = []
    for name, future in futures.items():
        error = future.exception()
        if error is not None:
            errors.append(f"{name}: {error}")
    if errors:
        raise BrokerError("could not start the chaos suite's brokers:\n" + "\n".join(errors))


def stop_private() -> None:
    for broker in PRIVATE.values():
        with contextlib.suppress(BrokerError):
            broker.stop()


async def restart_private(broker: PrivateBroker, *, graceful: bool, down_for: float) -> str:
    """Stop (graceful) or SIGKILL the broker, leave it down `down_for` seconds, start it again."""
    await asyncio.to_thread(broker.stop if graceful else broker.kill)
    await asyncio.sleep(down_for)
    return await asyncio.to_thread(broker.start)


def shared_nats_url() -> str:
    """The single NATS server outside pytest (whose fixture does the same): NATS_URL, or
    compose/brokers' own, started when it is down."""
    if os.environ.get("NATS_URL"):
        return os.environ["NATS_URL"]
    try:
        brokers_local.brokers("start", "nats")
    except brokers_local.BrokersError as error:
        raise BrokerError(f"could not start the local NATS server:\n{error}") from error
    return brokers_local.broker_env()["NATS_URL"]


# --------------------------------------------------------------------------- the NATS cluster


@dataclass(frozen=True)
class NatsCluster:
    """compose/brokers' 3-node cluster: node i (0-based) is `nats-cluster-n{i+1}`."""

    urls: tuple[str, ...]
    monitors: tuple[str, ...]

    def node_name(self, node: int) -> str:
        return f"nats-cluster-n{node + 1}"


def start_cluster() -> NatsCluster:
    """Start whichever nodes are down (compose/brokers waits for all three); BrokerError if it can't."""
    try:
        brokers_local.brokers("start", "nats-cluster")
    except brokers_local.BrokersError as error:
        raise BrokerError(f"could not start the local 3-node NATS cluster:\n{error}") from error
    env = brokers_local.broker_env()
    return NatsCluster(tuple(env["NATS_CLUSTER_URLS"].split(",")), tuple(env["NATS_CLUSTER_MONITOR_URLS"].split(",")))


async def wait_for_jetstream(urls: list[str], within: float = 60) -> None:
    """A cluster just started elects its meta leader first: wait until an R3 stream can be made."""
    nc = await nats.connect(urls, error_cb=_ignore)
    js = nc.jetstream(timeout=5)
    deadline = time.monotonic() + within
    probe = f"PROBE_{os.getpid()}"
    try:
        while True:
            try:
                await js.add_stream(name=probe, subjects=[f"probe.{os.getpid()}"], num_replicas=3)
            except (NatsError, TimeoutError) as error:
                if time.monotonic() > deadline:
                    raise BrokerError(f"the cluster's JetStream did not answer within {within:g}s: {error}") from None
                await asyncio.sleep(1)
            else:
                await js.delete_stream(probe)
                return
    finally:
        await nc.close()


async def _ignore(_error: Exception) -> None:
    """Connection errors while the cluster starts are the expected part of waiting for it."""


@contextlib.contextmanager
def cluster_lock(cluster: NatsCluster, timeout: float = CLUSTER_LOCK_TIMEOUT) -> Iterator[None]:
    """The cluster held exclusively: the lock file test_nats_failover.py's failover_cluster takes
    (one node down is survivable, two are not). The cluster is whole again when it is released."""
    port = urllib.parse.urlsplit(cluster.urls[0]).port
    lock_path = Path(tempfile.gettempdir()) / f"nats-bridge-failover-{port}.lock"
    with lock_path.open("w") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BrokerError(f"another session held {lock_path} for {timeout:g}s") from None
                time.sleep(0.5)
        try:
            start_cluster()
            yield
        finally:
            with contextlib.suppress(BrokerError):
                start_cluster()
            fcntl.flock(lock, fcntl.LOCK_UN)


async def restart_cluster_node(cluster: NatsCluster, node: int, *, graceful: bool, down_for: float) -> str:
    name = cluster.node_name(node)
    await asyncio.to_thread(brokers_local.brokers, "stop" if graceful else "kill", name)
    await asyncio.sleep(down_for)
    return await asyncio.to_thread(brokers_local.brokers, "start", name)


# --------------------------------------------------------------------------- RabbitMQ vhosts


def rabbit_api(method: str, path: str, body: dict[str, Any] | None = None, *, broker: PrivateBroker = RABBITMQ) -> None:
    """One call to the private RabbitMQ's management API, as guest."""
    request = urllib.request.Request(
        broker.api_url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "content-type": "application/json",
            "authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def create_vhost(vhost: str) -> str:
    """A fresh vhost for one schedule; its AMQP URL."""
    quoted = urllib.parse.quote(vhost, safe="")
    rabbit_api("PUT", f"/vhosts/{quoted}")
    rabbit_api("PUT", f"/permissions/{quoted}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    return RABBITMQ.address.rstrip("/") + "/" + quoted


def delete_vhost(vhost: str) -> None:
    with contextlib.suppress(OSError, urllib.error.URLError):
        rabbit_api("DELETE", f"/vhosts/{urllib.parse.quote(vhost, safe='')}")


@dataclass(frozen=True)
class Brokers:
    """Where one schedule's brokers are."""

    nats_url: str  # the shared single NATS server
    cluster: NatsCluster | None  # the 3-node cluster, when a topology of the schedule runs on it
