"""Kafka -> JetStream benchmark: how close does the bridge come to what its two clients can do?

Why these measurements. The bridge is a Python process between two Python clients: aiokafka
reads, nats-py writes. Neither client is free, so a bridge rate in msg/s means little on its
own. This script measures, in ONE run on the same machine and the same brokers:

* ceiling A — aiokafka alone: a fresh consumer group reads the pre-filled topic and does
  nothing with the records (the bridge's consumer settings, `getmany(max_records=500)`);
* ceiling B — our own `JetStreamPublisher` alone (window 4096): publish the same number of
  messages of the same size, each with a unique `Nats-Msg-Id`, and count the PubAcks. Beside it,
  for reference only: "B+h", the same with the six headers the bridge really sends (how much of
  the gap is header encoding), and nats-py's `js.publish_async` with the same window;
* the bridge — `python -m bridge run FILE`, the command users run, as a subprocess draining
  the same pre-filled topic into a fresh stream; its rate is taken from the stream itself, from
  the first to the last stored message (server timestamps), so start-up is not counted;

and reports the bridge as a percentage of the lower ceiling: the share of what the clients
allow that the bridge's own work (mapping, ordering, settling, checkpoints) leaves over. The
measurements are interleaved (A, B, B+h, publish_async, bridge, then again) and repeated;
medians are quoted.

Then, with a bridge on an empty topic, a producer sends at a fixed rate (5,000 msg/s of 100 B,
`linger_ms=0`) with its send time (`time.time_ns()`) in the payload, and a core NATS subscriber
(its own process) on the stream's subjects takes the receive time: end-to-end latency, Kafka
producer to "JetStream stored it" (a core subscriber sees a JetStream message when the server
processes it). The same producer into an aiokafka consumer, without the bridge, is measured just
before as the floor this machine allows. Last, the bridge drains a backlog of 1,000,000 x 100 B
messages while its RSS is sampled; the peak (VmHWM) is reported.

How to read the output. Rates are msg/s, medians of the repeats, with every sample in the JSON
file under bench/results/. The machine is shared and small: compare ratios within one run,
not absolute numbers across runs. CPU seconds of the bridge, nats-server and Kafka during each
drain tell where the time went: a bridge near 1.0 CPU-second per second is bound by its single
Python thread. Targets: bridge >= 60% of the lower ceiling; p99 < 10 ms at 5,000 msg/s;
peak RSS <= 150 MiB.

Run `bash compose/brokers start nats kafka && .venv/bin/python bench/kafka_to_jetstream.py`
(`--quick` for a short check, `--help` for the knobs). Everything it creates (topics, streams,
the bridge's checkpoint keys) is deleted at the end; consumer groups stay. bench/README.md has
the meaning of every figure and the results of a full run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import functools
import hashlib
import json
import multiprocessing
import os
import platform
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from importlib import metadata
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import nats
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bridge.config import BridgeConfig, load_config_text
from bridge.jetstream.checkpoints import BUCKET
from bridge.jetstream.declare import to_nats_config
from bridge.jetstream.publisher import InFlight, JetStreamPublisher, PublishFailure
from bridge.message import OutboundMessage

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
STATE = Path(os.environ.get("BRIDGE_STATE_DIR", ROOT / "compose" / ".state"))
MiB = 1024 * 1024

SIZES = (100, 1024)
DEFAULT_MESSAGES = {100: 200_000, 1024: 100_000}
QUICK_MESSAGES = 20_000
DEFAULT_RSS_MESSAGES = 1_000_000
QUICK_RSS_MESSAGES = 100_000
PARTITIONS = 6
WINDOW = 4096  # the bridge's default publisher window (RunSettings.window)
FETCH_RECORDS = 500  # the bridge's default batch (PipelineSettings.batch_size)

PARTS = ("throughput", "latency", "memory")
TARGET_RATIO = 0.60
TARGET_P99_MS = 10.0
TARGET_RSS_MIB = 150.0


# --------------------------------------------------------------------------------------- options


@dataclass(slots=True)
class Options:
    nats_url: str
    bootstrap: str
    messages: dict[int, int]
    repeats: int
    rss_messages: int
    latency_rate: int
    latency_seconds: float
    publish_async: bool
    keep_logs: bool
    strict: bool
    command: str
    parts: tuple[str, ...] = PARTS
    latency_samples: bool = False
    cleanup: str | None = None


def parse_options(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(
        description="Kafka -> JetStream benchmark of nats-bridge: ceilings, bridge throughput, latency, memory.",
    )
    parser.add_argument("--nats-url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:14222"))
    parser.add_argument("--kafka-bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    parser.add_argument(
        "--messages", type=int, help="messages per size (default 200,000 for 100 B and 100,000 for 1 KiB)"
    )
    parser.add_argument("--quick", action="store_true", help="a short check: 20,000 messages, 100,000 for RSS, 5 s")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each throughput measurement (default 3)")
    parser.add_argument("--rss-messages", type=int, help="backlog drained for the memory figure (default 1,000,000)")
    parser.add_argument("--latency-rate", type=int, default=5000, help="msg/s for the latency run (default 5000)")
    parser.add_argument("--latency-seconds", type=float, help="length of the latency run (default 10 s)")
    parser.add_argument(
        "--no-publish-async", action="store_true", help="skip the nats-py publish_async reference figure"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the bridge logs (their path is printed)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--latency-samples",
        action="store_true",
        help="also store every latency sample (seq, sent_ns, received_ns) in the JSON file",
    )
    parser.add_argument("--only", choices=PARTS, action="append", help="run only this part (repeatable)")
    parser.add_argument(
        "--cleanup", metavar="RUN_ID", help="only delete what an interrupted run left behind (its id is logged first)"
    )
    args = parser.parse_args(argv)
    if args.messages is not None:
        messages = dict.fromkeys(SIZES, args.messages)
    elif args.quick:
        messages = dict.fromkeys(SIZES, QUICK_MESSAGES)
    else:
        messages = dict(DEFAULT_MESSAGES)
    rss = args.rss_messages or (QUICK_RSS_MESSAGES if args.quick else DEFAULT_RSS_MESSAGES)
    seconds = args.latency_seconds or (5.0 if args.quick else 10.0)
    if min(messages.values()) < 1000 or args.repeats < 1 or rss < 1000:
        parser.error("use at least 1,000 messages and one repeat")
    return Options(
        nats_url=args.nats_url,
        bootstrap=args.kafka_bootstrap,
        messages=messages,
        repeats=args.repeats,
        rss_messages=rss,
        latency_rate=args.latency_rate,
        latency_seconds=seconds,
        publish_async=not args.no_publish_async,
        keep_logs=args.keep_logs,
        strict=args.strict,
        command=shlex.join([Path(sys.executable).name, *sys.argv]),
        parts=tuple(args.only) if args.only else PARTS,
        latency_samples=args.latency_samples,
        cleanup=args.cleanup,
    )


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


def mapping_text(opts: Options, *, stream: str, subject: str, topic: str, group: str, route: str) -> str:
    """A one-route mapping file: topic -> `<subject>.<partition>`, Nats-Msg-Id topic/partition/offset."""
    return textwrap.dedent(f"""\
        version: 1
        nats:
          servers: ["{opts.nats_url}"]
          name: nats-bridge-bench
        streams:
          - name: {stream}
            subjects: ["{subject}.>"]
            storage: file
            duplicate_window: 2m
        sources:
          kafka:
            type: kafka
            bootstrap_servers: ["{opts.bootstrap}"]
        services:
          bench:
            routes:
              - name: {route}
                source: kafka
                from: {{topics: ["{topic}"], group: "{group}", start: earliest}}
                to: "{subject}.{{partition}}"
        """)


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


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process so far, from /proc/PID/stat."""
    if pid is None:
        return None
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broker_pid(name: str) -> int | None:
    """The pid of a broker compose/brokers started (for CPU accounting only), if any."""
    try:
        pid = int((STATE / name / f"{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


class CpuMeter:
    """CPU seconds used by the bridge, nats-server and Kafka between start() and stop()."""

    def __init__(self, bridge_pid: int | None) -> None:
        self.pids = {"bridge": bridge_pid, "nats-server": broker_pid("nats"), "kafka": broker_pid("kafka")}
        self._start: dict[str, float | None] = {}
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self._t0
        used: dict[str, float] = {"wall_s": round(wall, 3)}
        for name, pid in self.pids.items():
            before, after = self._start.get(name), cpu_seconds(pid)
            if before is not None and after is not None and wall > 0:
                used[f"{name}_cpu_per_s"] = round((after - before) / wall, 3)
        return used


def stop_if_cancelled() -> None:
    """Raise CancelledError if this task was cancelled (Ctrl-C, SIGTERM) and a library swallowed it.

    aiokafka's close path suppresses CancelledError; a cancel that lands there would otherwise be
    lost and the run would go on. Called between steps and in every polling loop.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


# --------------------------------------------------------------------------------------- Kafka


async def create_topic(admin: AIOKafkaAdminClient, name: str, partitions: int = PARTITIONS) -> None:
    response = await admin.create_topics([NewTopic(name, partitions, 1)])
    for topic, code, *rest in response.topic_errors:
        if code != 0:
            raise RuntimeError(f"creating Kafka topic {topic} failed: error {code} {rest}")
    deadline = time.monotonic() + 30
    while True:
        (described,) = await admin.describe_topics([name])
        parts = described["partitions"]
        if (
            described["error_code"] == 0
            and len(parts) == partitions
            and all(p["error_code"] == 0 and p["leader"] >= 0 for p in parts)
        ):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kafka topic {name} has no leaders after 30 s")
        await asyncio.sleep(0.1)


async def fill_topic(bootstrap: str, topic: str, count: int, size: int) -> float:
    """Produce `count` records of `size` bytes, keyed, round-robin over the partitions; return msg/s."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 * MiB, max_request_size=4 * MiB, acks=1
    )
    await producer.start()
    body = b"v" * size
    started = time.perf_counter()
    try:
        pending = []
        for i in range(count):
            pending.append(await producer.send(topic, body, key=b"k%d" % i, partition=i % PARTITIONS))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count / (time.perf_counter() - started)


def consumer_options(bootstrap: str, group: str) -> dict[str, Any]:
    """The options bridge/sources/kafka.py uses, so ceiling A is what aiokafka allows the bridge."""
    return {
        "bootstrap_servers": bootstrap,
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_partition_fetch_bytes": 1 * MiB,
        "fetch_max_bytes": 16 * MiB,
    }


async def ceiling_consume(bootstrap: str, topic: str, group: str, expected: int) -> dict[str, Any]:
    """Ceiling A: read `expected` records with getmany and nothing else."""
    consumer = AIOKafkaConsumer(topic, **consumer_options(bootstrap, group))
    started = time.perf_counter()
    await consumer.start()
    count = first_batch = 0
    first = 0.0
    deadline = time.monotonic() + 300
    try:
        while count < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=100, max_records=FETCH_RECORDS)
            got = sum(len(records) for records in batches.values())
            if got and not count:
                first, first_batch = time.perf_counter(), got
            count += got
        last = time.perf_counter()
    finally:
        await consumer.stop()
    if count < expected:
        raise RuntimeError(f"consumer read {count} of {expected} records in 300 s")
    return {
        "rate": round((count - first_batch) / (last - first), 1),
        "messages": count,
        "seconds_first_to_last": round(last - first, 3),
        "seconds_with_start": round(last - started, 3),
    }


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


def bridge_like_headers(topic: str, partition: int, offset: int) -> dict[str, str]:
    """The headers the bridge gives a keyed Kafka record (README: "Message ids and headers")."""
    return {
        "Kafka-Topic": topic,
        "Kafka-Partition": str(partition),
        "Kafka-Offset": str(offset),
        "Kafka-Timestamp": "1795516800000",
        "Kafka-Key": f"k{offset}",
        "Nats-Msg-Id": f"{topic}/{partition}/{offset}",
    }


async def ceiling_publish(
    nc: NatsClient, subject: str, stream: str, count: int, size: int, *, like_topic: str | None = None
) -> dict[str, Any]:
    """Ceiling B: our JetStreamPublisher, window 4096, unique Nats-Msg-Id, count PubAcks.

    With `like_topic`, each message carries the six headers the bridge would give a record of
    that topic instead of the Nats-Msg-Id alone (variant "B+h").
    """
    owner = CountingOwner(count)
    payload = b"v" * size
    async with JetStreamPublisher(nc, window=WINDOW, ack_timeout=10.0) as publisher:
        started = time.perf_counter()
        for start in range(0, count, FETCH_RECORDS):
            batch = []
            for i in range(start, min(count, start + FETCH_RECORDS)):
                if like_topic is None:
                    msg_id = f"{stream}/{i}"
                    headers = {"Nats-Msg-Id": msg_id}
                else:
                    headers = bridge_like_headers(like_topic, i % PARTITIONS, i // PARTITIONS)
                    msg_id = headers["Nats-Msg-Id"]
                outbound = OutboundMessage(f"{subject}.{i % PARTITIONS}", payload, msg_id, headers)
                batch.append(InFlight(outbound, owner, i))
            await publisher.publish(batch)
        await asyncio.wait_for(owner.done.wait(), 120)
        elapsed = time.perf_counter() - started
    if owner.failures:
        raise RuntimeError(f"ceiling B: {owner.failures} publishes failed, last: {owner.last_failure}")
    return {"rate": round(count / elapsed, 1), "messages": count, "seconds": round(elapsed, 3)}


async def reference_publish_async(nc: NatsClient, subject: str, stream: str, count: int, size: int) -> dict[str, Any]:
    """nats-py's own js.publish_async, at most 4096 outstanding (its semaphore), then gather."""
    js = nc.jetstream(publish_async_max_pending=WINDOW)
    payload = b"v" * size
    started = time.perf_counter()
    futures = []
    for i in range(count):
        futures.append(
            await js.publish_async(f"{subject}.{i % PARTITIONS}", payload, headers={"Nats-Msg-Id": f"{stream}/{i}"})
        )
        if len(futures) >= WINDOW:
            await asyncio.wait_for(asyncio.gather(*futures), 60)
            futures.clear()
    await asyncio.wait_for(asyncio.gather(*futures), 60)
    elapsed = time.perf_counter() - started
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


class Bench:
    """Shared state of one run: connections, names, and everything to clean up."""

    def __init__(self, opts: Options, nc: NatsClient, admin: AIOKafkaAdminClient, workdir: Path) -> None:
        self.opts = opts
        self.nc = nc
        self.js = nc.jetstream(timeout=30)
        self.admin = admin
        self.workdir = workdir
        self.names = Names()
        self.topics: list[str] = []
        self.streams: list[str] = []
        self.bridges: list[BridgeRun] = []

    def log(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    async def new_topic(self, what: str, count: int, size: int) -> tuple[str, float]:
        topic = self.names.next(what)[0]
        self.topics.append(topic)
        await create_topic(self.admin, topic)
        rate = await fill_topic(self.opts.bootstrap, topic, count, size) if count else 0.0
        stop_if_cancelled()
        return topic, rate

    def prepare_bridge(self, topic: str, what: str) -> tuple[BridgeRun, str, BridgeConfig]:
        _, stream, subject, group = self.names.next(what)
        route = f"r{self.names.run}{stream.rsplit('_', 1)[-1].lower()}"
        text = mapping_text(self.opts, stream=stream, subject=subject, topic=topic, group=group, route=route)
        config = load_mapping(text)
        path = self.workdir / f"{stream.lower()}.yaml"
        path.write_text(text)
        self.streams.append(stream)
        bridge = BridgeRun(path, self.workdir / f"{stream.lower()}.log")
        self.bridges.append(bridge)
        return bridge, stream, config

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

    async def bridge_drain(self, topic: str, expected: int, what: str) -> dict[str, Any]:
        """The bridge drains a pre-filled topic into a fresh stream; rate between first and last stored."""
        bridge, stream, _config = self.prepare_bridge(topic, what)
        started = time.perf_counter()
        await bridge.start()
        meter = CpuMeter(bridge.pid)
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

    async def cleanup(self) -> None:
        for bridge in self.bridges:
            bridge.kill()
        for stream in self.streams:
            await delete_stream(self.js, stream)
        with contextlib.suppress(NotFoundError, NatsError, TimeoutError):
            await purge_checkpoints(self.js, self.names.run)
        if self.topics:
            with contextlib.suppress(Exception):
                await self.admin.delete_topics(self.topics)


def _key_mentions(key: str, run_id: str) -> bool:
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
    mine = [key for key in keys if _key_mentions(key, run_id)]
    for key in mine:
        await js.purge_stream(f"KV_{BUCKET}", subject=f"$KV.{BUCKET}.{key}")
    return len(mine)


# --------------------------------------------------------------------------------------- latency


def _payload(kind: bytes, seq: int, size: int) -> bytes:
    """`M<seq> <time_ns> xxx...` (a measured message) or `W<partition> ...` (a warm-up probe)."""
    head = b"%s%011d %019d " % (kind, seq, time.time_ns())
    return head + b"x" * max(0, size - len(head))


def _listener_process(kind: str, address: str, name: str, conn: Connection) -> None:
    """Child process: receives the measured messages and records (seq, sent_ns, received_ns).

    `kind` "nats": a core NATS subscriber on subject `name`; "kafka": an aiokafka consumer of
    topic `name` (the baseline without the bridge). Protocol on `conn`: the child sends
    "ready" once subscribed and "warm" once a probe from every partition arrived; the parent
    sends "stop" and gets the samples back.
    """
    try:
        import uvloop  # noqa: PLC0415  (the bridge's event loop, when installed)
    except ImportError:
        asyncio.run(_listen(kind, address, name, conn))
    else:
        uvloop.run(_listen(kind, address, name, conn))


async def _listen(kind: str, address: str, name: str, conn: Connection) -> None:
    received: list[tuple[int, int, int]] = []
    warm: set[int] = set()

    def record(data: bytes, now: int) -> None:
        if data[:1] == b"M":
            received.append((int(data[1:12]), int(data[13:32]), now))
        elif len(warm) < PARTITIONS:
            warm.add(int(data[1:12]))
            if len(warm) == PARTITIONS:
                conn.send("warm")

    loop = asyncio.get_running_loop()
    if kind == "nats":
        nc = await nats.connect(address)

        async def on_message(msg: Msg) -> None:
            record(msg.data, time.time_ns())

        await nc.subscribe(name, cb=on_message, pending_msgs_limit=-1, pending_bytes_limit=-1)
        await nc.flush()
        conn.send("ready")
        await loop.run_in_executor(None, conn.recv)  # "stop"
        await nc.drain()
    else:
        consumer = AIOKafkaConsumer(name, **consumer_options(address, f"{name}-baseline"))
        await consumer.start()
        conn.send("ready")
        stop = loop.run_in_executor(None, conn.recv)
        while not stop.done():
            batches = await consumer.getmany(timeout_ms=50, max_records=FETCH_RECORDS)
            now = time.time_ns()
            for records in batches.values():
                for rec in records:
                    record(rec.value or b"", now)
        await consumer.stop()
    conn.send(received)
    conn.close()


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


async def _receive(conn: Connection, limit: float) -> Any:
    """The next object from the listener process, waiting at most `limit` seconds."""
    return await asyncio.get_running_loop().run_in_executor(None, _poll_recv, conn, limit)


async def _warm_up(producer: AIOKafkaProducer, topic: str, conn: Connection, bridge: BridgeRun | None) -> None:
    """Send a probe to every partition every 200 ms until the listener has seen one from each."""
    deadline = time.monotonic() + 60
    while not conn.poll(0):
        stop_if_cancelled()
        if (bridge is not None and not bridge.alive()) or time.monotonic() > deadline:
            tail = bridge.log_tail() if bridge is not None else ""
            raise RuntimeError(f"nothing comes through after 60 s\n{tail}")
        for partition in range(PARTITIONS):
            await producer.send(topic, _payload(b"W", partition, 100), partition=partition)
        await asyncio.sleep(0.2)
    if (answer := conn.recv()) != "warm":
        raise RuntimeError(f"the latency listener said {answer!r}")


async def _send_at_rate(producer: AIOKafkaProducer, topic: str, rate: int, total: int) -> float:
    """Send `total` timestamped messages at `rate` msg/s (1 ms ticks); return the seconds it took."""
    futures = []
    sent = 0
    started = time.perf_counter()
    while sent < total:
        stop_if_cancelled()
        due = min(total, int((time.perf_counter() - started) * rate) + 1)
        while sent < due:
            futures.append(await producer.send(topic, _payload(b"M", sent, 100), partition=sent % PARTITIONS))
            sent += 1
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - started
    await asyncio.gather(*futures)
    return elapsed


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


async def latency_run(bench: Bench, through_bridge: bool) -> dict[str, Any]:
    """A producer at a fixed rate into an empty topic; a listener process takes receive times.

    Through the bridge, the listener is a core NATS subscriber on the stream's subjects;
    without it (the baseline), an aiokafka consumer of the topic with the bridge's settings.
    """
    opts = bench.opts
    topic, _ = await bench.new_topic("lat", 0, 100)
    bridge: BridgeRun | None = None
    stream = ""
    if through_bridge:
        bridge, stream, config = bench.prepare_bridge(topic, "latstream")
        kind, address, name = "nats", opts.nats_url, config.streams[0].subjects[0]
    else:
        kind, address, name = "kafka", opts.bootstrap, topic
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    listener = context.Process(target=_listener_process, args=(kind, address, name, child), daemon=True)
    listener.start()
    child.close()  # the child holds its end: its exit is then EOF here, not a hang
    producer = AIOKafkaProducer(bootstrap_servers=opts.bootstrap, linger_ms=0, acks=1)
    await producer.start()
    total = int(opts.latency_rate * opts.latency_seconds)
    try:
        await _receive(parent, 60)  # "ready"
        if bridge is not None:
            await bridge.start()
        await _warm_up(producer, topic, parent, bridge)
        await asyncio.sleep(1.0)
        meter = CpuMeter(bridge.pid if bridge is not None else None)
        meter.start()
        send_seconds = await _send_at_rate(producer, topic, opts.latency_rate, total)
        await asyncio.sleep(1.0)  # stragglers
        cpu = meter.stop()
        parent.send("stop")
        received: list[tuple[int, int, int]] = await _receive(parent, 60)
        hwm = bridge.hwm_kib() if bridge is not None else 0
    finally:
        await producer.stop()
        stopped = await bridge.stop() if bridge is not None else {}
        listener.join(10)
        if listener.is_alive():
            listener.kill()
        if stream:
            await delete_stream(bench.js, stream)
    result = {
        "path": "Kafka producer -> bridge -> core NATS subscriber" if through_bridge else "Kafka producer -> aiokafka",
        "target_rate": opts.latency_rate,
        "seconds": opts.latency_seconds,
        "sent": total,
        "send_rate": round(total / send_seconds, 1),
        **latency_summary(received, total),
        "cpu": cpu,
        **stopped,
    }
    if opts.latency_samples:
        result["samples_seq_sent_ns_received_ns"] = received
    if bridge is not None:
        result["peak_rss_mib"] = round(max(hwm, bridge.peak_sampled_kib) / 1024, 1)
    return result


# --------------------------------------------------------------------------------------- the run


def median_of(samples: list[dict[str, Any]], key: str = "rate") -> float:
    return round(float(statistics.median(sample[key] for sample in samples)), 1)


async def throughput(bench: Bench, size: int) -> dict[str, Any]:
    opts = bench.opts
    count = opts.messages[size]
    bench.log(f"{size} B: filling a {PARTITIONS}-partition topic with {count:,} messages")
    topic, fill_rate = await bench.new_topic(f"s{size}-", count, size)
    samples: dict[str, list[dict[str, Any]]] = {
        "ceiling_a": [],
        "ceiling_b": [],
        "ceiling_b_headers": [],
        "publish_async": [],
        "bridge": [],
    }
    with_headers = functools.partial(ceiling_publish, like_topic=topic)
    for repeat in range(1, opts.repeats + 1):
        _, _, _, group = bench.names.next("a")
        samples["ceiling_a"].append(await ceiling_consume(opts.bootstrap, topic, group, count))
        stop_if_cancelled()
        samples["ceiling_b"].append(await publish_into_fresh_stream(bench, topic, "b", count, size, ceiling_publish))
        samples["ceiling_b_headers"].append(
            await publish_into_fresh_stream(bench, topic, "bh", count, size, with_headers)
        )
        if opts.publish_async:
            samples["publish_async"].append(
                await publish_into_fresh_stream(bench, topic, "pa", count, size, reference_publish_async)
            )
        samples["bridge"].append(await bench.bridge_drain(topic, count, "d"))
        stop_if_cancelled()
        bench.log(
            f"{size} B run {repeat}/{opts.repeats}: consume {samples['ceiling_a'][-1]['rate']:,.0f}, "
            f"publish {samples['ceiling_b'][-1]['rate']:,.0f} "
            f"(with the bridge's headers {samples['ceiling_b_headers'][-1]['rate']:,.0f}), "
            f"bridge {samples['bridge'][-1]['rate']:,.0f} msg/s"
        )
    medians = {name: median_of(values) for name, values in samples.items() if values}
    lower = min(medians["ceiling_a"], medians["ceiling_b"])
    ratios = [
        b["rate"] / min(a["rate"], p["rate"])
        for a, p, b in zip(samples["ceiling_a"], samples["ceiling_b"], samples["bridge"], strict=True)
    ]
    return {
        "size": size,
        "messages": count,
        "fill_rate": round(fill_rate, 1),
        "samples": samples,
        "medians": medians,
        "lower_ceiling": "A (consume)" if medians["ceiling_a"] <= medians["ceiling_b"] else "B (publish)",
        "ratio_of_medians": round(medians["bridge"] / lower, 4),
        "ratio_per_repeat": [round(r, 4) for r in ratios],
        "ratio_to_b_headers": round(medians["bridge"] / medians["ceiling_b_headers"], 4),
        "bridge_peak_rss_mib": max(s["peak_rss_mib"] for s in samples["bridge"]),
        "bridge_cpu_per_s_median": round(
            statistics.median(s["cpu"].get("bridge_cpu_per_s", 0.0) for s in samples["bridge"]), 3
        ),
    }


Publisher = Callable[[NatsClient, str, str, int, int], Awaitable[dict[str, Any]]]  # (nc, subject, stream, n, size)


async def publish_into_fresh_stream(
    bench: Bench, topic: str, what: str, count: int, size: int, publish: Publisher
) -> dict[str, Any]:
    _, stream, subject, group = bench.names.next(what)
    config = load_mapping(mapping_text(bench.opts, stream=stream, subject=subject, topic=topic, group=group, route="b"))
    bench.streams.append(stream)
    await create_stream(bench.js, config)
    try:
        sample = await publish(bench.nc, subject, stream, count, size)
        stored = await stored_count(bench.js, stream)
        if stored != count:
            raise RuntimeError(f"{stream}: {stored} stored, {count} published")
    finally:
        await delete_stream(bench.js, stream)
    return sample


async def memory_run(bench: Bench) -> dict[str, Any]:
    count = bench.opts.rss_messages
    bench.log(f"memory: filling a topic with {count:,} x 100 B")
    topic, fill_rate = await bench.new_topic("rss", count, 100)
    bench.log("memory: the bridge drains it")
    result = await bench.bridge_drain(topic, count, "m")
    result["fill_rate"] = round(fill_rate, 1)
    with contextlib.suppress(Exception):
        await bench.admin.delete_topics([topic])
        bench.topics.remove(topic)
    return result


def machine_info(nc: NatsClient) -> dict[str, Any]:
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
    for package in ("nats-py", "aiokafka", "uvloop", "nats-bridge"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    server = nc._server_info.get("version", "unknown")
    jars = sorted((STATE / "kafka" / "libs").glob("kafka_2.13-*.jar"))
    kafka = jars[0].stem.split("-", 1)[1] if jars else "unknown (not a compose/brokers Kafka)"
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--", "bridge")
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
        "kafka": kafka,
        "git": f"{commit}{' + uncommitted changes in bridge/' if dirty else ''}",
        "bridge_sources_sha256": sources.hexdigest()[:12],
        "loadavg_start": os.getloadavg(),
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def run(opts: Options) -> dict[str, Any]:
    nc = await nats.connect(opts.nats_url, connect_timeout=5, max_reconnect_attempts=3)
    admin = AIOKafkaAdminClient(bootstrap_servers=opts.bootstrap, request_timeout_ms=30_000)
    await admin.start()
    workdir = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    bench = Bench(opts, nc, admin, workdir)
    bench.log(f"run id {bench.names.run} (after a crash: --cleanup {bench.names.run})")
    # SIGTERM cancels the run like Ctrl-C does, so the cleanup below still runs.
    task = asyncio.current_task()
    assert task is not None

    def on_sigterm() -> None:
        bench.log("SIGTERM: stopping and cleaning up")
        task.cancel()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "command": opts.command,
        "started_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(nc),
        "settings": {
            "messages": opts.messages,
            "repeats": opts.repeats,
            "partitions": PARTITIONS,
            "window": WINDOW,
            "fetch_records": FETCH_RECORDS,
            "rss_messages": opts.rss_messages,
            "latency_rate": opts.latency_rate,
            "latency_seconds": opts.latency_seconds,
            "event_loop": type(asyncio.get_running_loop()).__module__,
        },
    }
    try:
        if "throughput" in opts.parts:
            report["throughput"] = [await throughput(bench, size) for size in SIZES]
        if "latency" in opts.parts:
            bench.log(f"latency without the bridge: {opts.latency_rate:,} msg/s for {opts.latency_seconds:g} s")
            report["latency_kafka_only"] = await latency_run(bench, through_bridge=False)
            stop_if_cancelled()
            bench.log(f"latency through the bridge: {opts.latency_rate:,} msg/s for {opts.latency_seconds:g} s")
            report["latency"] = await latency_run(bench, through_bridge=True)
            stop_if_cancelled()
        if "memory" in opts.parts:
            report["memory"] = await memory_run(bench)
    finally:
        await bench.cleanup()
        await admin.close()
        await nc.close()
        if opts.keep_logs:
            print(f"bridge logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["duration_s"] = round(time.perf_counter() - started, 1)
    report["targets"] = targets(report)
    report["run_id"] = bench.names.run
    report["_stamp"] = bench.names.stamp
    return report


# --------------------------------------------------------------------------------------- report


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for entry in report.get("throughput", []):
        ratio = entry["ratio_of_medians"]
        rows.append(
            {
                "target": f"bridge >= {TARGET_RATIO:.0%} of the lower ceiling, {_size(entry['size'])}",
                "measured": f"{ratio:.1%} of {entry['lower_ceiling']}",
                "pass": ratio >= TARGET_RATIO,
                "margin": f"{(ratio - TARGET_RATIO) * 100:+.1f} points",
            }
        )
    if "latency" in report:
        latency = report["latency"]
        p99 = latency["latency_ms"]["p99"]
        on_rate = latency["send_rate"] >= 0.95 * latency["target_rate"] and latency["missing"] == 0
        rows.append(
            {
                "target": f"p99 < {TARGET_P99_MS:g} ms at {latency['target_rate']:,} msg/s",
                "measured": f"p99 {p99:.2f} ms at {latency['send_rate']:,.0f} msg/s sent, {latency['missing']} missing",
                "pass": p99 < TARGET_P99_MS and on_rate,
                "margin": f"{p99 - TARGET_P99_MS:+.2f} ms",
            }
        )
    if "memory" in report:
        rss = report["memory"]["peak_rss_mib"]
        rows.append(
            {
                "target": f"peak RSS <= {TARGET_RSS_MIB:g} MiB draining {report['memory']['expected']:,} x 100 B",
                "measured": f"{rss:.1f} MiB",
                "pass": rss <= TARGET_RSS_MIB,
                "margin": f"{rss - TARGET_RSS_MIB:+.1f} MiB",
            }
        )
    return rows


def _size(size: int) -> str:
    return "1 KiB" if size == 1024 else f"{size} B"


def _rates(samples: list[dict[str, Any]]) -> str:
    return ", ".join(f"{s['rate']:,.0f}" for s in samples)


def _cpu_note(cpu: dict[str, float]) -> str:
    return (
        f"bridge {cpu.get('bridge_cpu_per_s', 0):.2f} CPU/s, nats-server {cpu.get('nats-server_cpu_per_s', 0):.2f}, "
        f"Kafka {cpu.get('kafka_cpu_per_s', 0):.2f}"
    )


def render(report: dict[str, Any]) -> Iterator[str]:
    """The human-readable report (markdown tables, so it pastes into bench/README.md as it is)."""
    yield from render_header(report)
    if "throughput" in report:
        yield from render_throughput(report["throughput"])
    if "latency" in report:
        yield from render_latency(report["latency"], report.get("latency_kafka_only"))
    if "memory" in report:
        memory = report["memory"]
        yield ""
        yield (
            f"Memory: the bridge draining {memory['expected']:,} x 100 B: peak RSS {memory['peak_rss_mib']:.1f} MiB "
            f"(VmHWM), at {memory['rate']:,.0f} msg/s ({memory['messages']:,} stored; {_cpu_note(memory['cpu'])})"
        )
    yield ""
    yield "Targets"
    yield ""
    yield "| target | measured | margin | result |"
    yield "|---|---|---|---|"
    for row in report["targets"]:
        yield f"| {row['target']} | {row['measured']} | {row['margin']} | {'PASS' if row['pass'] else 'FAIL'} |"


def render_header(report: dict[str, Any]) -> Iterator[str]:
    machine = report["machine"]
    packages = machine["packages"]
    settings = report["settings"]
    load_start = ", ".join(f"{x:.2f}" for x in machine["loadavg_start"])
    load_end = ", ".join(f"{x:.2f}" for x in machine["loadavg_end"])
    yield "nats-bridge Kafka -> JetStream benchmark"
    yield f"command:  {report['command']}"
    yield f"date:     {report['started_utc']} (took {report['duration_s']:.0f} s)"
    yield (
        f"machine:  {machine['nproc']} CPUs, {machine['cpu_model']}, {machine['memory']} RAM, Linux {machine['kernel']}"
    )
    yield (
        f"software: Python {machine['python']} ({settings['event_loop']}), nats-py {packages['nats-py']}, "
        f"aiokafka {packages['aiokafka']}, uvloop {packages['uvloop']}, nats-server {machine['nats_server']}, "
        f"Kafka {machine['kafka']}"
    )
    yield (
        f"bridge:   git {machine['git']} (bridge/*.py sha256 {machine['bridge_sources_sha256']}); "
        f"load average {load_start} at start, {load_end} at end"
    )
    yield (
        f"settings: {settings['partitions']} partitions, {settings['repeats']} repeats (medians), "
        f"publisher window {settings['window']}, getmany max_records {settings['fetch_records']}, "
        "file-storage streams with a 2m duplicate window"
    )


def render_throughput(entries: list[dict[str, Any]]) -> Iterator[str]:
    yield ""
    yield "Throughput, msg/s (median of the repeats; each sample in brackets)"
    yield ""
    yield (
        "| size | messages | A: aiokafka consume | B: JetStreamPublisher | B+h: B with the bridge's headers "
        "| nats-py publish_async | bridge | bridge / min(A,B) | bridge / B+h |"
    )
    yield "|---|---|---|---|---|---|---|---|---|"
    for entry in entries:
        medians, samples = entry["medians"], entry["samples"]
        reference = "-"
        if "publish_async" in medians:
            reference = f"{medians['publish_async']:,.0f} [{_rates(samples['publish_async'])}]"
        per_repeat = ", ".join(f"{r:.0%}" for r in entry["ratio_per_repeat"])
        yield (
            f"| {_size(entry['size'])} | {entry['messages']:,} "
            f"| {medians['ceiling_a']:,.0f} [{_rates(samples['ceiling_a'])}] "
            f"| {medians['ceiling_b']:,.0f} [{_rates(samples['ceiling_b'])}] "
            f"| {medians['ceiling_b_headers']:,.0f} [{_rates(samples['ceiling_b_headers'])}] "
            f"| {reference} "
            f"| {medians['bridge']:,.0f} [{_rates(samples['bridge'])}] "
            f"| **{entry['ratio_of_medians']:.0%}** of {entry['lower_ceiling'][0]} [{per_repeat}] "
            f"| {entry['ratio_to_b_headers']:.0%} |"
        )
    yield ""
    yield "Bridge drains: CPU-seconds per second while draining (median), peak RSS, clean stop"
    yield ""
    yield (
        "| size | stored / expected | bridge CPU/s | nats-server CPU/s | Kafka CPU/s | peak RSS "
        "| stop after SIGTERM | exit codes |"
    )
    yield "|---|---|---|---|---|---|---|---|"
    for entry in entries:
        drains = entry["samples"]["bridge"]
        stored = ", ".join(f"{d['messages']:,}/{d['expected']:,}" for d in drains)
        yield (
            f"| {_size(entry['size'])} | {stored} "
            f"| {_median_cpu(drains, 'bridge')} | {_median_cpu(drains, 'nats-server')} "
            f"| {_median_cpu(drains, 'kafka')} | {entry['bridge_peak_rss_mib']:.1f} MiB "
            f"| {max(d.get('stop_seconds', 0) for d in drains):.1f} s max "
            f"| {', '.join(str(d.get('exit_code')) for d in drains)} |"
        )


def render_latency(latency: dict[str, Any], baseline: dict[str, Any] | None) -> Iterator[str]:
    yield ""
    yield (
        f"Latency, 100 B at {latency['target_rate']:,} msg/s for {latency['seconds']:g} s, send time in the payload, "
        "producer linger_ms=0"
    )
    yield ""
    yield "| path | sent | send rate | received | missing | p50 | p90 | p99 | p99.9 | max |"
    yield "|---|---|---|---|---|---|---|---|---|---|"
    for run in (baseline, latency):
        if run is None:
            continue
        lat = run["latency_ms"]
        yield (
            f"| {run['path']} | {run['sent']:,} | {run['send_rate']:,.0f}/s | {run['received']:,} | {run['missing']} "
            f"| {lat['p50']:.2f} ms | {lat['p90']:.2f} ms | {lat['p99']:.2f} ms | {lat['p99.9']:.2f} ms "
            f"| {lat['max']:.2f} ms |"
        )
    yield f"(through the bridge: {_cpu_note(latency['cpu'])}; bridge peak RSS {latency['peak_rss_mib']:.1f} MiB)"


def _median_cpu(drains: list[dict[str, Any]], name: str) -> str:
    values = [d["cpu"][f"{name}_cpu_per_s"] for d in drains if f"{name}_cpu_per_s" in d["cpu"]]
    return f"{statistics.median(values):.2f}" if values else "-"


async def cleanup_run(opts: Options, run_id: str) -> None:
    """Delete the topics, streams and checkpoint keys of run `run_id` (an interrupted run's leftovers)."""
    nc = await nats.connect(opts.nats_url, connect_timeout=5)
    js = nc.jetstream(timeout=30)
    admin = AIOKafkaAdminClient(bootstrap_servers=opts.bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(f"bench-{run_id}-")]
        if topics:
            await admin.delete_topics(topics)
        streams: list[str] = []
        while page := await js.streams_info(offset=len(streams)):
            streams.extend(info.config.name or "" for info in page)
        mine = [name for name in streams if name.startswith(f"BENCH_{run_id.upper()}_")]
        for stream in mine:
            await delete_stream(js, stream)
        keys = await purge_checkpoints(js, run_id)
        print(f"deleted {len(topics)} topic(s), {len(mine)} stream(s), {keys} checkpoint key(s) of run {run_id}")
    finally:
        await admin.close()
        await nc.close()


def save(report: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"kafka_to_jetstream-{report.pop('_stamp')}.json"
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(report, indent=1) + "\n")
    temporary.replace(path)
    return path


def run_on_best_loop(main: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run on uvloop when installed: the bridge does, so the ceilings should too."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def main(argv: list[str] | None = None) -> int:
    opts = parse_options(sys.argv[1:] if argv is None else argv)
    if opts.cleanup:
        asyncio.run(cleanup_run(opts, opts.cleanup))
        return 0
    try:
        report = run_on_best_loop(run(opts))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: what the run created is deleted, nothing saved", file=sys.stderr)
        return 130
    path = save(report)
    print("\n".join(render(report)))
    print(f"\nraw samples: {path.relative_to(ROOT)}")
    return 1 if opts.strict and not all(row["pass"] for row in report["targets"]) else 0


if __name__ == "__main__":
    sys.exit(main())
