"""How long the bridge holds a RabbitMQ delivery, and what that makes of its rate at a prefetch.

    flock /tmp/nats-bridge-bench.lock .venv/bin/python bench/rabbitmq_hold.py
    flock /tmp/nats-bridge-bench.lock .venv/bin/python bench/rabbitmq_hold.py --prefetch 1000 --prefetch 3000

A queue route acknowledges a delivery only after JetStream stored it, and RabbitMQ sends no more
than `prefetch` unacknowledged deliveries: so at most `prefetch` messages are between RabbitMQ's
sending and its receiving the ack, and the rate is at most prefetch / (the time each one spends
there) — Little's law. That time is the bridge's part (decoding, mapping, publishing, the PubAck,
the ack) and RabbitMQ's (taking the ack, sending the next deliveries, their way over the socket).

For each prefetch this fills a classic queue as bench/peers.py does (100 B persistent messages
with a message_id), drains it with the bridge as bench/peers.py runs it, and records in the bridge
process, through hooks on its own methods, when each delivery arrived (the receiver decoded it),
when it was handed to the NATS client, when its PubAck was read and when its ack was written:

- **hold, ms** — per message (every 97th), from its arrival to its ack written, in four steps:
  arrived -> sent (waiting behind the deliveries decoded and mapped with it), sent -> stored
  (nats-server and the PubAck's way back), stored -> ack called (the settle), ack call -> written;
- **cycle, ms** — prefetch / rate: the time one prefetch's worth takes to go round;
- **RabbitMQ's part, ms** — the cycle less the mean hold: what the broker takes from an ack to
  the deliveries it frees arriving;
- CPU of the bridge, RabbitMQ and nats-server per message, and the machine's busy cores.

Results as JSON under bench/results/. The hooks cost the bridge a little; compare figures within
one run. It is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiormq
import nats
from common import RESULTS, CpuMeter, delete_stream
from peers import SIZE, per_message_cpu, rabbit_bridge_mapping
from rabbitmq_to_jetstream import fill_exchange

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_EVERY = 97  # messages between two hold samples
EDGE = 2_000  # messages left out at each end: start-up and the last, unfilled cycle


def child(argv: list[str], events_path: str) -> None:
    """Run the bridge CLI in this process with the hooks in place; write the events at exit."""
    from bridge.brokers.rabbitmq import source  # noqa: PLC0415
    from bridge.commands.app import main  # noqa: PLC0415
    from bridge.jetstream import publisher  # noqa: PLC0415

    events: list[tuple[float, str, int]] = []
    clock = time.perf_counter
    on_direct = source.RabbitMQRouteSource._on_direct
    settle = source.RabbitMQRouteSource.settle
    publish = publisher.JetStreamPublisher.publish
    on_answer = publisher.JetStreamPublisher._on_answer

    def hooked_on_direct(self: Any, tag: int, *rest: Any) -> None:
        events.append((clock(), "arrived", tag))
        on_direct(self, tag, *rest)

    async def hooked_settle(self: Any, watermarks: Any) -> None:
        position = watermarks.get(self.lane) or 0
        events.append((clock(), "ack_called", position))
        await settle(self, watermarks)
        events.append((clock(), "acked", position))

    async def hooked_publish(self: Any, entries: Any, **kwargs: Any) -> Any:
        left = await publish(self, entries, **kwargs)
        events.append((clock(), "sent", self.stats.sent))
        return left

    def hooked_on_answer(self: Any, *args: Any) -> None:
        on_answer(self, *args)
        events.append((clock(), "stored", self.stats.stored))

    source.RabbitMQRouteSource._on_direct = hooked_on_direct  # type: ignore[method-assign]
    source.RabbitMQRouteSource.settle = hooked_settle  # type: ignore[method-assign]
    publisher.JetStreamPublisher.publish = hooked_publish  # type: ignore[method-assign]
    publisher.JetStreamPublisher._on_answer = hooked_on_answer  # type: ignore[method-assign]

    def dump() -> None:
        Path(events_path).write_text(json.dumps(events))

    atexit.register(dump)
    sys.argv = ["nats-bridge", *argv]
    main()


def first_reached(series: list[tuple[float, int]], count: int) -> float | None:
    """When a counter (times and running maxima, in order) first reached `count`."""
    low, high = 0, len(series)
    while low < high:
        middle = (low + high) // 2
        if series[middle][1] < count:
            low = middle + 1
        else:
            high = middle
    return series[low][0] if low < len(series) else None


def holds(events: list[tuple[float, str, int]]) -> dict[str, dict[str, float]]:
    """Median, p90 and mean of each step of the hold, in ms, over every SAMPLE_EVERY-th message."""
    series: dict[str, list[tuple[float, int]]] = {}
    for at, kind, count in events:
        line = series.setdefault(kind, [])
        line.append((at, max(count, line[-1][1]) if line else count))
    steps = ("arrived", "sent", "stored", "ack_called", "acked")
    if any(step not in series for step in steps):
        raise RuntimeError(f"the bridge recorded no {[s for s in steps if s not in series]} events")
    total = series["arrived"][-1][1]
    rows: dict[str, list[float]] = {
        name: [] for name in ("arrived->sent", "sent->stored", "stored->ack called", "ack call->written", "hold")
    }
    for number in range(EDGE, total - EDGE, SAMPLE_EVERY):
        times = [first_reached(series[step], number) for step in steps]
        if any(at is None for at in times):
            continue
        arrived, sent, stored, called, acked = (at for at in times if at is not None)
        for name, span in zip(
            rows, (sent - arrived, stored - sent, called - stored, acked - called, acked - arrived), strict=True
        ):
            rows[name].append(span * 1e3)
    return {
        name: {
            "median": round(statistics.median(values), 2),
            "p90": round(sorted(values)[int(len(values) * 0.9)], 2),
            "mean": round(statistics.fmean(values), 2),
        }
        for name, values in rows.items()
        if values
    }


async def drain(opts: argparse.Namespace, prefetch: int, round_number: int) -> dict[str, Any]:
    """Fill a queue, drain it with the hooked bridge at `prefetch`; the figures of that drain."""
    tag = f"hold{os.getpid()}x{round_number}x{prefetch}"
    exchange, queue, stream = f"{tag}-x", f"{tag}-q", tag.upper()
    connection = await aiormq.connect(opts.amqp_url)
    nc = await nats.connect(opts.nats_url)
    js = nc.jetstream()
    try:
        channel = await connection.channel()
        await channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        await channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "classic"})
        await channel.queue_bind(queue, exchange, routing_key="#")
        await fill_exchange(opts.amqp_url, exchange, opts.messages, SIZE, tag)
        settings = argparse.Namespace(nats_url=opts.nats_url, amqp_url=opts.amqp_url, prefetch=prefetch)
        mapping = rabbit_bridge_mapping(settings, "/", stream=stream, subject=tag, queue=queue)  # type: ignore[arg-type]
        cpu, events = await run_hooked(js, mapping, stream, opts.messages)
        info = await js.stream_info(stream)
        first = await js.get_msg(stream, info.state.first_seq)
        last = await js.get_msg(stream, info.state.last_seq)
        assert first.time is not None
        assert last.time is not None
        rate = (info.state.messages - 1) / (last.time - first.time).total_seconds()
    finally:
        await delete_stream(js, stream)
        await nc.close()
        channel = await connection.channel()
        await channel.queue_delete(queue)
        await channel.exchange_delete(exchange)
        await connection.close()
    steps = holds(events)
    cycle = prefetch / rate * 1e3
    return {
        "prefetch": prefetch,
        "rate": round(rate, 1),
        "stored": info.state.messages,
        "cycle_ms": round(cycle, 2),
        "rabbitmq_part_ms": round(cycle - steps["hold"]["mean"], 2),
        "hold_ms": steps,
        "cpu": cpu,
        **per_message_cpu(cpu, opts.messages, "rabbitmq"),  # as bench/peers.py reports its drains
    }


async def run_hooked(
    js: Any, mapping: str, stream: str, expected: int
) -> tuple[dict[str, float], list[tuple[float, str, int]]]:
    """Run the hooked bridge on `mapping` until `stream` holds `expected` messages; its CPU over
    the drain (from the first stored) and its events."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-hold-"))
    (workdir / "mapping.yaml").write_text(mapping)
    events_path = workdir / "events.json"
    with (workdir / "bridge.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--child", str(events_path), "run", str(workdir / "mapping.yaml"),
            "--log-level", "warning", cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        meter = CpuMeter(process.pid, ("nats-server", "rabbitmq"))
        started = time.perf_counter()
        while await _stored(js, stream) == 0:
            if process.returncode is not None or time.perf_counter() - started > 120:
                raise RuntimeError(f"the bridge stored nothing; see {workdir / 'bridge.log'}")
            await asyncio.sleep(0.02)
        meter.start()
        while await _stored(js, stream) < expected:
            if process.returncode is not None or time.perf_counter() - started > 600:
                raise RuntimeError(f"the bridge stopped early; see {workdir / 'bridge.log'}")
            await asyncio.sleep(0.02)
        cpu = meter.stop()
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    events = [(at, kind, count) for at, kind, count in json.loads(events_path.read_text())]
    return cpu, events


async def _stored(js: Any, stream: str) -> int:
    try:
        return int((await js.stream_info(stream)).state.messages)
    except nats.js.errors.NotFoundError:
        return 0


def report(samples: list[dict[str, Any]], command: str) -> None:
    print(
        "| prefetch | msg/s | cycle ms | hold ms, mean (median) | arrived->sent | sent->stored | stored->ack "
        "| ack written | RabbitMQ's part ms | CPU µs/msg bridge / RabbitMQ / nats-server | machine busy |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for sample in samples:
        hold = sample["hold_ms"]
        cpu = " / ".join(
            str(sample.get(f"{name}_cpu_us_per_msg", "-")) for name in ("system", "source_broker", "nats_server")
        )
        busy = sample["machine_busy_cores"]
        print(
            f"| {sample['prefetch']:,} | {sample['rate']:,.0f} | {sample['cycle_ms']:.1f} | "
            f"{hold['hold']['mean']:.1f} ({hold['hold']['median']:.1f}) | {hold['arrived->sent']['mean']:.1f} | "
            f"{hold['sent->stored']['mean']:.1f} | {hold['stored->ack called']['mean']:.1f} | "
            f"{hold['ack call->written']['mean']:.1f} | {sample['rabbitmq_part_ms']:.1f} | {cpu} | "
            f"{busy if busy is not None else '-'} of {os.cpu_count()} |"
        )
    print(f"command: {command}")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[3:], sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--nats-url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:14222"))
    parser.add_argument("--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:15673/"))
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--prefetch", type=int, action="append", help="repeatable (default 1000, 2000, 3000)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds over the prefetches, interleaved")
    opts = parser.parse_args()
    prefetches = opts.prefetch or [1000, 2000, 3000]
    command = "python bench/rabbitmq_hold.py " + " ".join(sys.argv[1:])
    samples = []
    for round_number in range(opts.rounds):
        for prefetch in prefetches:
            print(f"[{time.strftime('%H:%M:%S')}] prefetch {prefetch}, round {round_number + 1}", file=sys.stderr)
            samples.append(asyncio.run(drain(opts, prefetch, round_number)))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"rabbitmq_hold-{stamp}.json"
    out.write_text(json.dumps({"command": command, "messages": opts.messages, "samples": samples}, indent=1))
    report(samples, command)
    print(f"raw samples: {out.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
