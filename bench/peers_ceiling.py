"""The RabbitMQ ceiling of bench/peers.py: how fast RabbitMQ hands over a pre-filled classic queue
to a consumer that does nothing with it.

The consumer is bench/peers/ceiling/main.go, a Go program on github.com/rabbitmq/amqp091-go
v1.9.0 (the AMQP client Benthos's `amqp_0_9` uses), built by peers.py into its cache folder. It
sets the same prefetch (basic.qos) as the bridge and Benthos and acknowledges the way the bridge
settles (one ack with multiple=true every prefetch // 4 deliveries, as soon as they arrive), and
does nothing else: no decoding beyond the client's, no publishing. What it reaches, and what
RabbitMQ's beam.smp spends per message meanwhile, is the most any consumer could take from this
broker on this machine; the bridge's and Benthos's rates read against it.

Its interval is its own first to last delivery: it prints `first` at the first delivery (the CPU
meters start when the line arrives) and a result line after the last one and its ack (the meters
stop). The rate comes from its own clock, not from a stream: it stores nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import BridgeRun, CpuMeter

ROOT = Path(__file__).resolve().parents[1]
CEILING_SRC = ROOT / "bench" / "peers" / "ceiling"
AMQP091_MODULE = "github.com/rabbitmq/amqp091-go"
AMQP091_VERSION = "v1.9.0"  # the version Benthos v4.27.0 builds with, already in the module cache
FIRST_LIMIT = 120.0  # s until the first delivery (connection, consume)
DRAIN_LIMIT = 600.0  # s for the whole queue, as BenchBase.drain allows


def source_hash() -> str:
    """A hash of the ceiling's Go source, go.mod and go.sum: the binary's name carries it, so an
    edit rebuilds it and an unchanged source is built once."""
    digest = hashlib.sha256()
    for name in ("main.go", "go.mod", "go.sum"):
        digest.update(name.encode() + b"\0" + (CEILING_SRC / name).read_bytes())
    return digest.hexdigest()[:8]


def ack_every(prefetch: int) -> int:
    """Deliveries per multiple ack: the bridge's RabbitMQ source settles every prefetch // 4."""
    return max(1, prefetch // 4)


class CeilingRun(BridgeRun):
    """The ceiling consumer as a subprocess: its stdout is read (two lines), its stderr logged;
    BridgeRun's RSS sampling, stop and kill (Bench.cleanup kills it if the run is interrupted)."""

    def __init__(self, binary: Path, url: str, queue: str, count: int, prefetch: int, log_path: Path) -> None:
        super().__init__(binary, log_path)
        self.argv = [str(binary), url, queue, str(count), str(prefetch), str(ack_every(prefetch))]

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, cwd=ROOT
            )
        self._t0 = time.perf_counter()
        self._sampler = asyncio.create_task(self._sample())

    async def _line(self, limit: float) -> str:
        assert self.process is not None
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), limit)
        except TimeoutError:
            raise RuntimeError(f"the ceiling consumer said nothing for {limit:.0f} s:\n{self.log_tail()}") from None
        if not line:
            code = await self.process.wait()
            raise RuntimeError(f"the ceiling consumer exited ({code}); its log ends:\n{self.log_tail()}")
        return line.decode(errors="replace").strip()

    async def drain(self, meter_for: Callable[[int], CpuMeter], expected: int) -> dict[str, Any]:
        """Start the consumer on a queue of `expected` messages; meter it (`meter_for(pid)`) from
        its first delivery to its last. It exits by itself; stopped if it does not."""
        started = time.perf_counter()
        await self.start()
        meter = meter_for(self.pid)
        try:
            if (first := await self._line(FIRST_LIMIT)) != "first":
                raise RuntimeError(f"the ceiling consumer printed {first!r}, not 'first'")
            meter.start()
            done = await self._line(DRAIN_LIMIT)
            cpu = meter.stop()
            finished = time.perf_counter()
            assert self.process is not None
            await asyncio.wait_for(self.process.wait(), 10)
        finally:
            stopped = await self.stop()
        fields = dict(part.split("=", 1) for part in done.split())
        delivered, seconds = int(fields["delivered"]), float(fields["seconds"])
        peak_kib = max(int(fields["vmhwm_kib"]), self.peak_sampled_kib)
        return {
            "rate": round((delivered - 1) / seconds, 1) if seconds > 0 else None,
            "messages": delivered,  # delivered: it stores nothing
            "expected": expected,
            "seconds_first_to_last_delivery": round(seconds, 3),
            "seconds_from_process_start": round(finished - started, 3),
            "peak_rss_mib": round(peak_kib / 1024, 1),
            "ack_every": ack_every(int(self.argv[4])),
            "cpu": cpu,
            **stopped,
        }
