"""Helpers for the Kafka -> JetStream tests: fill topics, run the bridge, read the stream back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from aiokafka import AIOKafkaProducer
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api as js_api
from nats.js.errors import NotFoundError, ServiceUnavailableError

ROOT = Path(__file__).resolve().parents[2]


async def fill_topic(bootstrap: str, topic: str, count: int, partitions: int, *, size: int = 100) -> None:
    """Produce `count` records round-robin over `partitions`: key `k<i>`, a header, `size` bytes."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=512 * 1024, acks="all")
    await producer.start()
    try:
        pending = []
        body = b"v" * size
        for i in range(count):
            pending.append(
                await producer.send(
                    topic, body, key=f"k{i}".encode(), partition=i % partitions, headers=[("n", str(i).encode())]
                )
            )
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def write_mapping(
    path: Path,
    *,
    nats_url: str,
    bootstrap: str,
    stream: str,
    topic: str,
    group: str,
    duplicate_window: str = "2m",
    extra_from: str = "",
    ordering: str | None = None,
) -> Path:
    """A one-route mapping file copying `topic` into `stream` (one replica); `ordering` None
    leaves the route to the default ordering (pipelined into a single-replica stream)."""
    subject = stream.lower()
    ordering_line = f"\n                    ordering: {ordering}" if ordering else ""
    path.write_text(
        textwrap.dedent(f"""\
            nats:
              servers: ["{nats_url}"]
            streams:
              - name: {stream}
                subjects: ["{subject}.>"]
                duplicate_window: {duplicate_window}
            sources:
              kafka:
                type: kafka
                bootstrap_servers: ["{bootstrap}"]
            services:
              svc:
                routes:
                  - name: copy
                    source: kafka
                    from: {{topics: ["{topic}"], group: "{group}"{extra_from}}}
                    to: "{subject}.{{partition}}"{ordering_line}
            """)
    )
    return path


class BridgeProcess:
    """`nats-bridge run FILE` as a child process, the way operators run it."""

    def __init__(
        self, mapping: Path, log_path: Path, args: Sequence[str] = (), env: Mapping[str, str] | None = None
    ) -> None:
        self.mapping = mapping
        self.log_path = log_path
        self.args = tuple(args)
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bridge", "run", str(self.mapping), *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate(self, timeout: float = 60) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    async def http_url(self, timeout: float = 60) -> str:
        """The base URL of the bridge's HTTP endpoint, from its latest start-up log line (a
        restarted bridge appends to the same log, on a new port when it was given port 0)."""
        marker = "/status on http://"
        await self.wait_for_log(marker, timeout)
        text = self.log_path.read_text(errors="replace")
        start = text.rindex(marker) + len(marker)
        end = start
        while end < len(text) and (text[end].isalnum() or text[end] in ".:[]"):
            end += 1
        return "http://" + text[start:end]

    async def wait_for_log(self, text: str, timeout: float = 120) -> None:
        """Wait until the bridge's log shows `text` (e.g. that it joined its consumer group)."""
        deadline = time.monotonic() + timeout
        while text not in self.log_path.read_text(errors="replace"):
            if not self.alive():
                raise AssertionError(f"bridge exited before logging {text!r}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"bridge did not log {text!r} within {timeout}s:\n{self.log()}")
            await asyncio.sleep(0.1)


def contiguous_prefix(offsets: list[int]) -> int:
    """How many offsets 0, 1, 2, ... are all stored: the most a consumer group may have committed."""
    present = set(offsets)
    count = 0
    while count in present:
        count += 1
    return count


async def stream_count(nc: NatsClient, stream: str) -> int:
    try:
        return (await nc.jetstream().stream_info(stream)).state.messages
    except NotFoundError:
        return 0


async def wait_for_count(
    nc: NatsClient, stream: str, at_least: int, timeout: float, bridges: Iterable[BridgeProcess] = ()
) -> int:
    deadline = time.monotonic() + timeout
    while True:
        count = await stream_count(nc, stream)
        if count >= at_least:
            return count
        for bridge in bridges:
            if not bridge.alive():
                raise AssertionError(f"bridge exited early:\n{bridge.log()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"stream {stream} has {count} messages, wanted {at_least} within {timeout}s")
        await asyncio.sleep(0.05)


async def stored_records(nc: NatsClient, stream: str) -> list[tuple[int, int, int]]:
    """(partition, Kafka offset, stream sequence) of every stored message, in stream order.

    Read again from the start while JetStream is still choosing leaders (a cluster just restarted
    answers "service unavailable" to a consumer create for a few seconds): the stream is what is
    being checked, not how soon the cluster serves readers."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return await _read_stored_records(nc, stream)
        except (ServiceUnavailableError, NatsTimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)


async def _read_stored_records(nc: NatsClient, stream: str) -> list[tuple[int, int, int]]:
    js = nc.jetstream(timeout=20)
    total = (await js.stream_info(stream)).state.messages
    found: list[tuple[int, int, int]] = []
    if total == 0:
        return found
    config = js_api.ConsumerConfig(ack_policy=js_api.AckPolicy.NONE, headers_only=True)
    subscription = await js.pull_subscribe("", stream=stream, config=config)
    try:
        remaining = total
        while remaining > 0:
            batch = await subscription.fetch(min(remaining, 2000), timeout=20)
            for message in batch:
                headers = message.headers or {}
                found.append(
                    (int(headers["Kafka-Partition"]), int(headers["Kafka-Offset"]), message.metadata.sequence.stream)
                )
            remaining -= len(batch)
    finally:
        with contextlib.suppress(NatsError):  # a cluster still electing may not answer this either
            await subscription.unsubscribe()
    return found


async def stored_offsets(nc: NatsClient, stream: str) -> dict[int, list[int]]:
    """partition -> Kafka offsets in stream order, from the Kafka-* headers of every stored message."""
    found: dict[int, list[int]] = {}
    for partition, offset, _ in await stored_records(nc, stream):
        found.setdefault(partition, []).append(offset)
    return found


def describe_duplicates(records: Iterable[tuple[int, int, int]]) -> str:
    """For a failure message: each (partition, offset) stored more than once, with its sequences."""
    seqs: dict[tuple[int, int], list[int]] = {}
    for partition, offset, seq in records:
        seqs.setdefault((partition, offset), []).append(seq)
    doubled = sorted((key, found) for key, found in seqs.items() if len(found) > 1)
    if not doubled:
        return "no (partition, offset) stored twice"
    shown = "; ".join(f"p{p}@{o}: seqs {s}" for (p, o), s in doubled[:5] + doubled[-5:])
    return f"{len(doubled)} stored twice, first and last: {shown}"


async def produce_at_rate(
    bootstrap: str, topic: str, rate: int, partitions: int, stop: asyncio.Event, sent: list[int]
) -> None:
    """`rate` records a second, round robin over `partitions`, until `stop`; counts them in `sent[0]`."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        tick = 0.05
        per_tick = max(1, int(rate * tick))
        while not stop.is_set():
            started = time.monotonic()
            for _ in range(per_tick):
                await producer.send(topic, value=b"x" * 100, partition=sent[0] % partitions)
                sent[0] += 1
            await producer.flush()
            await asyncio.sleep(max(0.0, tick - (time.monotonic() - started)))
    finally:
        await producer.stop()
