"""What the benchmarks in bench/ share: names, /proc accounting, the JetStream side, the bridge
subprocess, latency statistics, machine info and the result file.

Each `bench/<source>_to_jetstream.py` measures one source's path into JetStream the same way:
ceilings of the two clients the bridge sits between, the bridge itself (`python -m bridge run`
as a subprocess, its rate taken from the stream's own timestamps), latency at a fixed rate and
peak RSS draining a backlog. Everything here is source-neutral; the scripts import it as
`common` (they run as `python bench/<name>.py`, so bench/ is on sys.path).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from importlib import metadata
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol, TypeVar

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bridge.config import BridgeConfig, load_config_text
from bridge.jetstream.checkpoints import BUCKET
from bridge.jetstream.declare import to_nats_config
from bridge.jetstream.publish_types import InFlight, PublishFailure
from bridge.jetstream.publisher import JetStreamPublisher
from bridge.message import OutboundMessage

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
STATE = Path(os.environ.get("BRIDGE_STATE_DIR", ROOT / "compose" / ".state"))
MiB = 1024 * 1024
T = TypeVar("T")

WINDOW = 4096  # the bridge's default publisher window (RunSettings.window)
BATCH = 500  # the bridge's default batch (PipelineSettings.batch_size)

TARGET_RATIO = 0.60
TARGET_P99_MS = 10.0
TARGET_RSS_MIB = 150.0

# Pid files of the brokers compose/brokers starts, by the name CPU figures use.
BROKER_PID_FILES = {
    "nats-server": "nats/nats.pid",
    "kafka": "kafka/kafka.pid",
    "rabbitmq": "rabbitmq/beam.pid",  # the Erlang VM itself, not its shell wrapper
}


# --------------------------------------------------------------------------------------- names


class Names:
    """Unique names per run, so runs never share a topic, stream, group or checkpoint key."""

    def __init__(self) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        self.stamp = stamp
        self.run = f"{stamp.lower().replace('t', '').rstrip('z')}{secrets.token_hex(2)}"
        self._counter = 0

    def next(self, what: str) -> tuple[str, str, str, str]:
        """(topic-or-tag, STREAM, subject prefix, consumer group) for one measurement."""
        self._counter += 1
        tag = f"{what}{self._counter}"
        return (
            f"bench-{self.run}-{tag}",
            f"BENCH_{self.run}_{tag}".upper(),
            f"bench.{self.run}.{tag}",
            f"bench-{self.run}-{tag}",
        )


def load_mapping(text: str) -> BridgeConfig:
    return load_config_text(text, "bench-mapping.yaml", env={})


# --------------------------------------------------------------------------------------- /proc


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in KiB (empty when it is gone)."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                found[name] = int(value.split()[0])
    return found


def _stat_times(pid: int | None, count: int) -> float | None:
    """The first `count` CPU time fields of /proc/PID/stat (utime, stime, cutime, cstime), summed, in seconds."""
    if pid is None:
        return None
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return sum(int(field) for field in fields[11 : 11 + count]) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process so far, from /proc/PID/stat."""
    return _stat_times(pid, 2)


def tree_cpu_seconds(pid: int | None) -> float | None:
    """CPU time of a process and of its children, so far: its own, its exited children's (the ones
    it waited for, from /proc/PID/stat) and every live descendant's. `run --workers` is a
    supervisor whose work happens in its children."""
    total = _stat_times(pid, 4)
    if pid is None or total is None:
        return None
    for child in _descendants(pid):
        total += cpu_seconds(child) or 0.0
    return total


def _descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii")
        except OSError:
            continue
        parents.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def broker_pid(name: str) -> int | None:
    """The pid of a broker compose/brokers started (for CPU accounting only), if any."""
    try:
        pid = int((STATE / BROKER_PID_FILES[name]).read_text().strip())
    except (OSError, ValueError, KeyError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def machine_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs so far, from the first line of /proc/stat.

    Idle and iowait are not busy; guest time is left out because user already holds it. Whether
    a drain had the machine to itself shows here: on 2 cores the brokers, the system under test
    and nats-server compete, and a process's own CPU figure cannot tell that it waited for a core.
    """
    try:
        line = Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0]
    except OSError:
        return None
    ticks = [int(field) for field in line.split()[1:9]]  # user nice system idle iowait irq softirq steal
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


class CpuMeter:
    """CPU seconds used by the bridge and the named brokers between start() and stop(), and how
    many of the machine's cores were busy meanwhile (`machine_busy_cores`, of os.cpu_count())."""

    def __init__(self, bridge_pid: int | None, brokers: Iterable[str]) -> None:
        self.pids = {"bridge": bridge_pid, **{name: broker_pid(name) for name in brokers}}
        self._start: dict[str, float | None] = {}
        self._machine: tuple[int, int] | None = None
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._machine = machine_ticks()
        self._start = {name: self._cpu(name, pid) for name, pid in self.pids.items()}

    @staticmethod
    def _cpu(name: str, pid: int | None) -> float | None:
        return tree_cpu_seconds(pid) if name == "bridge" else cpu_seconds(pid)

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self._t0
        used: dict[str, float] = {"wall_s": round(wall, 3)}
        for name, pid in self.pids.items():
            before, after = self._start.get(name), self._cpu(name, pid)
            if before is not None and after is not None and wall > 0:
                used[f"{name}_cpu_per_s"] = round((after - before) / wall, 3)
        machine = machine_ticks()
        if self._machine is not None and machine is not None and machine[1] > self._machine[1]:
            busy = (machine[0] - self._machine[0]) / (machine[1] - self._machine[1])
            used["machine_busy_cores"] = round(busy * (os.cpu_count() or 1), 2)
        return used


def stop_if_cancelled() -> None:
    """Raise CancelledError if this task was cancelled (Ctrl-C, SIGTERM) and a library swallowed it.

    aiokafka's close path suppresses CancelledError; a cancel that lands there would otherwise be
    lost and the run would go on. Called between steps and in every polling loop.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


# --------------------------------------------------------------------------------------- NATS


async def create_stream(js: JetStreamContext, config: BridgeConfig) -> None:
    await js.add_stream(to_nats_config(config.streams[0]))


async def stored_count(js: JetStreamContext, stream: str) -> int:
    try:
        return (await js.stream_info(stream)).state.messages
    except NotFoundError:
        return 0


async def delete_stream(js: JetStreamContext, stream: str) -> None:
    with contextlib.suppress(NotFoundError, NatsError, TimeoutError):
        await js.delete_stream(stream)


async def run_streams(js: JetStreamContext, run_id: str) -> list[str]:
    """The streams run `run_id` created (their names start with BENCH_<RUN>_)."""
    streams: list[str] = []
    while page := await js.streams_info(offset=len(streams)):
        streams.extend(info.config.name or "" for info in page)
    return [name for name in streams if name.startswith(f"BENCH_{run_id.upper()}_")]


def key_mentions(key: str, run_id: str) -> bool:
    """Does a checkpoint key name this run? Its parts may be plain or base64url (the bridge's
    key format is its own business: look at every part both ways)."""
    for part in key.split("."):
        if run_id in part:
            return True
        with contextlib.suppress(ValueError):
            if run_id in base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode("utf-8", "replace"):
                return True
    return False


async def purge_checkpoints(js: JetStreamContext, run_id: str) -> int:
    """Purge the bridge's checkpoint keys that name this run's topics or routes (no markers left)."""
    try:
        keys = await (await js.key_value(BUCKET)).keys()
    except (NotFoundError, NatsError):
        return 0
    mine = [key for key in keys if key_mentions(key, run_id)]
    for key in mine:
        await js.purge_stream(f"KV_{BUCKET}", subject=f"$KV.{BUCKET}.{key}")
    return len(mine)


class CountingOwner:
    """PublishOwner for ceiling B: counts outcomes, resends nothing."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.stored = self.duplicates = self.failures = 0
        self.last_failure = ""
        self.done = asyncio.Event()

    def sendable(self, entry: InFlight) -> bool:
        return True

    def published(self, entry: InFlight, seq: int, duplicate: bool) -> None:
        self.stored += 1
        self.duplicates += duplicate
        self._check()

    def failed(self, entry: InFlight, failure: PublishFailure) -> None:
        self.failures += 1
        self.last_failure = str(failure)
        self._check()

    def _check(self) -> None:
        if self.stored + self.failures >= self.expected:
            self.done.set()


async def ceiling_publish(
    nc: NatsClient,
    subject: str,
    stream: str,
    count: int,
    size: int,
    *,
    headers_for: Callable[[int], dict[str, str]] | None = None,
    spread: int = 6,
) -> dict[str, Any]:
    """Ceiling B: our JetStreamPublisher, window 4096, unique Nats-Msg-Id, count PubAcks.

    Message i goes to `<subject>.<i % spread>`. With `headers_for`, message i carries
    `headers_for(i)` (which must include its Nats-Msg-Id) instead of the Nats-Msg-Id alone:
    the variant "B+h", with the headers the bridge really sends.
    """
    owner = CountingOwner(count)
    payload = b"v" * size
    async with JetStreamPublisher(nc, window=WINDOW, ack_timeout=10.0) as publisher:
        started = time.perf_counter()
        for start in range(0, count, BATCH):
            batch = []
            for i in range(start, min(count, start + BATCH)):
                if headers_for is None:
                    msg_id = f"{stream}/{i}"
                    headers = {"Nats-Msg-Id": msg_id}
                else:
                    headers = headers_for(i)
                    msg_id = headers["Nats-Msg-Id"]
                outbound = OutboundMessage(f"{subject}.{i % spread}", payload, msg_id, headers)
                batch.append(InFlight(outbound, owner, i))
            await publisher.publish(batch)
        await asyncio.wait_for(owner.done.wait(), 120)
        elapsed = time.perf_counter() - started
    if owner.failures:
        raise RuntimeError(f"ceiling B: {owner.failures} publishes failed, last: {owner.last_failure}")
    return {"rate": round(count / elapsed, 1), "messages": count, "seconds": round(elapsed, 3)}


# --------------------------------------------------------------------------------------- the bridge


class BridgeRun:
    """`python -m bridge run FILE` as a subprocess, with its RSS sampled every 100 ms."""

    def __init__(self, mapping: Path, log_path: Path) -> None:
        self.mapping = mapping
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self.peak_sampled_kib = 0
        self.samples: list[tuple[float, int]] = []
        self._sampler: asyncio.Task[None] | None = None
        self._t0 = 0.0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bridge",
                "run",
                str(self.mapping),
                "--log-level",
                "warning",
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._t0 = time.perf_counter()
        self._sampler = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while self.alive():
            rss = proc_status(self.pid).get("VmRSS", 0)
            self.peak_sampled_kib = max(self.peak_sampled_kib, rss)
            self.samples.append((round(time.perf_counter() - self._t0, 2), rss))
            await asyncio.sleep(0.1)

    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def hwm_kib(self) -> int:
        return proc_status(self.pid).get("VmHWM", 0)

    async def stop(self, grace: float = 30) -> dict[str, Any]:
        """SIGTERM and wait (then SIGKILL); the exit code and how long the clean stop took."""
        result: dict[str, Any] = {}
        if self.process is not None and self.alive():
            started = time.perf_counter()
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), grace)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
                result["killed"] = True
            result["stop_seconds"] = round(time.perf_counter() - started, 2)
        if self.process is not None:
            result["exit_code"] = self.process.returncode
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        return result

    def kill(self) -> None:
        if self.process is not None and self.alive():
            self.process.kill()

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-3000:]
        return ""


Publisher = Callable[[NatsClient, str, str, int, int], Awaitable[dict[str, Any]]]  # (nc, subject, stream, n, size)


class HasNatsUrl(Protocol):
    nats_url: str


class BenchBase:
    """Shared state of one run on the NATS side: connection, names, bridges, streams to clean up.

    `brokers` names the broker processes whose CPU is measured beside the bridge's (keys of
    BROKER_PID_FILES).
    """

    brokers: tuple[str, ...] = ("nats-server",)

    def __init__(self, opts: HasNatsUrl, nc: NatsClient, workdir: Path) -> None:
        self.opts = opts
        self.nc = nc
        self.js = nc.jetstream(timeout=30)
        self.workdir = workdir
        self.names = Names()
        self.streams: list[str] = []
        self.bridges: list[BridgeRun] = []

    def log(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    def meter(self, bridge_pid: int | None) -> CpuMeter:
        return CpuMeter(bridge_pid, self.brokers)

    def new_bridge(self, text: str, stream: str) -> BridgeRun:
        """A bridge for mapping file `text` (not started), whose stream is cleaned up at the end."""
        path = self.workdir / f"{stream.lower()}.yaml"
        path.write_text(text)
        self.streams.append(stream)
        bridge = BridgeRun(path, self.workdir / f"{stream.lower()}.log")
        self.bridges.append(bridge)
        return bridge

    async def wait_stored(self, stream: str, expected: int, bridge: BridgeRun, limit: float) -> float:
        """Poll until the stream holds `expected` messages, at most `limit` s; return when (perf_counter)."""
        deadline = time.monotonic() + limit
        while True:
            stop_if_cancelled()
            count = await stored_count(self.js, stream)
            if count >= expected:
                return time.perf_counter()
            if not bridge.alive():
                raise RuntimeError(f"the bridge exited early; its log ends:\n{bridge.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{stream}: {count} of {expected} stored after {limit:.0f} s")
            await asyncio.sleep(0.05)

    async def drain(self, bridge: BridgeRun, stream: str, expected: int) -> dict[str, Any]:
        """Start `bridge` on a backlog of `expected` messages; its rate between first and last stored.

        The stream is deleted afterwards; the bridge is always stopped (SIGTERM, then SIGKILL).
        """
        started = time.perf_counter()
        await bridge.start()
        meter = self.meter(bridge.pid)
        try:
            # CPU accounting starts when the first message is stored (start-up is not drain).
            while await stored_count(self.js, stream) == 0:
                stop_if_cancelled()
                if not bridge.alive():
                    raise RuntimeError(f"the bridge exited early; its log ends:\n{bridge.log_tail()}")
                if time.perf_counter() - started > 120:
                    raise RuntimeError(f"{stream}: nothing stored after 120 s:\n{bridge.log_tail()}")
                await asyncio.sleep(0.02)
            meter.start()
            all_stored = await self.wait_stored(stream, expected, bridge, limit=600)
            cpu = meter.stop()
            hwm = bridge.hwm_kib()
            await asyncio.sleep(0.5)  # anything stored twice would show now
        finally:
            stopped = await bridge.stop()
        info = await self.js.stream_info(stream)
        first = await self.js.get_msg(stream, info.state.first_seq)
        last = await self.js.get_msg(stream, info.state.last_seq)
        assert first.time is not None
        assert last.time is not None
        span = (last.time - first.time).total_seconds()
        await delete_stream(self.js, stream)
        return {
            "rate": round((info.state.messages - 1) / span, 1) if span > 0 else None,
            "messages": info.state.messages,
            "expected": expected,
            "seconds_first_to_last_stored": round(span, 3),
            "seconds_from_process_start": round(all_stored - started, 3),
            "peak_rss_mib": round(max(hwm, bridge.peak_sampled_kib) / 1024, 1),
            "rss_mib_every_100ms": [round(kib / 1024, 1) for _, kib in bridge.samples],
            "cpu": cpu,
            **stopped,
        }

    async def publish_into_fresh_stream(
        self, config: BridgeConfig, subject: str, publish: Publisher, count: int, size: int
    ) -> dict[str, Any]:
        """`publish` `count` messages of `size` bytes into the (one) stream of `config`, created
        for it and deleted after; the stream must then hold exactly `count` messages."""
        stream = config.streams[0].name
        self.streams.append(stream)
        await create_stream(self.js, config)
        try:
            sample = await publish(self.nc, subject, stream, count, size)
            stored = await stored_count(self.js, stream)
            if stored != count:
                raise RuntimeError(f"{stream}: {stored} stored, {count} published")
        finally:
            await delete_stream(self.js, stream)
        return sample

    async def cleanup(self) -> None:
        """Kill bridges still running, delete this run's streams and checkpoint keys."""
        for bridge in self.bridges:
            bridge.kill()
        for stream in self.streams:
            await delete_stream(self.js, stream)
        with contextlib.suppress(NotFoundError, NatsError, TimeoutError):
            await purge_checkpoints(self.js, self.names.run)


# --------------------------------------------------------------------------------------- latency


def payload(kind: bytes, seq: int, size: int) -> bytes:
    """`M<seq> <time_ns> xxx...` (a measured message) or `W<lane> ...` (a warm-up probe)."""
    head = b"%s%011d %019d " % (kind, seq, time.time_ns())
    return head + b"x" * max(0, size - len(head))


class LatencyRecorder:
    """A latency listener's samples: (seq, sent_ns, received_ns) of each measured message.

    Tells the parent "warm" (on `conn`) once warm-up probes from `lanes` different lanes
    (partitions, say) came through.
    """

    def __init__(self, conn: Connection, lanes: int) -> None:
        self.conn = conn
        self.lanes = lanes
        self.received: list[tuple[int, int, int]] = []
        self.warm: set[int] = set()

    def record(self, data: bytes, now: int) -> None:
        if data[:1] == b"M":
            self.received.append((int(data[1:12]), int(data[13:32]), now))
        elif len(self.warm) < self.lanes:
            self.warm.add(int(data[1:12]))
            if len(self.warm) == self.lanes:
                self.conn.send("warm")


async def listen_nats(address: str, subject: str, conn: Connection, recorder: LatencyRecorder) -> None:
    """A core NATS subscriber on `subject` until the parent says "stop" (it sent "ready" first)."""
    loop = asyncio.get_running_loop()
    nc = await nats.connect(address)

    async def on_message(msg: Msg) -> None:
        recorder.record(msg.data, time.time_ns())

    await nc.subscribe(subject, cb=on_message, pending_msgs_limit=-1, pending_bytes_limit=-1)
    await nc.flush()
    conn.send("ready")
    await loop.run_in_executor(None, conn.recv)  # "stop"
    await nc.drain()


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def _poll_recv(conn: Connection, limit: float) -> Any:
    if not conn.poll(limit):
        raise RuntimeError(f"the latency listener did not answer within {limit:g} s")
    try:
        return conn.recv()
    except EOFError:
        raise RuntimeError("the latency listener exited (its traceback is above)") from None


async def receive(conn: Connection, limit: float) -> Any:
    """The next object from the listener process, waiting at most `limit` seconds."""
    return await asyncio.get_running_loop().run_in_executor(None, _poll_recv, conn, limit)


def latency_summary(received: list[tuple[int, int, int]], total: int) -> dict[str, Any]:
    """Percentiles, rates, a sparse 0.25 ms histogram and a 100 ms timeline of the samples."""
    if not received:
        raise RuntimeError("latency run: the listener received nothing")
    seqs = {seq for seq, _, _ in received}
    latencies = sorted((recv - sent_ns) / 1e6 for _, sent_ns, recv in received)
    recv_times = sorted(recv for _, _, recv in received)
    receive_span = (recv_times[-1] - recv_times[0]) / 1e9
    histogram: dict[str, int] = {}
    for value in latencies:
        key = f"{int(value * 4) / 4:.2f}"
        histogram[key] = histogram.get(key, 0) + 1
    # Per 100 ms of send time: [start s, messages, median ms, max ms] — shows periodic stalls.
    first_sent = min(sent_ns for _, sent_ns, _ in received)
    windows: dict[int, list[float]] = {}
    for _, sent_ns, recv in received:
        windows.setdefault((sent_ns - first_sent) // 100_000_000, []).append((recv - sent_ns) / 1e6)
    timeline = [
        [index / 10, len(values), round(statistics.median(values), 2), round(max(values), 2)]
        for index, values in sorted(windows.items())
    ]
    return {
        "received": len(received),
        "receive_rate": round((len(received) - 1) / receive_span, 1) if receive_span > 0 else None,
        "missing": total - len(seqs & set(range(total))),
        "duplicates": len(received) - len(seqs),
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 3),
            "p90": round(percentile(latencies, 90), 3),
            "p99": round(percentile(latencies, 99), 3),
            "p99.9": round(percentile(latencies, 99.9), 3),
            "max": round(latencies[-1], 3),
            "mean": round(statistics.fmean(latencies), 3),
            "min": round(latencies[0], 3),
        },
        "histogram_ms_0.25": histogram,
        "timeline_100ms": timeline,
    }


# --------------------------------------------------------------------------------------- the run


def median_of(samples: list[dict[str, Any]], key: str = "rate") -> float:
    return round(float(statistics.median(sample[key] for sample in samples)), 1)


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_info(nc: NatsClient, packages: Iterable[str], brokers: Mapping[str, str]) -> dict[str, Any]:
    """CPU, memory, kernel, versions (Python packages, nats-server, `brokers`: name -> version),
    the git commit and a hash of bridge/*.py, and the load average now."""
    cpu_model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as meminfo:
        memory = f"{int(meminfo.readline().split()[1]) // 1024:,} MiB"
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    server = nc._server_info.get("version", "unknown")
    commit = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--", "bridge")
    sources = hashlib.sha256()
    for path in sorted((ROOT / "bridge").rglob("*.py")):
        sources.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "nats_server": server,
        **brokers,
        "git": f"{commit}{' + uncommitted changes in bridge/' if dirty else ''}",
        "bridge_sources_sha256": sources.hexdigest()[:12],
        "loadavg_start": os.getloadavg(),
    }


def save(report: dict[str, Any], name: str) -> Path:
    """Write the report to bench/results/<name>-<stamp>.json (atomically); `_stamp` is removed."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{report.pop('_stamp')}.json"
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(report, indent=1) + "\n")
    temporary.replace(path)
    return path


def run_on_best_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when installed: the bridge does, so the ceilings should too."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


# --------------------------------------------------------------------------------------- report


def size_label(size: int) -> str:
    return "1 KiB" if size == 1024 else f"{size} B"


def rates_text(samples: list[dict[str, Any]]) -> str:
    return ", ".join(f"{s['rate']:,.0f}" for s in samples)


def median_cpu(drains: list[dict[str, Any]], name: str) -> str:
    values = [d["cpu"][f"{name}_cpu_per_s"] for d in drains if f"{name}_cpu_per_s" in d["cpu"]]
    return f"{statistics.median(values):.2f}" if values else "-"


def cpu_note(cpu: dict[str, float], brokers: Mapping[str, str]) -> str:
    """'bridge 0.42 CPU/s, nats-server 0.17, Kafka 0.31' for `brokers` (name -> label)."""
    parts = [f"bridge {cpu.get('bridge_cpu_per_s', 0):.2f} CPU/s"]
    parts += [f"{label} {cpu.get(f'{name}_cpu_per_s', 0):.2f}" for name, label in brokers.items()]
    return ", ".join(parts)


def latency_rows(runs: Iterable[dict[str, Any] | None]) -> list[str]:
    """The latency table: one row per run (None skipped)."""
    rows = [
        "| path | sent | send rate | received | missing | p50 | p90 | p99 | p99.9 | max |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        if run is None:
            continue
        lat = run["latency_ms"]
        rows.append(
            f"| {run['path']} | {run['sent']:,} | {run['send_rate']:,.0f}/s | {run['received']:,} | {run['missing']} "
            f"| {lat['p50']:.2f} ms | {lat['p90']:.2f} ms | {lat['p99']:.2f} ms | {lat['p99.9']:.2f} ms "
            f"| {lat['max']:.2f} ms |"
        )
    return rows
