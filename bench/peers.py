"""The bridge beside two Go peers, on the same machine and brokers, in one interleaved run.

Peers (built here, into a cache folder, from the Go module proxy; Maven Central for Kafka's tools):

* Benthos v4.27.0 (`github.com/benthosdev/benthos/v4`, MIT): a small `main` importing only the
  kafka, amqp09, nats, pure and io components (bench/peers/benthos/, go.mod and go.sum pinned).
* nats-kafka v1.4.2 (`github.com/nats-io/nats-kafka`, Apache-2.0): its go.mod has a `replace`
  directive, so `go install` refuses it; the module source is downloaded (`go mod download`),
  copied into the cache, patched (NATS_KAFKA_PATCHES: one line that sets a per-message
  Nats-Msg-Id, which it cannot otherwise send) and built there. Its consumer starts a new group at
  the newest offset and has no setting for it: the group's offsets are committed at 0 first.
* `org.apache.kafka:kafka-tools` (the broker's version) for ProducerPerformance, which fills the
  Kafka topics, so no Python client and none of the bridge's code produces them.
* The RabbitMQ ceiling (bench/peers/ceiling/, bench/peers_ceiling.py): a no-op Go consumer on
  `github.com/rabbitmq/amqp091-go` v1.9.0, built like the peers and named by a hash of its source.

Paths, each system and repeat interleaved (bridge, Benthos, nats-kafka or the ceiling, then again):

* Kafka -> JetStream: a fresh 6-partition topic filled with N x 100 B by ProducerPerformance,
  a fresh consumer group and a fresh stream; the bridge (`python -m bridge run`, msg_id auto =
  topic/partition/offset), Benthos `kafka_franz` -> `nats_jetstream` (max_in_flight 64, header
  Nats-Msg-Id topic/partition/offset) and nats-kafka (KafkaToJetStream, patched Nats-Msg-Id
  topic/partition/offset) drain it.
* RabbitMQ classic queue -> JetStream: a fresh durable classic queue (bound to a fresh topic
  exchange with `#`) filled with N x 100 B persistent messages carrying a message_id, by the
  RabbitMQ benchmark's aiormq filler (publisher confirms); the bridge in queue mode
  (msg_id `{message_id}`) and Benthos `amqp_0_9` (per-message acks, `nats_jetstream`
  max_in_flight 64, Nats-Msg-Id from the message_id) drain it, both with the same prefetch
  (`--prefetch`, default 1000: the bridge's default). So does the ceiling, which acks like the
  bridge settles (multiple=true every prefetch // 4 deliveries) and does nothing else: what
  RabbitMQ can hand over at all, and what that costs it. Its msg/s and meters run from its own
  first to last delivery; "stored" is what it was delivered, order inversions do not apply.

For every drain: msg/s from the stream's first and last stored timestamps; CPU seconds per
message of the system's own process, of nats-server and of the source broker (RabbitMQ's
beam.smp, Kafka's JVM; compose/brokers' pid files, else the process listening on the port), and
how many of the machine's cores were busy (/proc/stat), all between the first and the last message
stored: whether a rate was bound by the system's own core, by its broker or by the whole machine
shows there; peak RSS of the system's process; stored / expected; order inversions per partition
(Kafka: offsets read back from each stored message's Nats-Msg-Id, per partition) or per queue
(RabbitMQ: the message_id's sequence number). Medians of the repeats; the JSON has every sample.

Run `bash compose/brokers start nats rabbitmq kafka`, then
`flock /tmp/nats-bridge-bench.lock .venv/bin/python bench/peers.py` (`--quick` for a short
check, `--build-only` to build the peers only, `--help` for the rest). It is a benchmark, not a
test: nothing fails on a slow figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiormq
import nats
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata
from common import (
    BenchBase,
    BridgeRun,
    CpuMeter,
    load_mapping,
    machine_info,
    save,
    stop_if_cancelled,
)
from kafka_to_jetstream import create_topic
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from peers_ceiling import AMQP091_MODULE, AMQP091_VERSION, CEILING_SRC, CeilingRun, ack_every, source_hash
from rabbitmq_to_jetstream import ManagementApi, fill_exchange, queue_depth, vhost_of, vhost_url

ROOT = Path(__file__).resolve().parents[1]
PEERS_SRC = ROOT / "bench" / "peers"
DEFAULT_CACHE = ROOT / "bench" / ".cache" / "peers"
BENTHOS_MODULE = "github.com/benthosdev/benthos/v4"
BENTHOS_VERSION = "v4.27.0"
NATS_KAFKA_MODULE = "github.com/nats-io/nats-kafka"
NATS_KAFKA_VERSION = "v1.4.2"
PARTITIONS = 6
SIZE = 100
DEFAULT_MESSAGES = {"kafka": 200_000, "rabbitmq": 100_000}
QUICK_MESSAGES = {"kafka": 20_000, "rabbitmq": 10_000}
PATHS = ("kafka", "rabbitmq")
SYSTEMS = {
    "kafka": ("bridge", "bridge-x2", "benthos", "nats-kafka"),
    "rabbitmq": ("bridge", "bridge-x2", "benthos", "ceiling"),
}
BRIDGE_ARGS = {"bridge": (), "bridge-x2": ("--workers", "2")}  # bridge-x2: only when asked (--system)
SOURCE_BROKER = {"kafka": "kafka", "rabbitmq": "rabbitmq"}  # whose CPU is the source's (BROKER_PID_FILES)
MAX_IN_FLIGHT = 64
DEFAULT_PREFETCH = 1000  # the bridge's default RabbitMQ prefetch (--prefetch sets it for every system)

# nats-kafka v1.4.2 as published cannot do what this benchmark asks of it, so its copied source
# is patched before the build (file, old text, new text, why). Each patch must apply exactly once.
NATS_KAFKA_PATCHES = (
    (
        "server/core/connector.go",
        "\tnMsg.Data = msg.Value\n\t_, err := conn.bridge.JetStream().PublishMsg(nMsg)",
        "\tnMsg.Data = msg.Value\n"
        '\tnMsg.Header.Set("Nats-Msg-Id", fmt.Sprintf("%s/%d/%d", msg.Topic, msg.Partition, msg.Offset))\n'
        "\t_, err := conn.bridge.JetStream().PublishMsg(nMsg)",
        "equal guarantees: a per-message Nats-Msg-Id (topic/partition/offset), as the bridge and "
        "Benthos send; nats-kafka only copies Kafka record headers, and ProducerPerformance sets none",
    ),
)


@dataclass(slots=True)
class Options:
    nats_url: str
    amqp_url: str
    api_url: str
    bootstrap: str
    messages: dict[str, int]
    repeats: int
    prefetch: int
    paths: tuple[str, ...]
    systems: tuple[str, ...]
    cache: Path
    build_only: bool
    keep_logs: bool
    profile: Path | None
    command: str


def parse_options(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(
        description="nats-bridge beside Benthos and nats-kafka (Kafka, RabbitMQ -> JetStream)."
    )
    parser.add_argument("--nats-url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:14222"))
    parser.add_argument("--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:15673/"))
    parser.add_argument(
        "--api-url", default=os.environ.get("RABBITMQ_API_URL", "http://guest:guest@127.0.0.1:15680/api")
    )
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    parser.add_argument("--kafka-messages", type=int, help="Kafka path (default 200,000; --quick 20,000)")
    parser.add_argument("--rabbitmq-messages", type=int, help="RabbitMQ path (default 100,000; --quick 10,000)")
    parser.add_argument("--quick", action="store_true", help="a short check: 20,000 / 10,000 messages, 1 repeat")
    parser.add_argument("--repeats", type=int, help="repeats of each drain (default 3; --quick 1)")
    parser.add_argument(
        "--prefetch",
        type=int,
        default=DEFAULT_PREFETCH,
        help=f"RabbitMQ path: the prefetch (basic.qos) of the bridge's source, Benthos's prefetch_count and the "
        f"ceiling's (default {DEFAULT_PREFETCH}, the bridge's default)",
    )
    parser.add_argument("--only", choices=PATHS, action="append", help="run only this path (repeatable)")
    parser.add_argument(
        "--system",
        choices=("bridge", "bridge-x2", "benthos", "nats-kafka", "ceiling"),
        action="append",
        help="run only this system (repeatable); bridge-x2 is `run --workers 2` (its CPU: the supervisor and its "
        "workers), run only when named; ceiling is the no-op RabbitMQ consumer (RabbitMQ path only)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("BENCH_PEERS_CACHE", DEFAULT_CACHE)),
        help=f"where the peers are built (default {DEFAULT_CACHE.relative_to(ROOT)}, git-ignored)",
    )
    parser.add_argument("--build-only", action="store_true", help="build the peers and fetch kafka-tools, then exit")
    parser.add_argument("--keep-logs", action="store_true", help="keep the systems' logs and configs")
    parser.add_argument(
        "--profile",
        type=Path,
        help="record each bridge drain with py-spy (`pip install py-spy`) into DIR/<stream>.txt (collapsed "
        "stacks; bench/pyspy_top.py summarises them); the sampling costs the bridge a little CPU",
    )
    args = parser.parse_args(argv)
    quick = QUICK_MESSAGES if args.quick else DEFAULT_MESSAGES
    messages = {
        "kafka": args.kafka_messages or quick["kafka"],
        "rabbitmq": args.rabbitmq_messages or quick["rabbitmq"],
    }
    repeats = args.repeats or (1 if args.quick else 3)
    if min(messages.values()) < 1000 or repeats < 1:
        parser.error("use at least 1,000 messages and one repeat")
    if not 1 <= args.prefetch <= 65535:
        parser.error("--prefetch: 1 to 65,535 (basic.qos's prefetch count is 16 bits)")
    return Options(
        nats_url=args.nats_url,
        amqp_url=args.amqp_url,
        api_url=args.api_url,
        bootstrap=args.bootstrap,
        messages=messages,
        repeats=repeats,
        prefetch=args.prefetch,
        paths=tuple(args.only) if args.only else PATHS,
        systems=tuple(args.system) if args.system else ("bridge", "benthos", "nats-kafka", "ceiling"),
        cache=args.cache.resolve(),
        build_only=args.build_only,
        keep_logs=args.keep_logs,
        profile=args.profile.resolve() if args.profile else None,
        command=shlex.join([Path(sys.executable).name, *sys.argv]),
    )


# --------------------------------------------------------------------------------------- building


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def run_logged(argv: list[str], cwd: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
    with log_path.open("ab") as out:
        done = subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    if done.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{shlex.join(argv)} failed ({done.returncode}) in {cwd}:\n{tail}")


def go_env() -> dict[str, str]:
    # -mod=mod: go.sum entries missing for this Go version are fetched, not an error
    return {**os.environ, "GOFLAGS": "-mod=mod -buildvcs=false", "CGO_ENABLED": "0"}


def build_benthos(cache: Path) -> Path:
    """bench/peers/benthos (a main importing five component packages) -> <cache>/benthos-v4.27.0."""
    what = f"Benthos {BENTHOS_VERSION} ({BENTHOS_MODULE})"
    return go_build(
        PEERS_SRC / "benthos", cache, f"benthos-{BENTHOS_VERSION}", f"{what} (a few minutes the first time)"
    )


def build_ceiling(cache: Path) -> Path:
    """bench/peers/ceiling (the no-op amqp091-go consumer) -> <cache>/amqp-ceiling-<source hash>."""
    what = f"the RabbitMQ ceiling ({AMQP091_MODULE}@{AMQP091_VERSION})"
    return go_build(CEILING_SRC, cache, f"amqp-ceiling-{source_hash()}", what)


def go_build(source: Path, cache: Path, name: str, what: str) -> Path:
    """The Go main in `source`, copied into the cache and built there as <cache>/<name>, once."""
    binary = cache / name
    if binary.exists():
        return binary
    src = cache / f"{source.name}-src"
    remove_tree(src)
    shutil.copytree(source, src)
    log(f"building {what} into {binary}")
    build_log = cache / f"{source.name}-build.log"
    run_logged(["go", "build", "-trimpath", "-o", str(binary), "."], src, build_log, go_env())
    return binary


def make_writable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)


def remove_tree(root: Path) -> None:
    if root.exists():
        make_writable(root)
        shutil.rmtree(root)


def patch_hash() -> str:
    return hashlib.sha256(repr(NATS_KAFKA_PATCHES).encode()).hexdigest()[:8]


def build_nats_kafka(cache: Path) -> Path:
    """The nats-kafka module's source from the proxy, patched (NATS_KAFKA_PATCHES), built in the cache."""
    binary = cache / f"nats-kafka-{NATS_KAFKA_VERSION}-msgid-{patch_hash()}"
    if binary.exists():
        return binary
    build_log = cache / "nats-kafka-build.log"
    log(f"downloading {NATS_KAFKA_MODULE}@{NATS_KAFKA_VERSION} from the Go module proxy")
    info = json.loads(
        subprocess.run(
            ["go", "mod", "download", "-json", f"{NATS_KAFKA_MODULE}@{NATS_KAFKA_VERSION}"],
            capture_output=True,
            text=True,
            check=True,
            cwd=cache,
        ).stdout
    )
    src = cache / "nats-kafka-src"
    remove_tree(src)
    shutil.copytree(info["Dir"], src)
    make_writable(src)  # copies of the module cache are read-only
    for name, old, new, _why in NATS_KAFKA_PATCHES:
        file = src / name
        text = file.read_text()
        if text.count(old) != 1:
            raise RuntimeError(f"nats-kafka patch does not apply to {name}: its source changed")
        file.write_text(text.replace(old, new))
    log(f"building nats-kafka {NATS_KAFKA_VERSION} (patched) into {binary}")
    run_logged(["go", "build", "-trimpath", "-o", str(binary), "."], src, build_log, go_env())
    return binary


def kafka_version() -> str:
    """The Kafka version of the broker's jars (compose/.state/kafka/libs), else compose/kafka/pom.xml's."""
    state = Path(os.environ.get("BRIDGE_STATE_DIR", ROOT / "compose" / ".state"))
    for jar in sorted((state / "kafka" / "libs").glob("kafka-clients-*.jar")):
        return jar.stem.removeprefix("kafka-clients-")
    found = re.search(r"<kafka.version>([^<]+)<", (ROOT / "compose" / "kafka" / "pom.xml").read_text())
    return found.group(1) if found else "4.4.0"


def fetch_kafka_tools(cache: Path) -> Path:
    """org.apache.kafka:kafka-tools and its runtime dependencies (Maven Central) -> <cache>/kafka-tools-V/."""
    version = kafka_version()
    libs = cache / f"kafka-tools-{version}"
    if list(libs.glob("kafka-tools-*.jar")):
        return libs
    log(f"fetching org.apache.kafka:kafka-tools:{version} from Maven Central into {libs}")
    tmp = Path(tempfile.mkdtemp(prefix="kafka-tools.", dir=cache))
    run_logged(
        [
            "mvn",
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(PEERS_SRC / "kafka-tools-pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
            f"-Dkafka.version={version}",
        ],
        cache,
        cache / "kafka-tools-fetch.log",
    )
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    return libs


@dataclass(frozen=True)
class Tools:
    benthos: Path
    nats_kafka: Path
    kafka_tools: Path
    ceiling: Path
    go_version: str


def build_all(opts: Options) -> Tools:
    opts.cache.mkdir(parents=True, exist_ok=True)
    go = subprocess.run(["go", "version"], capture_output=True, text=True, check=False).stdout.strip()
    return Tools(
        build_benthos(opts.cache),
        build_nats_kafka(opts.cache),
        fetch_kafka_tools(opts.cache),
        build_ceiling(opts.cache),
        go,
    )


# --------------------------------------------------------------------------------------- processes


class PeerRun(BridgeRun):
    """Any system under test as a subprocess (argv), with BridgeRun's RSS sampling and stop."""

    def __init__(self, argv: list[str], log_path: Path, profile: Path | None = None) -> None:
        super().__init__(Path(argv[0]), log_path)
        self.argv = argv
        self.profile = profile  # py-spy's collapsed stacks of the process go here

    async def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._t0 = time.perf_counter()
        self._sampler = asyncio.create_task(self._sample())
        if self.profile is not None:
            py_spy = Path(sys.executable).with_name("py-spy")
            argv = [str(py_spy), "record", "--pid", str(self.process.pid), "--rate", "250", "--nonblocking"]
            argv += ["--format", "raw", "--output", str(self.profile)]
            with self.log_path.with_suffix(".py-spy.log").open("ab") as out:
                await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)


def pid_listening(port: int) -> int | None:
    """The pid of the process with a TCP socket listening on `port` (from /proc; None if not ours to see)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(proc.name)
    return None


# --------------------------------------------------------------------------------------- the run


class Bench(BenchBase):
    # Both sources' brokers are metered in every drain: the path's own shows what the system under
    # test costs it (SOURCE_BROKER), the idle one is part of what else kept the machine busy.
    brokers = ("nats-server", "rabbitmq", "kafka")

    def __init__(self, opts: Options, tools: Tools, nc: NatsClient, workdir: Path) -> None:
        super().__init__(opts, nc, workdir)
        self.opts: Options = opts
        self.tools = tools
        self.topics: list[str] = []
        self.admin: AIOKafkaAdminClient | None = None
        self.api = ManagementApi(opts.api_url)
        self.vhost = vhost_of(self.names.run)
        self.vhost_created = False
        urls = {"nats-server": opts.nats_url, "rabbitmq": opts.amqp_url, "kafka": opts.bootstrap}
        self.pids_by_port: dict[str, int | None] = {}
        for name, pid in CpuMeter(None, self.brokers).pids.items():
            if name in urls and pid is None:  # no compose/brokers pid file: find the broker by its port
                port = url_port(urls[name])
                self.pids_by_port[name] = pid_listening(port) if port else None

    def meter(self, bridge_pid: int | None) -> CpuMeter:
        meter = CpuMeter(bridge_pid, self.brokers)
        for name, pid in self.pids_by_port.items():
            if meter.pids.get(name) is None:
                meter.pids[name] = pid
        return meter

    def new_system(self, argv: list[str], name: str, stream: str, config: Path, text: str) -> PeerRun:
        config.write_text(text)
        profile = None
        if self.opts.profile is not None and name == "bridge":
            self.opts.profile.mkdir(parents=True, exist_ok=True)
            profile = self.opts.profile / f"{stream.lower()}.txt"
        run = PeerRun(argv, self.workdir / f"{name}-{stream.lower()}.log", profile)
        self.bridges.append(run)
        self.streams.append(stream)
        return run

    async def drain_checked(self, run: PeerRun, stream: str, expected: int, order: str) -> dict[str, Any]:
        """BenchBase.drain, with order inversions read back before the stream is deleted."""
        original = self.js.delete_stream
        inversions: dict[str, Any] = {}

        async def read_then_delete(name: str) -> bool:
            inversions.update(await count_inversions(self.js, name, order))
            return await original(name)

        self.js.delete_stream = read_then_delete  # type: ignore[method-assign]
        try:
            result = await self.drain(run, stream, expected)
        finally:
            self.js.delete_stream = original  # type: ignore[method-assign]
        result.update(per_message_cpu(result["cpu"], expected, order))
        result.update(inversions)
        result.pop("rss_mib_every_100ms", None)
        return result

    async def cleanup(self) -> None:
        await super().cleanup()
        if self.admin is not None and self.topics:
            with contextlib.suppress(Exception):
                await self.admin.delete_topics(self.topics)
        if self.vhost_created:
            with contextlib.suppress(Exception):
                await self.api.delete_vhost(self.vhost)


def url_port(url: str) -> int | None:
    """The port of a broker URL or host:port (the first, if there are several)."""
    found = re.search(r":(\d+)/?$", url.split(",", maxsplit=1)[0])
    return int(found.group(1)) if found else None


def per_message_cpu(cpu: dict[str, float], expected: int, path: str) -> dict[str, Any]:
    """A drain's CPU meters (CpuMeter.stop) as CPU µs per message of the system, nats-server and
    the path's source broker, and the machine's busy cores over the same interval: together they
    say whether a rate was bound by the system's own core, the broker or the machine."""
    figures: dict[str, Any] = {"source_broker": SOURCE_BROKER[path]}
    names = (
        ("system", "bridge_cpu_per_s"),
        ("nats_server", "nats-server_cpu_per_s"),
        ("source_broker", f"{SOURCE_BROKER[path]}_cpu_per_s"),
    )
    for name, key in names:
        if key in cpu:
            figures[f"{name}_cpu_us_per_msg"] = round(cpu[key] * cpu["wall_s"] / expected * 1e6, 2)
    figures["machine_busy_cores"] = cpu.get("machine_busy_cores")
    return figures


async def count_inversions(js: Any, stream: str, order: str) -> dict[str, Any]:
    """Read the stored messages' Nats-Msg-Id back in stream order; count, per partition (Kafka:
    ids end in /partition/offset) or per queue (RabbitMQ: ids end in -<seq>), each message whose
    position is lower than the highest one stored before it."""
    info = await js.stream_info(stream)
    total = info.state.messages
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, headers_only=True, inactive_threshold=30
    )
    sub = await js.pull_subscribe("", stream=stream, config=config)
    highest: dict[str, int] = {}
    inversions: dict[str, int] = {}
    seen = unparsed = 0
    try:
        while seen < total:
            stop_if_cancelled()
            for msg in await sub.fetch(1000, timeout=10):
                seen += 1
                msg_id = (msg.headers or {}).get("Nats-Msg-Id", "")
                if order == "kafka":
                    parts = msg_id.rsplit("/", 2)
                    lane, position = (parts[-2], parts[-1]) if len(parts) == 3 else ("", "")
                else:
                    lane, _, position = msg_id.rpartition("-")
                if not position.isdigit():
                    unparsed += 1
                    continue
                value = int(position)
                if value < highest.get(lane, -1):
                    inversions[lane] = inversions.get(lane, 0) + 1
                highest[lane] = max(value, highest.get(lane, -1))
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return {"order_inversions": sum(inversions.values()), "inversions_by_lane": inversions, "ids_unparsed": unparsed}


# --------------------------------------------------------------------------------------- Kafka


async def produce(bench: Bench, topic: str, count: int) -> dict[str, Any]:
    """Kafka's own ProducerPerformance fills `topic` (acks=all, no keys: the sticky partitioner)."""
    argv = [
        "java",
        "-Xmx256m",
        "-cp",
        f"{bench.tools.kafka_tools}/*",
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        str(count),
        "--record-size",
        str(SIZE),
        "--throughput",
        "-1",
        "--producer-props",
        f"bootstrap.servers={bench.opts.bootstrap}",
        "acks=all",
        "linger.ms=5",
        "batch.size=262144",
    ]
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"ProducerPerformance failed ({proc.returncode}):\n{out.decode(errors='replace')[-2000:]}")
    summary = [line for line in out.decode(errors="replace").splitlines() if "records sent" in line]
    return {"seconds": round(time.perf_counter() - started, 2), "summary": summary[-1] if summary else ""}


async def commit_earliest(bootstrap: str, topic: str, group: str) -> None:
    """Commit offset 0 of every partition for `group`: nats-kafka's consumer (sarama) starts a
    new group at the newest offset and has no setting for it, the others start at the oldest."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        await consumer.commit({tp: OffsetAndMetadata(0, "") for tp in parts})
    finally:
        await consumer.stop()


def kafka_bridge_mapping(opts: Options, *, stream: str, subject: str, topic: str, group: str) -> str:
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
              - name: peers
                source: kafka
                from: {{topics: ["{topic}"], group: "{group}", start: earliest}}
                to: "{subject}.{{partition}}"
        """)


def benthos_common(opts: Options) -> str:
    return textwrap.dedent("""\
        http:
          enabled: false
        logger:
          level: WARN
        metrics:
          none: {}
        """)


def kafka_benthos_config(opts: Options, *, subject: str, topic: str, group: str) -> str:
    return benthos_common(opts) + textwrap.dedent(f"""\
        input:
          kafka_franz:
            seed_brokers: ["{opts.bootstrap}"]
            topics: ["{topic}"]
            consumer_group: "{group}"
            start_from_oldest: true
        output:
          nats_jetstream:
            urls: ["{opts.nats_url}"]
            subject: '{subject}.${{! meta("kafka_partition") }}'
            headers:
              Nats-Msg-Id: '${{! meta("kafka_topic") }}/${{! meta("kafka_partition") }}/${{! meta("kafka_offset") }}'
            max_in_flight: {MAX_IN_FLIGHT}
        """)


def nats_kafka_config(opts: Options, *, subject: str, topic: str, group: str) -> str:
    server = opts.nats_url.removeprefix("nats://")
    return textwrap.dedent(f"""\
        logging: {{ Time: true, Debug: false, Trace: false, Colors: false }}
        nats: {{ Servers: ["{server}"] }}
        jetstream: {{ MaxWait: 5000 }}
        connect: [
          {{
            type: "KafkaToJetStream",
            brokers: ["{opts.bootstrap}"],
            topic: "{topic}",
            groupid: "{group}",
            subject: "{subject}.{{{{.Partition}}}}",
          }}
        ]
        """)


async def kafka_drain(bench: Bench, system: str) -> dict[str, Any]:
    opts = bench.opts
    count = opts.messages["kafka"]
    topic, stream, subject, group = bench.names.next(f"k{system.replace('-', '')[:5]}")
    assert bench.admin is not None
    await create_topic(bench.admin, topic, PARTITIONS)
    bench.topics.append(topic)
    bench.log(f"kafka/{system}: ProducerPerformance fills {topic} with {count:,} x {SIZE} B")
    produced = await produce(bench, topic, count)
    mapping = kafka_bridge_mapping(opts, stream=stream, subject=subject, topic=topic, group=group)
    config_path = bench.workdir / f"{stream.lower()}.yaml"
    if system in BRIDGE_ARGS:
        run = bridge_system(bench, system, stream, config_path, mapping)
    else:
        await bench.js.add_stream(_stream_config(mapping))  # the same stream the bridge would declare
        if system == "benthos":
            text = kafka_benthos_config(opts, subject=subject, topic=topic, group=group)
            argv = [str(bench.tools.benthos), "-c", str(config_path)]
        else:
            await commit_earliest(opts.bootstrap, topic, group)
            text = nats_kafka_config(opts, subject=subject, topic=topic, group=group)
            argv = [str(bench.tools.nats_kafka), "-c", str(config_path)]
        run = bench.new_system(argv, system, stream, config_path, text)
    bench.log(f"kafka/{system}: draining into {stream}")
    result = await bench.drain_checked(run, stream, count, "kafka")
    result["producer"] = produced
    with contextlib.suppress(Exception):
        await bench.admin.delete_topics([topic])
        bench.topics.remove(topic)
    return result


def bridge_system(bench: Bench, system: str, stream: str, config_path: Path, mapping: str) -> PeerRun:
    """`python -m bridge run` on `mapping` (with `run --workers 2` for bridge-x2), as users run it."""
    argv = [sys.executable, "-m", "bridge", "run", str(config_path), "--log-level", "warning", *BRIDGE_ARGS[system]]
    return bench.new_system(argv, system, stream, config_path, mapping)


def _stream_config(mapping: str) -> Any:
    from bridge.jetstream.declare import to_nats_config  # noqa: PLC0415

    return to_nats_config(load_mapping(mapping).streams[0])


# --------------------------------------------------------------------------------------- RabbitMQ


def rabbit_bridge_mapping(opts: Options, vhost: str, *, stream: str, subject: str, queue: str) -> str:
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
          rabbitmq:
            type: rabbitmq
            url: "{vhost_url(opts.amqp_url, vhost)}"
            prefetch: {opts.prefetch}
        services:
          bench:
            routes:
              - name: peers
                source: rabbitmq
                from: {{queue: "{queue}", mode: queue}}
                to: "{subject}.{{rk}}"
                msg_id: "{{message_id}}"
        """)


def rabbit_benthos_config(opts: Options, vhost: str, *, subject: str, queue: str) -> str:
    return benthos_common(opts) + textwrap.dedent(f"""\
        input:
          amqp_0_9:
            urls: ["{vhost_url(opts.amqp_url, vhost)}"]
            queue: "{queue}"
            prefetch_count: {opts.prefetch}
        output:
          nats_jetstream:
            urls: ["{opts.nats_url}"]
            subject: '{subject}.${{! meta("amqp_routing_key") }}'
            headers:
              Nats-Msg-Id: '${{! meta("amqp_message_id") }}'
            max_in_flight: {MAX_IN_FLIGHT}
        """)


async def rabbit_drain(bench: Bench, system: str) -> dict[str, Any]:
    opts = bench.opts
    count = opts.messages["rabbitmq"]
    tag, stream, subject, _ = bench.names.next(f"r{system[:5]}")
    url = vhost_url(opts.amqp_url, bench.vhost)
    exchange, queue = f"{tag}-x", f"{tag}-q"
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        await channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "classic"})
        await channel.queue_bind(queue, exchange, routing_key="#")
        bench.log(
            f"rabbitmq/{system}: filling classic queue {queue} with {count:,} x {SIZE} B (persistent, message_id)"
        )
        fill_rate = await fill_exchange(url, exchange, count, SIZE, tag)
        depth = await queue_depth(channel, queue)
        if depth != count:
            raise RuntimeError(f"queue {queue} holds {depth} messages, {count} published")
        if system == "ceiling":
            bench.log(f"rabbitmq/{system}: consuming {queue} (no NATS)")
            result = await ceiling_drain(bench, url, queue, count)
        else:
            mapping = rabbit_bridge_mapping(opts, bench.vhost, stream=stream, subject=subject, queue=queue)
            config_path = bench.workdir / f"{stream.lower()}.yaml"
            if system in BRIDGE_ARGS:
                run = bridge_system(bench, system, stream, config_path, mapping)
            else:
                await bench.js.add_stream(_stream_config(mapping))
                text = rabbit_benthos_config(opts, bench.vhost, subject=subject, queue=queue)
                argv = [str(bench.tools.benthos), "-c", str(config_path)]
                run = bench.new_system(argv, system, stream, config_path, text)
            bench.log(f"rabbitmq/{system}: draining into {stream}")
            result = await bench.drain_checked(run, stream, count, "rabbitmq")
        result["left_in_queue"] = await queue_depth(channel, queue)
        result["fill_rate"] = round(fill_rate, 1)
        await channel.queue_delete(queue)
        await channel.exchange_delete(exchange)
    finally:
        await connection.close()
    return result


async def ceiling_drain(bench: Bench, url: str, queue: str, count: int) -> dict[str, Any]:
    """The ceiling consumer on the filled queue, metered like drain_checked's systems (its own
    process, nats-server, RabbitMQ, the machine) but from its first delivery to its last."""
    log_path = bench.workdir / f"ceiling-{queue}.log"
    run = CeilingRun(bench.tools.ceiling, url, queue, count, bench.opts.prefetch, log_path)
    bench.bridges.append(run)  # killed by cleanup if the run is interrupted
    result = await run.drain(bench.meter, count)
    result.update(per_message_cpu(result["cpu"], count, "rabbitmq"))
    result["order_inversions"] = None  # not applicable: nothing is stored
    return result


# --------------------------------------------------------------------------------------- main


async def run(opts: Options, tools: Tools) -> dict[str, Any]:
    nc = await nats.connect(opts.nats_url, connect_timeout=5, max_reconnect_attempts=3)
    workdir = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    bench = Bench(opts, tools, nc, workdir)
    pids = ", ".join(f"{name} {pid}" for name, pid in bench.meter(None).pids.items() if name != "bridge")
    bench.log(f"run id {bench.names.run}; pids {pids}")
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    started = time.perf_counter()
    versions = {
        "benthos": f"{BENTHOS_MODULE}@{BENTHOS_VERSION}",
        "nats_kafka": f"{NATS_KAFKA_MODULE}@{NATS_KAFKA_VERSION}",
        "ceiling": f"{AMQP091_MODULE}@{AMQP091_VERSION}",
    }
    report: dict[str, Any] = {
        "command": opts.command,
        "started_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(nc, ("nats-py", "aiokafka", "aio-pika", "aiormq", "uvloop"), versions),
        "settings": {
            "messages": opts.messages,
            "size": SIZE,
            "repeats": opts.repeats,
            "partitions": PARTITIONS,
            "max_in_flight": MAX_IN_FLIGHT,
            "prefetch": opts.prefetch,
            "ceiling_ack_every": ack_every(opts.prefetch),
            "kafka_tools": tools.kafka_tools.name,
            "go": tools.go_version,
            "nats_kafka_patches": [why for *_, why in NATS_KAFKA_PATCHES],
        },
        "samples": {},
    }
    try:
        if "kafka" in opts.paths:
            bench.admin = AIOKafkaAdminClient(bootstrap_servers=opts.bootstrap, request_timeout_ms=30_000)
            await bench.admin.start()
        if "rabbitmq" in opts.paths:
            await bench.api.create_vhost(bench.vhost)
            bench.vhost_created = True
            report["machine"]["rabbitmq"] = await bench.api.version()
        for path in opts.paths:
            systems = [s for s in SYSTEMS[path] if s in opts.systems]
            samples: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
            report["samples"][path] = samples
            for repeat in range(opts.repeats):
                for system in systems:
                    stop_if_cancelled()
                    bench.log(f"{path} repeat {repeat + 1}/{opts.repeats}: {system}")
                    drain = kafka_drain if path == "kafka" else rabbit_drain
                    samples[system].append(await drain(bench, system))
    finally:
        await bench.cleanup()
        if bench.admin is not None:
            await bench.admin.close()
        await nc.close()
        if opts.keep_logs:
            print(f"logs and configs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["duration_s"] = round(time.perf_counter() - started, 1)
    report["summary"] = summarize(report["samples"])
    report["run_id"] = bench.names.run
    report["_stamp"] = bench.names.stamp
    return report


def _median(samples: list[dict[str, Any]], key: str) -> float | None:
    values = [s[key] for s in samples if s.get(key) is not None]
    return float(statistics.median(values)) if values else None


def summarize(all_samples: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for path, systems in all_samples.items():
        for system, samples in systems.items():
            summary[f"{path}/{system}"] = {
                "rate_median": _median(samples, "rate"),
                "rates": [s["rate"] for s in samples],
                "system_cpu_us_per_msg_median": _median(samples, "system_cpu_us_per_msg"),
                "nats_server_cpu_us_per_msg_median": _median(samples, "nats_server_cpu_us_per_msg"),
                "source_broker_cpu_us_per_msg_median": _median(samples, "source_broker_cpu_us_per_msg"),
                "machine_busy_cores_median": _median(samples, "machine_busy_cores"),
                "peak_rss_mib_median": _median(samples, "peak_rss_mib"),
                "stored": [s["messages"] for s in samples],
                "expected": samples[0]["expected"] if samples else None,
                "order_inversions": [s.get("order_inversions") for s in samples],
            }
    return summary


def render(report: dict[str, Any]) -> Iterator[str]:
    settings = report["settings"]
    machine = report["machine"]
    yield (
        f"nats-bridge {machine['git']} (bridge/ {machine['bridge_sources_sha256']}) beside Benthos {BENTHOS_VERSION} "
        f"and nats-kafka {NATS_KAFKA_VERSION}; {settings['repeats']} repeat(s), {SIZE} B, "
        f"RabbitMQ prefetch {settings['prefetch']}; "
        f"nats-server {machine['nats_server']}, {settings['kafka_tools']}; "
        f"load {machine['loadavg_start'][0]:.1f} -> {machine['loadavg_end'][0]:.1f} on {machine['nproc']} CPUs"
    )
    yield ""
    yield (
        "| path | system | msg/s (median) | per repeat | CPU µs/msg, system | CPU µs/msg, nats-server "
        "| CPU µs/msg, source broker | machine busy | peak RSS | stored / expected | order inversions |"
    )
    yield "|---|---|---|---|---|---|---|---|---|---|---|"
    labels = {"kafka": "Kafka -> JetStream", "rabbitmq": "RabbitMQ classic queue -> JetStream"}
    for key, row in report["summary"].items():
        path, system = key.split("/", 1)
        cells = [
            labels[path],
            system,
            _num(row["rate_median"], ",.0f"),
            ", ".join(f"{r:,.0f}" for r in row["rates"] if r),
            _num(row["system_cpu_us_per_msg_median"], ".1f"),
            _num(row["nats_server_cpu_us_per_msg_median"], ".1f"),
            _num(row["source_broker_cpu_us_per_msg_median"], ".1f"),
            f"{_num(row['machine_busy_cores_median'], '.2f')} of {machine['nproc']}",
            f"{_num(row['peak_rss_mib_median'], '.0f')} MiB",
            f"{'/'.join(f'{s:,}' for s in row['stored'])} / {row['expected']:,}",
            ", ".join("n/a" if i is None else str(i) for i in row["order_inversions"]),
        ]
        yield "| " + " | ".join(cells) + " |"
    if any(key.endswith("/ceiling") for key in report["summary"]):
        yield ""
        yield (
            f"ceiling: a no-op amqp091-go consumer (prefetch {settings['prefetch']}, multiple ack every "
            f"{settings['ceiling_ack_every']}), nothing published; its msg/s and CPU from its own first to last "
            "delivery, stored = delivered"
        )


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def main(argv: list[str] | None = None) -> int:
    opts = parse_options(sys.argv[1:] if argv is None else argv)
    tools = build_all(opts)
    log(f"peers ready: {tools.benthos}, {tools.nats_kafka}, {tools.kafka_tools}, {tools.ceiling}")
    if opts.build_only:
        return 0
    try:
        report = asyncio.run(run(opts, tools))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("interrupted; what the run created was deleted")
        return 130
    path = save(report, "peers")
    print("\n".join(render(report)))
    log(f"raw samples: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
