"""The fault injector: bridge processes killed and stopped, brokers restarted, streams filled.

- bridge-kill (target: a topology; instance by seed): SIGKILL one `nats-bridge run` process,
  restart it after `duration` s;
- bridge-term: the same with SIGTERM (it must exit 0 within 60 s);
- broker-restart (kafka-a, kafka-b, rabbitmq): `compose/brokers kill` (variant kill) or `stop`
  (graceful), down `duration` s, then `start`;
- nats-node-restart (a node of the NATS cluster): the same for `nats-cluster-nI`;
- stream-full (a topology's stream): `max_msgs` (or `max_bytes`) set to what the stream holds, with
  `discard: new`, for `duration` s; then its configuration is put back;
- nats-leader-stop (a topology on the cluster): the node leading its stream is stopped — SIGTERM
  (variant term) or lame duck mode, SIGUSR2 (variant ldm) — then started after `duration` s;
- nats-rolling-ldm: every node in turn in lame duck mode, started again and current before the next;
- nats-node-freeze (a node): SIGSTOP for `duration` s, then SIGCONT (a hung server);
- nats-quorum-loss (two nodes, e.g. "12"): both SIGKILLed, down `duration` s, then started;
- nats-store-rollback (a topology on the schedule's private nats-server): at `at` the server is
  stopped (SIGTERM, waited for), its store copied, and started again; `duration` s later it is
  SIGKILLed (variant kill: a power loss) or stopped (graceful), the store replaced by the copy, and
  started: JetStream has forgotten every message it acknowledged since the copy, checkpoints too.
  The bridges must notice (their log: "JetStream lost acknowledged messages") and copy the lost
  records again from Kafka, marked `Bridge-Recopied`.

Bridges that exit on their own are restarted by the fleet (as a supervisor would) and reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import brokers_local
import nats
from kafka_helpers import BridgeProcess
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js import api as js_api
from private_nats import PrivateNatsServer

from .brokers import PRIVATE, BrokerError, NatsCluster, restart_cluster_node, restart_private

STATE = Path(os.environ.get("BRIDGE_STATE_DIR", Path(__file__).resolve().parents[2] / "compose" / ".state"))

T = TypeVar("T")
TERM_TIMEOUT = 60.0  # seconds a SIGTERMed bridge may take to exit before it is killed
SLOW_TERM = 15.0  # an exit slower than this is reported (README: up to 10 s of draining, then exit 0)
LOST_WRITES = "JetStream lost acknowledged messages"  # what a bridge logs (ERROR) when it finds them gone


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the traffic started
    kind: str  # bridge-kill | bridge-term | broker-restart | nats-node-restart | stream-full | nats-leader-stop | ...
    target: str  # topology letter | private broker name | cluster node index (0-2)
    duration: float  # seconds down (bridges, brokers, nodes) or full (streams)
    # bridge: instance index; broker, node, store rollback: kill | graceful; stream-full: max_msgs | max_bytes
    variant: str = ""

    def describe(self) -> str:
        if self.kind in ("bridge-kill", "bridge-term"):
            how = "SIGKILL" if self.kind == "bridge-kill" else "SIGTERM"
            what = f"{how} bridge {self.target}#{self.variant}, restart after {self.duration:.1f}s"
        elif self.kind == "broker-restart":
            what = f"{self.variant} {self.target}, down {self.duration:.1f}s, start"
        elif self.kind == "nats-node-restart":
            what = f"{self.variant} nats-cluster-n{int(self.target) + 1}, down {self.duration:.1f}s, start"
        elif self.kind == "nats-leader-stop":
            what = f"{self.variant} the node leading {self.target}'s stream, start after {self.duration:.1f}s"
        elif self.kind == "nats-rolling-ldm":
            what = f"lame duck restart of every cluster node in turn, {self.duration:.1f}s apart"
        elif self.kind == "nats-node-freeze":
            what = f"SIGSTOP nats-cluster-n{int(self.target) + 1} for {self.duration:.1f}s"
        elif self.kind == "nats-quorum-loss":
            nodes = " and ".join(f"nats-cluster-n{int(c) + 1}" for c in self.target)
            what = f"SIGKILL {nodes} (no quorum), down {self.duration:.1f}s, start"
        elif self.kind == "nats-store-rollback":
            how = "SIGKILL" if self.variant == "kill" else "SIGTERM"
            what = (
                f"copy the NATS store of {self.target} (private server: SIGTERM, copy, start); "
                f"{self.duration:.1f}s later {how} it, restore the copy, start"
            )
        else:
            what = f"stream of {self.target} full ({self.variant}, discard new) for {self.duration:.1f}s"
        return f"t+{self.at:5.1f}s {what}"


@dataclass
class Injected:
    fault: Fault
    started: float = 0.0  # seconds after the traffic started
    finished: float = 0.0
    outcome: str = "not run"
    lost: int | None = None  # nats-store-rollback: stream messages the restore took away (measured)

    def describe(self) -> str:
        return f"{self.fault.describe()} -> {self.outcome} (t+{self.started:.1f}s..t+{self.finished:.1f}s)"


@dataclass
class BridgeFleet:
    """The `nats-bridge run` processes of one topology, each on its own free HTTP port."""

    letter: str
    mapping: Path
    instances: int
    logdir: Path
    env: dict[str, str] = field(default_factory=dict)  # e.g. PYTHONPATH to run another checkout's bridge
    processes: list[BridgeProcess] = field(default_factory=list)
    down_on_purpose: set[int] = field(default_factory=set)
    findings: list[str] = field(default_factory=list)
    rolled_back: bool = False  # a nats-store-rollback hits this topology: exits over lost writes are expected
    expected: list[str] = field(default_factory=list)  # what the faults explain (not findings)

    def __post_init__(self) -> None:
        self.processes = [
            BridgeProcess(
                self.mapping, self.logdir / f"bridge-{self.letter}{i}.log", args=("--http", "127.0.0.1:0"), env=self.env
            )
            for i in range(self.instances)
        ]

    def name(self, index: int) -> str:
        return f"{self.letter}#{index}"

    def start_all(self) -> None:
        for process in self.processes:
            process.start()

    def alive(self, index: int) -> bool:
        return self.processes[index].alive()

    def pick(self, preferred: int) -> int | None:
        """The instance a fault hits: `preferred` if it is up, else the next one up."""
        for step in range(self.instances):
            index = (preferred + step) % self.instances
            if index not in self.down_on_purpose and self.alive(index):
                return index
        return None

    async def kill(self, index: int) -> str:
        self.down_on_purpose.add(index)
        process = self.processes[index]
        pid = process.process.pid if process.process else "?"
        await asyncio.to_thread(process.kill)
        return f"killed pid {pid}"

    async def term(self, index: int) -> str:
        self.down_on_purpose.add(index)
        process = self.processes[index]
        started = time.monotonic()
        try:
            code = await asyncio.to_thread(process.terminate, TERM_TIMEOUT)
        except subprocess.TimeoutExpired:
            await asyncio.to_thread(process.kill)
            self.findings.append(f"bridge {self.name(index)} did not exit within {TERM_TIMEOUT:g}s of SIGTERM")
            return "no exit after SIGTERM: killed"
        took = time.monotonic() - started
        if code != 0:
            self.findings.append(f"bridge {self.name(index)} exited {code} on SIGTERM:\n{_tail(process)}")
        elif took > SLOW_TERM:
            self.findings.append(
                f"bridge {self.name(index)} took {took:.1f}s to exit after SIGTERM (README: it waits up to 10 s "
                f"for in-flight PubAcks); its last lines:\n{_tail(process, 6)}"
            )
        return f"exit {code} after {took:.1f}s"

    def restart(self, index: int) -> None:
        self.processes[index].start()
        self.down_on_purpose.discard(index)

    async def supervise(self, stop: asyncio.Event) -> None:
        """Restart instances that died on their own (and report them), until `stop`; like a
        supervisor, with a back-off (2 s doubling to 16 s) for one that keeps dying."""
        crashes = [0] * self.instances
        started = [time.monotonic()] * self.instances
        restart_at: dict[int, float] = {}  # instance -> when to start it again
        while not stop.is_set():
            now = time.monotonic()
            for index, process in enumerate(self.processes):
                if index in self.down_on_purpose or process.process is None:
                    continue
                if process.alive():
                    if now - started[index] > 30:
                        crashes[index] = 0  # up for a while: the next crash starts the back-off afresh
                    continue
                if index not in restart_at:
                    code = process.process.returncode
                    if self.rolled_back and code == 1 and LOST_WRITES in _latest_run(process):
                        self.expected.append(
                            f"bridge {self.name(index)} exited 1 after its NATS store was rolled back "
                            f"({LOST_WRITES}); restarted"
                        )
                    else:
                        self.findings.append(
                            f"bridge {self.name(index)} exited by itself with code {code}:\n{_tail(process)}"
                        )
                    crashes[index] += 1
                    restart_at[index] = now + min(2.0 ** crashes[index], 16.0)
                elif now >= restart_at[index]:
                    del restart_at[index]
                    process.start()
                    started[index] = now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    def ensure_running(self) -> None:
        for index, process in enumerate(self.processes):
            if not process.alive():
                process.start()
            self.down_on_purpose.discard(index)

    async def stop_all(self) -> None:
        """SIGTERM every instance at once; each must exit 0 (README: SIGTERM drains and exits 0)."""
        running = [index for index in range(self.instances) if self.alive(index)]
        await asyncio.gather(*(self.term(index) for index in running))

    def kill_all(self) -> None:
        for process in self.processes:
            if process.alive():
                process.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path}\n{p.log()}" for p in self.processes)

    def log_lines(self, text: str) -> list[str]:
        """Every line of every instance's whole log (all its runs) that contains `text`."""
        found = []
        for process in self.processes:
            if process.log_path.exists():
                log = process.log_path.read_text(errors="replace")
                found += [line for line in log.splitlines() if text in line]
        return found


def _latest_run(process: BridgeProcess) -> str:
    """What the process's latest run logged."""
    text: str = process.log_path.read_text(errors="replace") if process.log_path.exists() else ""
    start = text.rfind("bridge.runner: bridge running")
    if start > 0:
        text = text[text.rfind("\n", 0, start) + 1 :]
    return text


def _tail(process: BridgeProcess, lines: int = 8) -> str:
    """The last lines the process's latest run logged itself (aiokafka's connection noise left out)."""
    text = _latest_run(process)[-4000:]
    own = [line for line in text.splitlines() if "aiokafka" not in line and line.strip()]
    return "\n".join(f"      {line[:300]}" for line in own[-lines:])


class FaultInjector:
    """Runs a schedule's faults at their times, each in its own task; restarts of one broker never
    overlap (they queue). `injected` says what each fault did."""

    def __init__(
        self,
        faults: list[Fault],
        fleets: dict[str, BridgeFleet],
        streams: dict[str, tuple[JetStreamContext, str]],
        cluster: NatsCluster | None,
        private: PrivateNatsServer | None = None,
    ) -> None:
        self.injected = [Injected(fault) for fault in sorted(faults, key=lambda f: f.at)]
        self.fleets = fleets
        self.streams = streams
        self.cluster = cluster
        self.private = private  # the schedule's own nats-server (nats-store-rollback)
        self._locks: dict[str, asyncio.Lock] = {}
        self._t0 = 0.0

    async def run(self, t0: float) -> None:
        self._t0 = t0
        await asyncio.gather(*(self._one(injected) for injected in self.injected))

    def _now(self) -> float:
        return time.monotonic() - self._t0

    async def _one(self, injected: Injected) -> None:
        fault = injected.fault
        await asyncio.sleep(max(0.0, fault.at - self._now()))
        lock = self._locks.setdefault(f"{fault.kind}:{fault.target}", asyncio.Lock())
        async with lock:
            injected.started = self._now()
            try:
                if fault.kind == "nats-store-rollback":
                    injected.outcome = await self._rollback(injected)
                else:
                    injected.outcome = await self._inject(fault)
            except (BrokerError, NatsError, OSError, TimeoutError, RuntimeError) as error:
                injected.outcome = f"error: {type(error).__name__}: {str(error)[-400:]}"
            injected.finished = self._now()

    async def _inject(self, fault: Fault) -> str:
        if fault.kind in ("bridge-kill", "bridge-term"):
            fleet = self.fleets[fault.target]
            index = fleet.pick(int(fault.variant or 0))
            if index is None:
                return "skipped: no instance up"
            did = await (fleet.kill(index) if fault.kind == "bridge-kill" else fleet.term(index))
            await asyncio.sleep(fault.duration)
            fleet.restart(index)
            return f"instance {index}: {did}, restarted"
        if fault.kind == "broker-restart":
            output = await restart_private(
                PRIVATE[fault.target], graceful=fault.variant == "graceful", down_for=fault.duration
            )
            return output.strip().splitlines()[-1] if output.strip() else "restarted"
        if fault.kind == "nats-node-restart":
            assert self.cluster is not None
            output = await restart_cluster_node(
                self.cluster, int(fault.target), graceful=fault.variant == "graceful", down_for=fault.duration
            )
            return output.strip().splitlines()[-1] if output.strip() else "restarted"
        if fault.kind == "stream-full":
            js, stream = self.streams[fault.target]
            return await fill_stream(js, stream, limit=fault.variant, seconds=fault.duration)
        if fault.kind.startswith("nats-") and fault.kind != "nats-node-restart":
            assert self.cluster is not None
            return await self._cluster_fault(fault, self.cluster)
        raise ValueError(f"unknown fault kind {fault.kind}")

    async def _rollback(self, injected: Injected) -> str:
        """Copy the private server's store (stopped gracefully, so the copy holds everything it
        acknowledged), start it; `duration` s after the copy, kill or stop it, put the copy back,
        start it. Measures the topology's stream before the kill and right after the restore."""
        fault = injected.fault
        server = self.private
        assert server is not None, "nats-store-rollback needs the schedule's private nats-server"
        _, stream = self.streams[fault.target]
        store = server.store_dir / "js"
        backup = server.store_dir.parent / f"{server.store_dir.name}-copy-t{fault.at:.0f}"
        try:
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(shutil.copytree, store, backup)
        finally:
            await asyncio.to_thread(server.start)  # whatever failed, the bridges get their server back
        copied_at = self._now()
        copied = await stream_state(server.url, stream)
        await asyncio.sleep(max(0.0, copied_at + fault.duration - self._now()))
        before = await stream_state(server.url, stream)
        try:
            await asyncio.to_thread(server.stop, kill=fault.variant == "kill")
            await asyncio.to_thread(shutil.rmtree, store)
            await asyncio.to_thread(shutil.copytree, backup, store)
        finally:
            await asyncio.to_thread(server.start)
        after = await stream_state(server.url, stream)
        injected.lost = max(0, before[0] - after[0])
        how = "SIGKILL" if fault.variant == "kill" else "SIGTERM"
        text = (
            f"store copied at t+{copied_at:.1f}s ({stream}: {copied[0]} msgs, last seq {copied[1]} just after); "
            f"before the rollback {before[0]} msgs (last seq {before[1]}); {how}, copy restored, started; "
            f"right after the restore {after[0]} msgs (last seq {after[1]})"
        )
        if injected.lost == 0:
            return text + ": the rollback lost nothing"
        return text + f": {injected.lost} acknowledged messages lost"

    async def _cluster_fault(self, fault: Fault, cluster: NatsCluster) -> str:
        if fault.kind == "nats-leader-stop":
            js, stream = self.streams[fault.target]
            info = await _retry(lambda: js.stream_info(stream), time.monotonic() + 30)
            leader = info.cluster.leader if info.cluster else None
            node = next((i for i in range(3) if leader == f"bridge-test-n{i + 1}"), None)
            if node is None:
                return f"skipped: stream {stream} has no leader now ({leader})"
            await stop_node(cluster, node, lame_duck=fault.variant == "ldm")
            await asyncio.sleep(fault.duration)
            await asyncio.to_thread(brokers_local.brokers, "start", cluster.node_name(node))
            return f"{fault.variant} {cluster.node_name(node)} (leader of {stream}), started"
        if fault.kind == "nats-rolling-ldm":
            for node in range(3):
                await stop_node(cluster, node, lame_duck=True)
                await asyncio.to_thread(brokers_local.brokers, "start", cluster.node_name(node))
                await asyncio.sleep(fault.duration)
            return "lame duck restart of every node, one at a time"
        if fault.kind == "nats-node-freeze":
            node = int(fault.target)
            pid = node_pid(cluster, node)
            os.kill(pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(fault.duration)
            finally:
                os.kill(pid, signal.SIGCONT)
            return f"froze {cluster.node_name(node)} for {fault.duration:.1f}s"
        if fault.kind == "nats-quorum-loss":
            nodes = [int(c) for c in fault.target]
            for node in nodes:
                await asyncio.to_thread(brokers_local.brokers, "kill", cluster.node_name(node))
            await asyncio.sleep(fault.duration)
            for node in nodes:
                await asyncio.to_thread(brokers_local.brokers, "start", cluster.node_name(node))
            return f"killed {', '.join(cluster.node_name(n) for n in nodes)}, down {fault.duration:.1f}s, started"
        raise ValueError(f"unknown fault kind {fault.kind}")


def node_pid(cluster: NatsCluster, node: int) -> int:
    """The pid compose/brokers recorded for a node of the cluster."""
    return int((STATE / "nats-cluster" / f"n{node + 1}" / "nats.pid").read_text().strip())


async def stop_node(cluster: NatsCluster, node: int, *, lame_duck: bool) -> None:
    """SIGTERM, or lame duck mode (SIGUSR2: leadership handed over, clients moved, then exit), and
    wait until the process is gone (lame duck takes the cluster's lame_duck_duration, 30 s)."""
    if not lame_duck:
        await asyncio.to_thread(brokers_local.brokers, "stop", cluster.node_name(node))
        return
    pid = node_pid(cluster, node)
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.2)
    await asyncio.to_thread(brokers_local.brokers, "kill", cluster.node_name(node))


async def _retry(call: Callable[[], Awaitable[T]], deadline: float) -> T:
    """Await `call()` until it succeeds (a clustered stream may be electing a leader)."""
    while True:
        try:
            return await call()
        except (NatsError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def stream_state(url: str, stream: str, within: float = 60) -> tuple[int, int]:
    """(messages, last sequence) of `stream`, asked on a connection of its own as soon as the server
    answers (a server just started may still be recovering its streams)."""
    deadline = time.monotonic() + within
    while True:
        try:
            client = await nats.connect(url, allow_reconnect=False, connect_timeout=2, error_cb=_quiet)
        except (NatsError, OSError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
        else:
            break
    try:
        js = client.jetstream(timeout=5)
        info = await _retry(lambda: js.stream_info(stream), deadline)
        return info.state.messages, info.state.last_seq
    finally:
        with contextlib.suppress(NatsError, TimeoutError):
            await client.close()


async def _quiet(_error: Exception) -> None:
    """A connection to a server being restarted fails now and then: the caller tries again."""


async def fill_stream(js: JetStreamContext, stream: str, *, limit: str, seconds: float) -> str:
    """Make the stream full for `seconds` (its limit set to what it holds, discard new), then put its
    configuration back as it was. Restoring is retried for up to 2 minutes: a stream left full
    would stall its routes for good."""
    info = await _retry(lambda: js.stream_info(stream), time.monotonic() + 30)
    original = info.config
    if limit == "max_bytes":
        full = dataclasses.replace(original, max_bytes=max(1, info.state.bytes), discard=js_api.DiscardPolicy.NEW)
        held = f"max_bytes {info.state.bytes}"
    else:
        full = dataclasses.replace(original, max_msgs=max(1, info.state.messages), discard=js_api.DiscardPolicy.NEW)
        held = f"max_msgs {info.state.messages}"
    await _retry(lambda: js.update_stream(full), time.monotonic() + 30)
    try:
        await asyncio.sleep(seconds)
    finally:
        await _retry(lambda: js.update_stream(original), time.monotonic() + 120)
    return f"full at {held} for {seconds:.1f}s, restored"
