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
import contextlib
import datetime as dt
import functools
import multiprocessing
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import nats
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from common import (
    BATCH,
    ROOT,
    STATE,
    TARGET_P99_MS,
    TARGET_RATIO,
    TARGET_RSS_MIB,
    WINDOW,
    BenchBase,
    BridgeRun,
    LatencyRecorder,
    MiB,
    Publisher,
    ceiling_publish,
    cpu_note,
    delete_stream,
    latency_rows,
    latency_summary,
    listen_nats,
    load_mapping,
    median_cpu,
    median_of,
    payload,
    purge_checkpoints,
    rates_text,
    receive,
    run_on_best_loop,
    run_streams,
    save,
    size_label,
    stop_if_cancelled,
)
from common import machine_info as common_machine_info
from nats.aio.client import Client as NatsClient

from bridge.config import BridgeConfig

SIZES = (100, 1024)
DEFAULT_MESSAGES = {100: 200_000, 1024: 100_000}
QUICK_MESSAGES = 20_000
DEFAULT_RSS_MESSAGES = 1_000_000
QUICK_RSS_MESSAGES = 100_000
PARTITIONS = 6
FETCH_RECORDS = BATCH  # the bridge's default batch (PipelineSettings.batch_size)

PARTS = ("throughput", "latency", "memory")


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
    ordering: str | None = None  # the route's `ordering:`; None leaves it to the default
    replicas: int = 1  # the stream's


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
        "--ordering", choices=("pipelined", "strict", "batched"), help="the route's ordering (default: none given)"
    )
    parser.add_argument("--replicas", type=int, default=1, help="the stream replicas (3: a cluster --nats-url)")
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
        ordering=args.ordering,
        replicas=args.replicas,
    )


# --------------------------------------------------------------------------------------- names


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
            replicas: {opts.replicas}
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
        """) + (f"        ordering: {opts.ordering}\n" if opts.ordering else "")


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
    """The options bridge/brokers/kafka/source.py uses, so ceiling A is what aiokafka allows the bridge."""
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


def record_headers(topic: str) -> Callable[[int], dict[str, str]]:
    """Headers for record i of the ceiling B+h: the bridge's, as for a record of partition i % 6."""
    return lambda i: bridge_like_headers(topic, i % PARTITIONS, i // PARTITIONS)


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


class Bench(BenchBase):
    """Shared state of one run: connections, names, and everything to clean up."""

    brokers = ("nats-server", "kafka")

    def __init__(self, opts: Options, nc: NatsClient, admin: AIOKafkaAdminClient, workdir: Path) -> None:
        super().__init__(opts, nc, workdir)
        self.opts: Options = opts
        self.admin = admin
        self.topics: list[str] = []

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
        return self.new_bridge(text, stream), stream, config

    async def bridge_drain(self, topic: str, expected: int, what: str) -> dict[str, Any]:
        """The bridge drains a pre-filled topic into a fresh stream; rate between first and last stored."""
        bridge, stream, _config = self.prepare_bridge(topic, what)
        return await self.drain(bridge, stream, expected)

    async def cleanup(self) -> None:
        await super().cleanup()
        if self.topics:
            with contextlib.suppress(Exception):
                await self.admin.delete_topics(self.topics)


# --------------------------------------------------------------------------------------- latency


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
    recorder = LatencyRecorder(conn, PARTITIONS)
    if kind == "nats":
        await listen_nats(address, name, conn, recorder)
    else:
        loop = asyncio.get_running_loop()
        consumer = AIOKafkaConsumer(name, **consumer_options(address, f"{name}-baseline"))
        await consumer.start()
        conn.send("ready")
        stop = loop.run_in_executor(None, conn.recv)
        while not stop.done():
            batches = await consumer.getmany(timeout_ms=50, max_records=FETCH_RECORDS)
            now = time.time_ns()
            for records in batches.values():
                for rec in records:
                    recorder.record(rec.value or b"", now)
        await consumer.stop()
    conn.send(recorder.received)
    conn.close()


async def _warm_up(producer: AIOKafkaProducer, topic: str, conn: Connection, bridge: BridgeRun | None) -> None:
    """Send a probe to every partition every 200 ms until the listener has seen one from each."""
    deadline = time.monotonic() + 60
    while not conn.poll(0):
        stop_if_cancelled()
        if (bridge is not None and not bridge.alive()) or time.monotonic() > deadline:
            tail = bridge.log_tail() if bridge is not None else ""
            raise RuntimeError(f"nothing comes through after 60 s\n{tail}")
        for partition in range(PARTITIONS):
            await producer.send(topic, payload(b"W", partition, 100), partition=partition)
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
            futures.append(await producer.send(topic, payload(b"M", sent, 100), partition=sent % PARTITIONS))
            sent += 1
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - started
    await asyncio.gather(*futures)
    return elapsed


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
        await receive(parent, 60)  # "ready"
        if bridge is not None:
            await bridge.start()
        await _warm_up(producer, topic, parent, bridge)
        await asyncio.sleep(1.0)
        meter = bench.meter(bridge.pid if bridge is not None else None)
        meter.start()
        send_seconds = await _send_at_rate(producer, topic, opts.latency_rate, total)
        await asyncio.sleep(1.0)  # stragglers
        cpu = meter.stop()
        parent.send("stop")
        received: list[tuple[int, int, int]] = await receive(parent, 60)
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
    plain = functools.partial(ceiling_publish, spread=PARTITIONS)
    with_headers = functools.partial(ceiling_publish, spread=PARTITIONS, headers_for=record_headers(topic))
    for repeat in range(1, opts.repeats + 1):
        _, _, _, group = bench.names.next("a")
        samples["ceiling_a"].append(await ceiling_consume(opts.bootstrap, topic, group, count))
        stop_if_cancelled()
        samples["ceiling_b"].append(await publish_into_fresh_stream(bench, topic, "b", count, size, plain))
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


async def publish_into_fresh_stream(
    bench: Bench, topic: str, what: str, count: int, size: int, publish: Publisher
) -> dict[str, Any]:
    _, stream, subject, group = bench.names.next(what)
    config = load_mapping(mapping_text(bench.opts, stream=stream, subject=subject, topic=topic, group=group, route="b"))
    return await bench.publish_into_fresh_stream(config, subject, publish, count, size)


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
    jars = sorted((STATE / "kafka" / "libs").glob("kafka_2.13-*.jar"))
    kafka = jars[0].stem.split("-", 1)[1] if jars else "unknown (not a compose/brokers Kafka)"
    return common_machine_info(nc, ("nats-py", "aiokafka", "uvloop", "nats-bridge"), {"kafka": kafka})


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
                "target": f"bridge >= {TARGET_RATIO:.0%} of the lower ceiling, {size_label(entry['size'])}",
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


KAFKA_CPU = {"nats-server": "nats-server", "kafka": "Kafka"}


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
            f"(VmHWM), at {memory['rate']:,.0f} msg/s "
            f"({memory['messages']:,} stored; {cpu_note(memory['cpu'], KAFKA_CPU)})"
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
            reference = f"{medians['publish_async']:,.0f} [{rates_text(samples['publish_async'])}]"
        per_repeat = ", ".join(f"{r:.0%}" for r in entry["ratio_per_repeat"])
        yield (
            f"| {size_label(entry['size'])} | {entry['messages']:,} "
            f"| {medians['ceiling_a']:,.0f} [{rates_text(samples['ceiling_a'])}] "
            f"| {medians['ceiling_b']:,.0f} [{rates_text(samples['ceiling_b'])}] "
            f"| {medians['ceiling_b_headers']:,.0f} [{rates_text(samples['ceiling_b_headers'])}] "
            f"| {reference} "
            f"| {medians['bridge']:,.0f} [{rates_text(samples['bridge'])}] "
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
            f"| {size_label(entry['size'])} | {stored} "
            f"| {median_cpu(drains, 'bridge')} | {median_cpu(drains, 'nats-server')} "
            f"| {median_cpu(drains, 'kafka')} | {entry['bridge_peak_rss_mib']:.1f} MiB "
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
    yield from latency_rows((baseline, latency))
    yield (
        f"(through the bridge: {cpu_note(latency['cpu'], KAFKA_CPU)}; "
        f"bridge peak RSS {latency['peak_rss_mib']:.1f} MiB)"
    )


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
        mine = await run_streams(js, run_id)
        for stream in mine:
            await delete_stream(js, stream)
        keys = await purge_checkpoints(js, run_id)
        print(f"deleted {len(topics)} topic(s), {len(mine)} stream(s), {keys} checkpoint key(s) of run {run_id}")
    finally:
        await admin.close()
        await nc.close()


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
    path = save(report, "kafka_to_jetstream")
    print("\n".join(render(report)))
    print(f"\nraw samples: {path.relative_to(ROOT)}")
    return 1 if opts.strict and not all(row["pass"] for row in report["targets"]) else 0


if __name__ == "__main__":
    sys.exit(main())
