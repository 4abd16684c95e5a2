"""What durability costs in JetStream: publish throughput of R1 and R3 streams, each with the
servers' default `sync_interval` (flush every 2 minutes, acknowledge before) and with
`sync_interval: always` (fsync before every acknowledgement).

Why: a RabbitMQ quorum queue confirms a message only once a majority of its members fsynced it;
JetStream by default acknowledges before it fsyncs (Jepsen, NATS 2.12.1, 2025-12), and an R1
stream is one disk. `dry-run --connect` and `status` warn about that downgrade and name the
fix (`replicas: 3`, `sync_interval: always`); MIGRATION.md's durability table puts these
measured costs beside it, so a team can see what keeping a quorum queue's promise costs.

The publisher is the bridge's own (bridge.jetstream.publisher.JetStreamPublisher, window 4096,
each message with a unique Nats-Msg-Id: bench/common.py's `ceiling_publish`, the "B" ceiling of
kafka_to_jetstream.py), pipelined; the rate is messages over first publish to last PubAck.

Where each row runs (every server is the same nats-server binary, on this machine):

- R1, default sync / R1, sync always: two private single servers started here, identical but
  for `sync_interval: always`, each with its own store under a temporary directory;
- R3, default sync: compose/brokers' 3-node `nats-cluster`, held with the lock the failover
  tests and chaos schedules take (tests/chaos/brokers.py cluster_lock), never stopped here;
- R3, sync always: a private 3-node cluster started here with `sync_interval: always`
  (`--no-private-cluster` skips the row, saying so).

Each server's setting is read back from its /varz (bridge.durability.sync_from_varz, what
`dry-run --connect` uses) and printed beside the row. Runs are interleaved (every row once, then
again) so a noisy minute on this shared machine hits all of them; the median is reported.

    bash compose/brokers start nats-cluster
    flock /tmp/nats-bridge-bench.lock .venv/bin/python bench/durability_cost.py [--messages N] [--repeats R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import common
import nats
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js import api as js_api

from bridge.durability.sync import SyncSetting, sync_from_varz

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/chaos and tests/private_nats, as bench/chaos.py reaches them

from tests.chaos.brokers import BrokerError, cluster_lock, start_cluster  # noqa: E402
from tests.private_nats import nats_server_binary  # noqa: E402

SPREAD = 6  # subjects per stream, as the other ceilings publish
# What the figures depend on: a change to one of these, uncommitted, is recorded with the result.
MEASURED = ("bridge/jetstream/publisher.py", "bridge/durability.py", "bench/common.py", "bench/durability_cost.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PrivateServers:
    """One nats-server, or a cluster of them, started from config files in `workdir`."""

    label: str
    workdir: Path
    nodes: int
    sync_always: bool
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    monitors: list[int] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{port}" for port in self.ports]

    @property
    def monitor_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.monitors]

    def start(self) -> None:
        self.ports = [free_port() for _ in range(self.nodes)]
        self.monitors = [free_port() for _ in range(self.nodes)]
        routes = [free_port() for _ in range(self.nodes)] if self.nodes > 1 else []
        for index in range(self.nodes):
            directory = self.workdir / f"{self.label}-n{index + 1}"
            directory.mkdir(parents=True, exist_ok=True)
            sync = "  sync_interval: always\n" if self.sync_always else ""
            text = (
                f'server_name: "{self.label}-n{index + 1}"\n'
                f'listen: "127.0.0.1:{self.ports[index]}"\n'
                f'http: "127.0.0.1:{self.monitors[index]}"\n'
                "jetstream {\n"
                f'  store_dir: "{directory / "jetstream"}"\n'
                "  max_memory_store: 256MB\n"
                "  max_file_store: 8GB\n"
                f"{sync}"
                "}\n"
            )
            if routes:
                others = ", ".join(f'"nats-route://127.0.0.1:{port}"' for i, port in enumerate(routes) if i != index)
                text += f'cluster {{\n  name: "{self.label}"\n  listen: "127.0.0.1:{routes[index]}"\n'
                text += f"  routes: [{others}]\n}}\n"
            config = directory / "nats.conf"
            config.write_text(text)
            log = (directory / "nats.log").open("ab")
            self.processes.append(
                subprocess.Popen(
                    [nats_server_binary(), "-c", str(config)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 30
        for port in self.ports:
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                        raise RuntimeError(
                            f"{self.label}: nats-server did not start (logs in {self.workdir})"
                        ) from None
                    time.sleep(0.1)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)
        self.processes.clear()


@dataclass
class Row:
    name: str
    urls: list[str]
    monitors: list[str]
    replicas: int
    samples: list[dict[str, Any]] = field(default_factory=list)
    sync: str = ""
    skipped: str = ""


def read_sync(monitors: Sequence[str]) -> str:
    """Every server's sync setting as /varz shows it; one text when they agree."""
    texts = []
    for url in monitors:
        with urllib.request.urlopen(f"{url}/varz", timeout=5) as response:
            setting: SyncSetting = sync_from_varz(json.loads(response.read()))
        texts.append(setting.text())
    return texts[0] if len(set(texts)) == 1 else ", ".join(texts)


async def connect(urls: Sequence[str]) -> NatsClient:
    return await nats.connect(servers=list(urls), connect_timeout=5, max_reconnect_attempts=3, name="durability-cost")


async def wait_for_jetstream(urls: Sequence[str], replicas: int) -> None:
    """A new cluster answers JetStream requests only once it has a meta leader: add and delete a
    probe stream until that works (within a minute)."""
    nc = await connect(urls)
    try:
        js = nc.jetstream(timeout=5)
        deadline = time.monotonic() + 60
        probe = js_api.StreamConfig(name="DCOST_PROBE", subjects=["dcost.probe"], num_replicas=replicas)
        while True:
            try:
                await js.add_stream(probe)
            except (NatsError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
            else:
                await js.delete_stream("DCOST_PROBE")
                return
    finally:
        await nc.close()


async def measure(row: Row, run: str, repeat: int, count: int, size: int) -> dict[str, Any]:
    """One pipelined publish of `count` messages into a fresh stream of `row.replicas` copies."""
    stream = f"DCOST_{run}_{row.name.replace(' ', '_').replace(',', '').upper()}_{repeat}"
    subject = f"dcost.{run}.{repeat}.{row.replicas}.{len(row.samples)}"
    nc = await connect(row.urls)
    js = nc.jetstream(timeout=10)
    try:
        await js.add_stream(
            js_api.StreamConfig(
                name=stream,
                subjects=[f"{subject}.>"],
                num_replicas=row.replicas,
                storage=js_api.StorageType.FILE,
            )
        )
        result = await common.ceiling_publish(nc, subject, stream, count, size, spread=SPREAD)
        stored = (await js.stream_info(stream)).state.messages
        if stored != count:
            raise RuntimeError(f"{row.name}: {stored} of {count} messages stored")
        return result
    finally:
        try:
            await js.delete_stream(stream)
        finally:
            await nc.close()


def table(rows: Sequence[Row]) -> list[str]:
    base = statistics.median(s["rate"] for s in rows[0].samples) if rows[0].samples else None
    lines = [
        "| stream | servers' sync_interval (/varz) | msg/s, median | runs | vs R1 default sync |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        if row.skipped:
            lines.append(f"| {row.name} | - | skipped: {row.skipped} | | |")
            continue
        median = statistics.median(s["rate"] for s in row.samples)
        ratio = f"{median / base:.2f}x ({(median / base - 1) * 100:+.0f}%)" if base else "-"
        if row is rows[0]:
            ratio = "1.00x"
        runs = ", ".join(f"{s['rate']:,.0f}" for s in row.samples)
        lines.append(f"| {row.name} | {row.sync} | {median:,.0f} | {runs} | {ratio} |")
    return lines


async def main(args: argparse.Namespace) -> int:
    command = " ".join(shlex.quote(part) for part in [".venv/bin/python", "bench/durability_cost.py", *sys.argv[1:]])
    started = time.monotonic()
    run = f"{int(time.time()) % 100000:05d}"
    workdir = Path(tempfile.mkdtemp(prefix="durability-cost-"))
    single_default = PrivateServers("dcost-r1-default", workdir, 1, sync_always=False)
    single_always = PrivateServers("dcost-r1-always", workdir, 1, sync_always=True)
    cluster_always = PrivateServers("dcost-r3-always", workdir, 3, sync_always=True)
    private = [single_default, single_always] + ([cluster_always] if args.private_cluster else [])
    try:
        for servers in private:
            servers.start()
        compose = start_cluster()
        rows = [
            Row("R1 file, default sync", single_default.urls, single_default.monitor_urls, 1),
            Row("R1 file, sync always", single_always.urls, single_always.monitor_urls, 1),
            Row("R3 file, default sync", list(compose.urls), list(compose.monitors), 3),
            Row("R3 file, sync always", cluster_always.urls, cluster_always.monitor_urls, 3),
        ]
        if not args.private_cluster:
            rows[3].skipped = "--no-private-cluster"
            print("R3, sync always: skipped (--no-private-cluster)", file=sys.stderr)
        measured = [row for row in rows if not row.skipped]
        for row in measured:
            await wait_for_jetstream(row.urls, row.replicas)
            row.sync = read_sync(row.monitors)
        with cluster_lock(compose):
            for repeat in range(args.repeats):
                for row in measured:
                    result = await measure(row, run, repeat, args.messages, args.size)
                    row.samples.append(result)
                    print(
                        f"  run {repeat + 1}/{args.repeats} {row.name}: {result['rate']:,.0f} msg/s "
                        f"({result['seconds']:.1f} s)",
                        file=sys.stderr,
                    )
        elapsed = time.monotonic() - started
        print(f"\nDurability cost: {args.messages:,} messages of {args.size} B, pipelined (JetStreamPublisher,")
        print(f"window {common.WINDOW}), median of {args.repeats} interleaved runs; {elapsed:.0f} s in all")
        print(f"command: {command}")
        print(f"nats-server {nats_version()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}\n")
        for line in table(rows):
            print(line)
        report = {
            "_stamp": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
            "command": command,
            "messages": args.messages,
            "size": args.size,
            "repeats": args.repeats,
            "window": common.WINDOW,
            "nats_server": nats_version(),
            "git": common.git("rev-parse", "--short", "HEAD")
            + (" + uncommitted changes" if common.git("status", "--porcelain", "--", *MEASURED) else ""),
            "nproc": os.cpu_count(),
            "loadavg_end": os.getloadavg(),
            "seconds": round(elapsed, 1),
            "rows": [
                {
                    "name": row.name,
                    "replicas": row.replicas,
                    "sync_interval": row.sync,
                    "skipped": row.skipped,
                    "samples": row.samples,
                    "median_rate": statistics.median(s["rate"] for s in row.samples) if row.samples else None,
                }
                for row in rows
            ],
        }
        if not args.no_save:
            print(f"\nraw samples: {common.save(report, 'durability_cost').relative_to(ROOT)}")
        return 0
    finally:
        for servers in private:
            servers.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def nats_version() -> str:
    try:
        out = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True, check=False)
    except OSError:
        return "unknown"
    return out.stdout.strip().removeprefix("nats-server: ") or "unknown"


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=50_000, help="messages per run (default 50,000)")
    parser.add_argument("--size", type=int, default=256, help="payload bytes (default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row; the median is reported (default 3)")
    parser.add_argument(
        "--no-private-cluster",
        dest="private_cluster",
        action="store_false",
        help="skip the R3 sync-always row (it starts 3 more nats-servers)",
    )
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/durability_cost-*.json")
    return parser.parse_args(argv)


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(parse())))
    except BrokerError as error:  # the compose cluster would not start, or its lock stayed taken
        print(f"durability_cost: {error}", file=sys.stderr)
        sys.exit(2)
