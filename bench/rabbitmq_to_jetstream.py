"""RabbitMQ -> JetStream benchmark: how close does the bridge come to what its two clients can do?

The same questions as bench/kafka_to_jetstream.py, for a RabbitMQ shadow route (read its
docstring and bench/README.md first). In ONE run, on the same machine and brokers, inside a
fresh RabbitMQ vhost that is deleted at the end:

* ceiling A — what Python can read from RabbitMQ: a backlog in a quorum queue consumed with
  prefetch 1000 and `ack(multiple=True)` every 500 messages, doing nothing else; once through
  aio-pika (`queue.consume`) and once through raw aiormq (`channel.basic_consume`, the layer the
  bridge takes its deliveries from);
* ceiling B — our own `JetStreamPublisher` alone (window 4096), as in the Kafka benchmark;
  beside it, for reference, "B+h": the same with the five headers the bridge sends for these
  AMQP messages;
* the bridge — `python -m bridge run FILE` (a shadow route of a topic exchange, binding `#`,
  `msg_id: auto` with `message_id` set on every message) draining a backlog that waits in its
  own queue: the queue `nats-bridge.<service>.<route>` is declared (quorum, bound `#`) before the
  exchange is filled, exactly as the bridge declares it, so it finds the backlog when it starts.
  Its rate is taken from the stream's first and last stored timestamps.

One publish into the exchange fills every queue of a size at once (each bound queue gets its
own copy): the ceiling-A queues and the bridge's queues of all repeats. Measurements are then
interleaved (A aio-pika, A aiormq, B, B+h, bridge, then again) and medians reported, with the
bridge as a share of min(A, B) for each A.

Latency: a producer publishes 100 B messages with `time.time_ns()` in the payload at a fixed
rate into a topic exchange (without publisher confirms, see `Producer`), for 10 s at each of
5,000 (the Kafka benchmark's rate), 2,000 and 1,000 msg/s; first a plain aiormq consumer of a
quorum queue bound to it (RabbitMQ alone: the floor), then the bridge's shadow queue with a
core NATS subscriber on the stream's subjects ("producer to stored"). Both listeners run in
their own process. The send rate the producer actually held is reported beside each target.
Last, the bridge drains a backlog of 300,000 x 100 B while its RSS is sampled.

Targets: bridge >= 60% of the lower ceiling; p99 < 10 ms at the achieved rate; peak RSS
<= 150 MiB. Run `bash compose/brokers start nats rabbitmq`, then
`flock /tmp/nats-bridge-bench.lock .venv/bin/python bench/rabbitmq_to_jetstream.py`
(`--quick` for a short check, `--help` for the knobs).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import functools
import json
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
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
import aiormq
import nats
from aio_pika.abc import AbstractIncomingMessage
from aiormq.abc import DeliveredMessage
from common import (
    ROOT,
    TARGET_P99_MS,
    TARGET_RATIO,
    TARGET_RSS_MIB,
    WINDOW,
    BenchBase,
    BridgeRun,
    LatencyRecorder,
    Publisher,
    ceiling_publish,
    cpu_note,
    delete_stream,
    latency_rows,
    latency_summary,
    listen_nats,
    load_mapping,
    machine_info,
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
from nats.aio.client import Client as NatsClient
from pamqp import commands as spec

from bridge.brokers.rabbitmq.names import shadow_queue_name
from bridge.config import BridgeConfig
from bridge.message import AmqpOrigin, SourceMessage
from bridge.plan import compile_plan

SIZES = (100, 1024)
DEFAULT_MESSAGES = {100: 100_000, 1024: 50_000}
QUICK_MESSAGES = 10_000
DEFAULT_RSS_MESSAGES = 300_000
QUICK_RSS_MESSAGES = 50_000
DEFAULT_LATENCY_RATES = (5000, 2000, 1000)
PREFETCH = 1000  # ceiling A; also the bridge's default (RabbitMQSource.prefetch)
ACK_EVERY = 500  # ceiling A acks with multiple=True every this many deliveries
KEYS = 6  # routing keys "0".."5", so subjects <prefix>.0 .. <prefix>.5
FILL_WINDOW = 2000  # publishes awaiting their confirm while pre-filling
SERVICE = "bench"  # the mapping's service: the bridge's queue is nats-bridge.bench.<route>
QUORUM = {"x-queue-type": "quorum"}

PARTS = ("throughput", "latency", "memory")
RABBIT_CPU = {"nats-server": "nats-server", "rabbitmq": "RabbitMQ"}


# --------------------------------------------------------------------------------------- options


@dataclass(slots=True)
class Options:
    nats_url: str
    amqp_url: str
    api_url: str
    messages: dict[int, int]
    repeats: int
    rss_messages: int
    latency_rates: tuple[int, ...]
    latency_seconds: float
    prefetch: int | None
    keep_logs: bool
    strict: bool
    command: str
    parts: tuple[str, ...] = PARTS
    latency_samples: bool = False
    cleanup: str | None = None


def parse_options(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(
        description="RabbitMQ -> JetStream benchmark of nats-bridge: ceilings, bridge throughput, latency, memory.",
    )
    parser.add_argument("--nats-url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:14222"))
    parser.add_argument("--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:15673/"))
    parser.add_argument(
        "--api-url",
        default=os.environ.get("RABBITMQ_API_URL", "http://guest:guest@127.0.0.1:15680/api"),
        help="RabbitMQ management API (creates and deletes the run's vhost)",
    )
    parser.add_argument(
        "--messages", type=int, help="messages per size (default 100,000 for 100 B and 50,000 for 1 KiB)"
    )
    parser.add_argument("--quick", action="store_true", help="a short check: 10,000 messages, 50,000 for RSS, 5 s")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each throughput measurement (default 3)")
    parser.add_argument("--rss-messages", type=int, help="backlog drained for the memory figure (default 300,000)")
    parser.add_argument(
        "--latency-rate",
        type=int,
        action="append",
        help="msg/s of a latency run (repeatable; default 5000, 2000 and 1000, in that order)",
    )
    parser.add_argument("--latency-seconds", type=float, help="length of the latency run (default 10 s)")
    parser.add_argument(
        "--prefetch",
        type=int,
        help="the bridge source's prefetch (default: the bridge's own default, 1000); ceiling A keeps 1000",
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
        amqp_url=args.amqp_url,
        api_url=args.api_url,
        messages=messages,
        repeats=args.repeats,
        rss_messages=rss,
        latency_rates=tuple(args.latency_rate or DEFAULT_LATENCY_RATES),
        latency_seconds=seconds,
        prefetch=args.prefetch,
        keep_logs=args.keep_logs,
        strict=args.strict,
        command=shlex.join([Path(sys.executable).name, *sys.argv]),
        parts=tuple(args.only) if args.only else PARTS,
        latency_samples=args.latency_samples,
        cleanup=args.cleanup,
    )


def vhost_of(run_id: str) -> str:
    return f"bench-{run_id}"


def vhost_url(amqp_url: str, vhost: str) -> str:
    """The AMQP URL with its path replaced by `vhost`."""
    parts = urlsplit(amqp_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), parts.query, ""))


def mapping_text(opts: Options, *, vhost: str, stream: str, subject: str, exchange: str, route: str) -> str:
    """A one-route mapping: a shadow of `exchange` (binding `#`) -> `<subject>.<routing key>`.

    The vhost goes into the URL's path, not into the source's `vhost` field: the bridge passes
    that field to aio_pika.connect() as `virtualhost=`, which aio-pika ignores when it is given
    a URL (as it is), so the bridge would use the URL's vhost ("/") instead.
    """
    prefetch = f"\n    prefetch: {opts.prefetch}" if opts.prefetch else ""
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
            url: "{vhost_url(opts.amqp_url, vhost)}"{{prefetch}}
        services:
          {SERVICE}:
            routes:
              - name: {route}
                source: rabbitmq
                from: {{exchange: "{exchange}", type: topic, bindings: ["#"]}}
                to: "{subject}.{{rk}}"
                msg_id: auto
        """).replace("{prefetch}", prefetch)


# --------------------------------------------------------------------------------------- RabbitMQ


class ManagementApi:
    """The few calls of RabbitMQ's management HTTP API this needs (stdlib HTTP, in a thread)."""

    def __init__(self, api_url: str) -> None:
        parts = urlsplit(api_url)
        self.user = parts.username or "guest"
        password = parts.password or "guest"
        host = parts.hostname or "127.0.0.1"
        netloc = f"{host}:{parts.port}" if parts.port else host
        self.base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        token = base64.b64encode(f"{self.user}:{password}".encode()).decode()
        self._auth = f"Basic {token}"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        request.add_header("Authorization", self._auth)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read()
        except urllib.error.HTTPError as error:
            if method == "DELETE" and error.code == 404:
                return None
            raise RuntimeError(f"RabbitMQ API {method} {path}: {error.code} {error.read()[:200]!r}") from None
        return json.loads(text) if text else None

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, self._call, method, path, body)

    async def create_vhost(self, vhost: str) -> None:
        name = quote(vhost, safe="")
        await self.call("PUT", f"/vhosts/{name}", {"description": "nats-bridge benchmark, deleted at its end"})
        user = quote(self.user, safe="")
        await self.call("PUT", f"/permissions/{name}/{user}", {"configure": ".*", "write": ".*", "read": ".*"})

    async def delete_vhost(self, vhost: str) -> None:
        await self.call("DELETE", f"/vhosts/{quote(vhost, safe='')}")

    async def version(self) -> str:
        overview = await self.call("GET", "/overview")
        return str(overview.get("rabbitmq_version", "unknown"))


async def declare_queue(channel: aiormq.abc.AbstractChannel, name: str, exchange: str) -> None:
    """A durable quorum queue bound to `exchange` with `#`: how the bridge declares its shadow queue."""
    await channel.queue_declare(name, durable=True, arguments=QUORUM)
    await channel.queue_bind(name, exchange, routing_key="#")


async def queue_depth(channel: aiormq.abc.AbstractChannel, name: str) -> int:
    """Messages ready in a queue (passive declare; unacknowledged ones are not counted)."""
    ok = await channel.queue_declare(name, passive=True)
    return int(ok.message_count or 0)


def properties(message_id: str) -> spec.Basic.Properties:
    return spec.Basic.Properties(delivery_mode=2, message_id=message_id)


async def fill_exchange(url: str, exchange: str, count: int, size: int, tag: str) -> float:
    """Publish `count` messages of `size` bytes (routing keys "0".."5", message_id `<tag>-<i>`)
    with publisher confirms, `FILL_WINDOW` awaiting their confirm at a time; return msg/s."""
    connection = await aiormq.connect(url)
    body = b"v" * size
    started = time.perf_counter()
    try:
        channel = await connection.channel(publisher_confirms=True)
        for start in range(0, count, FILL_WINDOW):
            stop_if_cancelled()
            confirms = await asyncio.gather(
                *(
                    channel.basic_publish(
                        body, exchange=exchange, routing_key=str(i % KEYS), properties=properties(f"{tag}-{i}")
                    )
                    for i in range(start, min(count, start + FILL_WINDOW))
                )
            )
            if not all(isinstance(confirm, spec.Basic.Ack) for confirm in confirms):
                raise RuntimeError(f"RabbitMQ refused (nacked) messages while filling {exchange}")
    finally:
        await connection.close()
    return count / (time.perf_counter() - started)


class Stopwatch:
    """Counts deliveries; first/last delivery times; `done` once `expected` arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.first = self.last = 0.0
        self.done = asyncio.Event()

    def tick(self) -> bool:
        """Count one delivery; True when it is time to ack (every ACK_EVERY, and the last)."""
        self.count += 1
        if self.count == 1:
            self.first = time.perf_counter()
        if self.count == self.expected:
            self.last = time.perf_counter()
            self.done.set()
            return True
        return self.count % ACK_EVERY == 0

    async def wait(self, what: str) -> dict[str, Any]:
        try:
            await asyncio.wait_for(self.done.wait(), 300)
        except TimeoutError:
            raise RuntimeError(f"{what} read {self.count} of {self.expected} messages in 300 s") from None
        return {
            "rate": round((self.count - 1) / (self.last - self.first), 1),
            "messages": self.count,
            "seconds_first_to_last": round(self.last - self.first, 3),
        }


async def ceiling_aiopika(url: str, queue_name: str, expected: int) -> dict[str, Any]:
    """Ceiling A through aio-pika: `queue.consume`, prefetch 1000, ack(multiple) every 500."""
    clock = Stopwatch(expected)
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.declare_queue(queue_name, passive=True)

        async def on_message(message: AbstractIncomingMessage) -> None:
            if clock.tick():
                await message.ack(multiple=True)

        consumer_tag = await queue.consume(on_message)
        result = await clock.wait("aio-pika")
        await queue.cancel(consumer_tag)
    finally:
        await connection.close()
    return result


async def ceiling_aiormq(url: str, queue_name: str, expected: int) -> dict[str, Any]:
    """Ceiling A through aiormq: `basic_consume`, prefetch 1000, basic_ack(multiple) every 500."""
    clock = Stopwatch(expected)
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.basic_qos(prefetch_count=PREFETCH)

        async def on_message(message: DeliveredMessage) -> None:
            if clock.tick():
                await channel.basic_ack(message.delivery_tag, multiple=True)  # type: ignore[arg-type]

        ok = await channel.basic_consume(queue_name, on_message, no_ack=False)
        result = await clock.wait("aiormq")
        await channel.basic_cancel(ok.consumer_tag)  # type: ignore[arg-type]
    finally:
        await connection.close()
    return result


def amqp_headers(exchange: str, tag: str) -> Callable[[int], dict[str, str]]:
    """Headers the bridge gives message i of `fill_exchange` (checked against its mapping: `header_check`)."""

    def headers(i: int) -> dict[str, str]:
        message_id = f"{tag}-{i}"
        return {
            "Amqp-Exchange": exchange,
            "Amqp-Routing-Key": str(i % KEYS),
            "Amqp-Delivery-Mode": "2",
            "Amqp-Message-Id": message_id,
            "Nats-Msg-Id": message_id,
        }

    return headers


def header_check(config: BridgeConfig, exchange: str, queue: str, tag: str) -> dict[str, Any]:
    """Map message 0 with the bridge's own code: are B+h's headers the ones the bridge sends?"""
    (route,) = compile_plan(config).routes
    origin = AmqpOrigin(exchange, "0", queue, {"delivery_mode": 2, "message_id": f"{tag}-0"})
    mapped = route.map(SourceMessage(origin, b"v"))
    ours = amqp_headers(exchange, tag)(0)
    return {"bridge": dict(mapped.headers), "b_h": ours, "same": dict(mapped.headers) == ours}


# --------------------------------------------------------------------------------------- the run


class Bench(BenchBase):
    """Shared state of one run: connections, the vhost, names, and everything to clean up."""

    brokers = ("nats-server", "rabbitmq")

    def __init__(self, opts: Options, nc: NatsClient, api: ManagementApi, workdir: Path) -> None:
        super().__init__(opts, nc, workdir)
        self.opts: Options = opts
        self.api = api
        self.vhost = vhost_of(self.names.run)
        self.url = vhost_url(opts.amqp_url, self.vhost)
        self.vhost_created = False
        self.connection: aiormq.abc.AbstractConnection | None = None
        self._channel: aiormq.abc.AbstractChannel | None = None

    async def open(self) -> None:
        await self.api.create_vhost(self.vhost)
        self.vhost_created = True
        self.connection = await aiormq.connect(self.url)

    async def channel(self) -> aiormq.abc.AbstractChannel:
        """The run's admin channel (a new one if a failed passive declare closed the last)."""
        assert self.connection is not None
        if self._channel is None or self._channel.is_closed:
            self._channel = await self.connection.channel()
        return self._channel

    async def exchange(self, name: str) -> str:
        await (await self.channel()).exchange_declare(name, exchange_type="topic", durable=True)
        return name

    async def queue(self, exchange: str, what: str) -> str:
        name = self.names.next(what)[0]
        await declare_queue(await self.channel(), name, exchange)
        return name

    def prepare_bridge(self, exchange: str, what: str) -> tuple[BridgeRun, str, BridgeConfig, str]:
        """A bridge with a one-route mapping for `exchange`; also its shadow queue's name."""
        _, stream, subject, _ = self.names.next(what)
        route = f"r{self.names.run}{stream.rsplit('_', 1)[-1].lower()}"
        text = mapping_text(self.opts, vhost=self.vhost, stream=stream, subject=subject, exchange=exchange, route=route)
        config = load_mapping(text)
        return self.new_bridge(text, stream), stream, config, shadow_queue_name(SERVICE, route)

    async def depth(self, queue: str) -> int:
        return await queue_depth(await self.channel(), queue)

    async def delete_queue(self, queue: str) -> None:
        with contextlib.suppress(aiormq.exceptions.AMQPError):
            await (await self.channel()).queue_delete(queue)

    async def bridge_drain(self, bridge: BridgeRun, stream: str, queue: str, expected: int) -> dict[str, Any]:
        """The bridge drains its pre-filled queue; also what is left in the queue after it stopped."""
        result = await self.drain(bridge, stream, expected)
        result["left_in_queue"] = await self.depth(queue)
        await self.delete_queue(queue)
        return result

    async def cleanup(self) -> None:
        await super().cleanup()
        if self.connection is not None:
            with contextlib.suppress(Exception):
                await self.connection.close()
        if self.vhost_created:
            await self.api.delete_vhost(self.vhost)


async def throughput(bench: Bench, size: int) -> dict[str, Any]:
    opts = bench.opts
    count = opts.messages[size]
    exchange = await bench.exchange(f"s{size}")
    queues: dict[str, list[str]] = {"aiopika": [], "aiormq": []}
    bridges = []
    for _ in range(opts.repeats):
        queues["aiopika"].append(await bench.queue(exchange, "apika"))
        queues["aiormq"].append(await bench.queue(exchange, "aormq"))
        bridge, stream, config, queue = bench.prepare_bridge(exchange, "d")
        await declare_queue(await bench.channel(), queue, exchange)
        bridges.append((bridge, stream, queue))
    check = header_check(config, exchange, queue, f"s{size}")
    if not check["same"]:
        bench.log(f"note: B+h headers differ from the bridge's: {check}")
    n_queues = 3 * opts.repeats
    bench.log(f"{size} B: publishing {count:,} messages into exchange {exchange} ({n_queues} queues get a copy)")
    fill_rate = await fill_exchange(bench.url, exchange, count, size, f"s{size}")
    for name in [*queues["aiopika"], *queues["aiormq"], *(queue for _, _, queue in bridges)]:
        if (depth := await bench.depth(name)) != count:
            raise RuntimeError(f"queue {name} holds {depth} messages, {count} published")
    samples: dict[str, list[dict[str, Any]]] = {
        "ceiling_a_aiopika": [],
        "ceiling_a_aiormq": [],
        "ceiling_b": [],
        "ceiling_b_headers": [],
        "bridge": [],
    }
    plain = functools.partial(ceiling_publish, spread=KEYS)
    with_headers = functools.partial(ceiling_publish, spread=KEYS, headers_for=amqp_headers(exchange, f"s{size}"))
    for repeat in range(opts.repeats):
        for kind, consume in (("aiopika", ceiling_aiopika), ("aiormq", ceiling_aiormq)):
            queue = queues[kind][repeat]
            samples[f"ceiling_a_{kind}"].append(await consume(bench.url, queue, count))
            await bench.delete_queue(queue)
            stop_if_cancelled()
        samples["ceiling_b"].append(await publish_into_fresh_stream(bench, exchange, "b", count, size, plain))
        samples["ceiling_b_headers"].append(
            await publish_into_fresh_stream(bench, exchange, "bh", count, size, with_headers)
        )
        bridge, stream, queue = bridges[repeat]
        samples["bridge"].append(await bench.bridge_drain(bridge, stream, queue, count))
        stop_if_cancelled()
        last = {name: values[-1]["rate"] for name, values in samples.items()}
        bench.log(
            f"{size} B run {repeat + 1}/{opts.repeats}: consume aio-pika {last['ceiling_a_aiopika']:,.0f}, "
            f"aiormq {last['ceiling_a_aiormq']:,.0f}, publish {last['ceiling_b']:,.0f} "
            f"(with the bridge's headers {last['ceiling_b_headers']:,.0f}), bridge {last['bridge']:,.0f} msg/s"
        )
    medians = {name: median_of(values) for name, values in samples.items() if values}
    entry: dict[str, Any] = {
        "size": size,
        "messages": count,
        "queues_filled": n_queues,
        "fill_rate": round(fill_rate, 1),
        "samples": samples,
        "medians": medians,
        "header_check": check,
    }
    for kind, label in (("aiopika", "aio-pika"), ("aiormq", "aiormq")):
        a = medians[f"ceiling_a_{kind}"]
        lower = min(a, medians["ceiling_b"])
        per_repeat = [
            bridge["rate"] / min(consume["rate"], publish["rate"])
            for consume, publish, bridge in zip(
                samples[f"ceiling_a_{kind}"], samples["ceiling_b"], samples["bridge"], strict=True
            )
        ]
        entry[f"vs_{kind}"] = {
            "lower_ceiling": f"A {label} (consume)" if a <= medians["ceiling_b"] else "B (publish)",
            "ratio_of_medians": round(medians["bridge"] / lower, 4),
            "ratio_per_repeat": [round(r, 4) for r in per_repeat],
        }
    entry["ratio_to_b_headers"] = round(medians["bridge"] / medians["ceiling_b_headers"], 4)
    entry["bridge_peak_rss_mib"] = max(s["peak_rss_mib"] for s in samples["bridge"])
    entry["bridge_cpu_per_s_median"] = round(
        statistics.median(s["cpu"].get("bridge_cpu_per_s", 0.0) for s in samples["bridge"]), 3
    )
    return entry


async def publish_into_fresh_stream(
    bench: Bench, exchange: str, what: str, count: int, size: int, publish: Publisher
) -> dict[str, Any]:
    _, stream, subject, _ = bench.names.next(what)
    config = load_mapping(
        mapping_text(bench.opts, vhost=bench.vhost, stream=stream, subject=subject, exchange=exchange, route="b")
    )
    return await bench.publish_into_fresh_stream(config, subject, publish, count, size)


async def memory_run(bench: Bench) -> dict[str, Any]:
    count = bench.opts.rss_messages
    exchange = await bench.exchange("rss")
    bridge, stream, _config, queue = bench.prepare_bridge(exchange, "m")
    await declare_queue(await bench.channel(), queue, exchange)
    bench.log(f"memory: publishing {count:,} x 100 B into the bridge's queue")
    fill_rate = await fill_exchange(bench.url, exchange, count, 100, "rss")
    bench.log("memory: the bridge drains it")
    result = await bench.bridge_drain(bridge, stream, queue, count)
    result["fill_rate"] = round(fill_rate, 1)
    return result


# --------------------------------------------------------------------------------------- latency


def _listener_process(kind: str, address: str, name: str, conn: Connection) -> None:
    """Child process: receives the measured messages and records (seq, sent_ns, received_ns).

    `kind` "nats": a core NATS subscriber on subject `name`; "amqp": an aiormq consumer of queue
    `name` at AMQP URL `address` (prefetch 1000, each message acked), the baseline without the
    bridge. Protocol on `conn` as in the Kafka benchmark: "ready", "warm" (one probe came
    through), then "stop" from the parent and the samples back.
    """
    run_on_best_loop(_listen(kind, address, name, conn))


async def _listen(kind: str, address: str, name: str, conn: Connection) -> None:
    recorder = LatencyRecorder(conn, 1)
    if kind == "nats":
        await listen_nats(address, name, conn, recorder)
    else:
        connection = await aiormq.connect(address)
        channel = await connection.channel()
        await channel.basic_qos(prefetch_count=PREFETCH)

        async def on_message(message: DeliveredMessage) -> None:
            recorder.record(message.body, time.time_ns())
            await channel.basic_ack(message.delivery_tag)  # type: ignore[arg-type]

        await channel.basic_consume(name, on_message, no_ack=False)
        conn.send("ready")
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
        await connection.close()
    conn.send(recorder.received)
    conn.close()


class Producer:
    """Publishes into the latency exchange, each message written out before the next is made.

    No publisher confirms: with a confirm channel, aiormq's basic_publish waits for the confirm,
    so not waiting per message takes a task per message, and at 5,000 msg/s those tasks alone
    put tens of milliseconds into the producer (measured while writing this). A message that
    did not arrive shows in the "missing" column.
    """

    def __init__(self, url: str, exchange: str) -> None:
        self.url = url
        self.exchange = exchange
        self.connection: aiormq.abc.AbstractConnection | None = None
        self.channel: aiormq.abc.AbstractChannel | None = None
        self.probes = 0

    async def start(self) -> None:
        self.connection = await aiormq.connect(self.url)
        self.channel = await self.connection.channel(publisher_confirms=False)

    async def send(self, body: bytes, seq: int, message_id: str) -> None:
        assert self.channel is not None
        await self.channel.basic_publish(
            body, exchange=self.exchange, routing_key=str(seq % KEYS), properties=properties(message_id), wait=False
        )

    async def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):
                await self.connection.close()


async def _warm_up(producer: Producer, conn: Connection, bridge: BridgeRun | None) -> None:
    """Send a probe every 200 ms until the listener has seen one (the bridge declares its queue first)."""
    deadline = time.monotonic() + 60
    while not conn.poll(0):
        stop_if_cancelled()
        if (bridge is not None and not bridge.alive()) or time.monotonic() > deadline:
            tail = bridge.log_tail() if bridge is not None else ""
            raise RuntimeError(f"nothing comes through after 60 s\n{tail}")
        producer.probes += 1
        await producer.send(payload(b"W", 0, 100), producer.probes, f"w-{producer.probes}")
        await asyncio.sleep(0.2)
    if (answer := conn.recv()) != "warm":
        raise RuntimeError(f"the latency listener said {answer!r}")


async def _send_at_rate(producer: Producer, rate: int, total: int) -> float:
    """Send `total` timestamped messages at `rate` msg/s (1 ms ticks); return the seconds it took."""
    sent = 0
    started = time.perf_counter()
    while sent < total:
        stop_if_cancelled()
        due = min(total, int((time.perf_counter() - started) * rate) + 1)
        while sent < due:
            await producer.send(payload(b"M", sent, 100), sent, f"m-{sent}")
            sent += 1
        await asyncio.sleep(0.001)
    return time.perf_counter() - started


async def _until_stored(bench: Bench, stream: str, last: bytes, limit: float) -> float:
    """Wait until the stream's last message starts with `last` (the bridge caught up); seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        stop_if_cancelled()
        info = await bench.js.stream_info(stream)
        if info.state.messages and (await bench.js.get_msg(stream, info.state.last_seq)).data.startswith(last):
            break
        await asyncio.sleep(0.1)
    return time.perf_counter() - started


def start_listener(kind: str, address: str, name: str) -> tuple[multiprocessing.process.BaseProcess, Connection]:
    """The listener process (spawned: no state shared with this one) and our end of its pipe."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    listener = context.Process(target=_listener_process, args=(kind, address, name, child), daemon=True)
    listener.start()
    child.close()  # the child holds its end: its exit is then EOF here, not a hang
    return listener, parent


async def latency_run(bench: Bench, exchange: str, rate: int, through_bridge: bool) -> dict[str, Any]:
    """A producer at a fixed rate into `exchange`; a listener process takes receive times.

    Without the bridge (the baseline), the listener consumes a fresh quorum queue bound to the
    exchange; through it, the bridge declares its shadow queue when it starts and the listener
    is a core NATS subscriber on the stream's subjects. Only one of the two queues is bound at
    a time, so RabbitMQ does the same work in both.
    """
    opts = bench.opts
    bridge: BridgeRun | None = None
    stream = queue = ""
    if through_bridge:
        bridge, stream, config, queue = bench.prepare_bridge(exchange, "latstream")
        kind, address, name = "nats", opts.nats_url, config.streams[0].subjects[0]
    else:
        queue = await bench.queue(exchange, "latbase")
        kind, address, name = "amqp", bench.url, queue
    listener, parent = start_listener(kind, address, name)
    producer = Producer(bench.url, exchange)
    await producer.start()
    total = int(rate * opts.latency_seconds)
    catch_up = 0.0
    try:
        await receive(parent, 60)  # "ready"
        if bridge is not None:
            await bridge.start()
        await _warm_up(producer, parent, bridge)
        await asyncio.sleep(1.0)
        meter = bench.meter(bridge.pid if bridge is not None else None)
        meter.start()
        send_seconds = await _send_at_rate(producer, rate, total)
        await asyncio.sleep(1.0)  # stragglers
        if bridge is not None:  # a bridge that fell behind gets up to 60 s more
            catch_up = await _until_stored(bench, stream, b"M%011d" % (total - 1), 60)
        cpu = meter.stop()
        parent.send("stop")
        received: list[tuple[int, int, int]] = await receive(parent, 60)
        hwm = bridge.hwm_kib() if bridge is not None else 0
    finally:
        await producer.close()
        stopped = await bridge.stop() if bridge is not None else {}
        listener.join(10)
        if listener.is_alive():
            listener.kill()
        if stream:
            await delete_stream(bench.js, stream)
        await bench.delete_queue(queue)
    result = {
        "path": "RabbitMQ producer -> bridge -> core NATS subscriber"
        if through_bridge
        else "RabbitMQ producer -> aiormq consumer",
        "target_rate": rate,
        "seconds": opts.latency_seconds,
        "sent": total,
        "send_rate": round(total / send_seconds, 1),
        "catch_up_s": round(catch_up, 2),
        **latency_summary(received, total),
        "cpu": cpu,
        **stopped,
    }
    if opts.latency_samples:
        result["samples_seq_sent_ns_received_ns"] = received
    if bridge is not None:
        result["peak_rss_mib"] = round(max(hwm, bridge.peak_sampled_kib) / 1024, 1)
    return result


# --------------------------------------------------------------------------------------- main


async def run(opts: Options) -> dict[str, Any]:
    nc = await nats.connect(opts.nats_url, connect_timeout=5, max_reconnect_attempts=3)
    api = ManagementApi(opts.api_url)
    workdir = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    bench = Bench(opts, nc, api, workdir)
    bench.log(f"run id {bench.names.run}, vhost {bench.vhost} (after a crash: --cleanup {bench.names.run})")
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
        "machine": machine_info(
            nc,
            ("nats-py", "aio-pika", "aiormq", "pamqp", "uvloop", "nats-bridge"),
            {"rabbitmq": await api.version()},
        ),
        "settings": {
            "messages": opts.messages,
            "repeats": opts.repeats,
            "routing_keys": KEYS,
            "ceiling_a_prefetch": PREFETCH,
            "ceiling_a_ack_every": ACK_EVERY,
            "bridge_prefetch": opts.prefetch or "default (1000)",
            "window": WINDOW,
            "queues": "quorum",
            "rss_messages": opts.rss_messages,
            "latency_rates": opts.latency_rates,
            "latency_seconds": opts.latency_seconds,
            "event_loop": type(asyncio.get_running_loop()).__module__,
        },
    }
    try:
        await bench.open()
        if "throughput" in opts.parts:
            report["throughput"] = [await throughput(bench, size) for size in SIZES]
        if "latency" in opts.parts:
            exchange = await bench.exchange("lat")
            report["latency"] = []
            for rate in opts.latency_rates:
                bench.log(f"latency without the bridge: {rate:,} msg/s for {opts.latency_seconds:g} s")
                alone = await latency_run(bench, exchange, rate, through_bridge=False)
                stop_if_cancelled()
                bench.log(f"latency through the bridge: {rate:,} msg/s for {opts.latency_seconds:g} s")
                bridged = await latency_run(bench, exchange, rate, through_bridge=True)
                stop_if_cancelled()
                report["latency"].append({"rate": rate, "rabbitmq_only": alone, "bridge": bridged})
        if "memory" in opts.parts:
            report["memory"] = await memory_run(bench)
    finally:
        await bench.cleanup()
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
        for kind, label in (("aiormq", "aiormq"), ("aiopika", "aio-pika")):
            versus = entry[f"vs_{kind}"]
            ratio = versus["ratio_of_medians"]
            rows.append(
                {
                    "target": f"bridge >= {TARGET_RATIO:.0%} of min(A {label}, B), {size_label(entry['size'])}",
                    "measured": f"{ratio:.1%} of {versus['lower_ceiling']}",
                    "pass": ratio >= TARGET_RATIO,
                    "margin": f"{(ratio - TARGET_RATIO) * 100:+.1f} points",
                }
            )
    for run in report.get("latency", []):
        latency = run["bridge"]
        p99 = latency["latency_ms"]["p99"]
        rows.append(
            {
                "target": f"p99 < {TARGET_P99_MS:g} ms at the achieved rate ({run['rate']:,} msg/s asked)",
                "measured": f"p99 {p99:.2f} ms at {latency['send_rate']:,.0f} msg/s sent, {latency['missing']} missing",
                "pass": p99 < TARGET_P99_MS and latency["missing"] == 0,
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


def render(report: dict[str, Any]) -> Iterator[str]:
    """The human-readable report (markdown tables, so it pastes into bench/README.md as it is)."""
    yield from render_header(report)
    if "throughput" in report:
        yield from render_throughput(report["throughput"])
    if "latency" in report:
        yield from render_latency(report["latency"], report["settings"]["latency_seconds"])
    if "memory" in report:
        memory = report["memory"]
        yield ""
        yield (
            f"Memory: the bridge draining {memory['expected']:,} x 100 B: peak RSS {memory['peak_rss_mib']:.1f} MiB "
            f"(VmHWM), at {memory['rate']:,.0f} msg/s ({memory['messages']:,} stored, "
            f"{memory['left_in_queue']} left in the queue; {cpu_note(memory['cpu'], RABBIT_CPU)})"
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
    yield "nats-bridge RabbitMQ -> JetStream benchmark"
    yield f"command:  {report['command']}"
    yield f"date:     {report['started_utc']} (took {report['duration_s']:.0f} s)"
    yield (
        f"machine:  {machine['nproc']} CPUs, {machine['cpu_model']}, {machine['memory']} RAM, Linux {machine['kernel']}"
    )
    yield (
        f"software: Python {machine['python']} ({settings['event_loop']}), nats-py {packages['nats-py']}, "
        f"aio-pika {packages['aio-pika']}, aiormq {packages['aiormq']}, pamqp {packages['pamqp']}, "
        f"uvloop {packages['uvloop']}, nats-server {machine['nats_server']}, RabbitMQ {machine['rabbitmq']}"
    )
    yield (
        f"bridge:   git {machine['git']} (bridge/*.py sha256 {machine['bridge_sources_sha256']}); "
        f"load average {load_start} at start, {load_end} at end"
    )
    yield (
        f"settings: quorum queues, {settings['repeats']} repeats (medians), ceiling A prefetch "
        f"{settings['ceiling_a_prefetch']} with ack(multiple) every {settings['ceiling_a_ack_every']}, bridge "
        f"prefetch {settings['bridge_prefetch']}, publisher window {settings['window']}, file-storage streams "
        "with a 2m duplicate window"
    )


def render_throughput(entries: list[dict[str, Any]]) -> Iterator[str]:
    yield ""
    yield "Throughput, msg/s (median of the repeats; each sample in brackets)"
    yield ""
    yield (
        "| size | messages | A: aio-pika consume | A: aiormq consume | B: JetStreamPublisher "
        "| B+h: B with the bridge's headers | bridge | bridge / min(A aiormq, B) | bridge / min(A aio-pika, B) "
        "| bridge / B+h |"
    )
    yield "|---|---|---|---|---|---|---|---|---|---|"
    for entry in entries:
        medians, samples = entry["medians"], entry["samples"]
        cells = [size_label(entry["size"]), f"{entry['messages']:,}"]
        for name in ("ceiling_a_aiopika", "ceiling_a_aiormq", "ceiling_b", "ceiling_b_headers", "bridge"):
            cells.append(f"{medians[name]:,.0f} [{rates_text(samples[name])}]")
        for kind in ("aiormq", "aiopika"):
            versus = entry[f"vs_{kind}"]
            per_repeat = ", ".join(f"{r:.0%}" for r in versus["ratio_per_repeat"])
            lower = versus["lower_ceiling"].split(" (")[0]
            cells.append(f"**{versus['ratio_of_medians']:.0%}** of {lower} [{per_repeat}]")
        cells.append(f"{entry['ratio_to_b_headers']:.0%}")
        yield "| " + " | ".join(cells) + " |"
    yield ""
    yield "Bridge drains: CPU-seconds per second while draining (median), peak RSS, clean stop"
    yield ""
    yield (
        "| size | stored / expected | left in queue | bridge CPU/s | nats-server CPU/s | RabbitMQ CPU/s | peak RSS "
        "| stop after SIGTERM | exit codes |"
    )
    yield "|---|---|---|---|---|---|---|---|---|"
    for entry in entries:
        drains = entry["samples"]["bridge"]
        stored = ", ".join(f"{d['messages']:,}/{d['expected']:,}" for d in drains)
        yield (
            f"| {size_label(entry['size'])} | {stored} | {', '.join(str(d['left_in_queue']) for d in drains)} "
            f"| {median_cpu(drains, 'bridge')} | {median_cpu(drains, 'nats-server')} "
            f"| {median_cpu(drains, 'rabbitmq')} | {entry['bridge_peak_rss_mib']:.1f} MiB "
            f"| {max(d.get('stop_seconds', 0) for d in drains):.1f} s max "
            f"| {', '.join(str(d.get('exit_code')) for d in drains)} |"
        )
    fills = ", ".join(
        f"{size_label(e['size'])} {e['fill_rate']:,.0f} msg/s into {e['queues_filled']} queues" for e in entries
    )
    yield f"(pre-fill with publisher confirms: {fills})"


def render_latency(runs: list[dict[str, Any]], seconds: float) -> Iterator[str]:
    yield ""
    yield (
        f"Latency, 100 B for {seconds:g} s at each rate, send time in the payload, producer without publisher "
        "confirms; RabbitMQ alone, then through the bridge"
    )
    yield ""
    yield from latency_rows(run[path] for run in runs for path in ("rabbitmq_only", "bridge"))
    for run in runs:
        latency = run["bridge"]
        yield (
            f"(through the bridge at {run['rate']:,}/s: {cpu_note(latency['cpu'], RABBIT_CPU)}; bridge peak RSS "
            f"{latency['peak_rss_mib']:.1f} MiB; the stream had the last message {latency['catch_up_s'] + 1:.1f} s "
            "after the last send)"
        )


async def cleanup_run(opts: Options, run_id: str) -> None:
    """Delete the vhost, streams and checkpoint keys of run `run_id` (an interrupted run's leftovers)."""
    nc = await nats.connect(opts.nats_url, connect_timeout=5)
    js = nc.jetstream(timeout=30)
    try:
        await ManagementApi(opts.api_url).delete_vhost(vhost_of(run_id))
        mine = await run_streams(js, run_id)
        for stream in mine:
            await delete_stream(js, stream)
        keys = await purge_checkpoints(js, run_id)
        print(f"deleted vhost {vhost_of(run_id)}, {len(mine)} stream(s), {keys} checkpoint key(s) of run {run_id}")
    finally:
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
    path = save(report, "rabbitmq_to_jetstream")
    print("\n".join(render(report)))
    print(f"\nraw samples: {path.relative_to(ROOT)}")
    return 1 if opts.strict and not all(row["pass"] for row in report["targets"]) else 0


if __name__ == "__main__":
    sys.exit(main())
