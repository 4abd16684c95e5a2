"""What reading a RabbitMQ connection's frames costs: aiormq's FrameReceiver against the bridge's
BufferedFrameReceiver (bridge/brokers/rabbitmq/frames.py), on the same bytes, without a broker.

Why: py-spy put about a quarter of the bridge's CPU on RabbitMQ in aiormq's `get_frame` (a
BytesIO, a lock and three awaited `readexactly` per frame; three frames per small message). The
input is N deliveries of a 100-byte body (Basic.Deliver, a content header with a message id, a
timestamp and two headers, one body frame) marshalled by pamqp, read in three ways:

- in the reader: all of it fed into an asyncio.StreamReader before the clock starts;
- 64 KiB chunks: fed one chunk per loop iteration by another task, as a socket's reads arrive;
- and, for the buffered receiver, the same with every frame decoded by pamqp's `unmarshal` (no
  direct ContentBody / Heartbeat), to show what that shortcut is worth; since that is within this
  shared machine's noise, one 100-byte body frame is also decoded alone both ways (timeit, best
  of R, nanoseconds).

Each figure is the median of R runs, in microseconds of wall time per delivery (one process,
nothing else running in it); the ratio is aiormq's over the buffered one.

    .venv/bin/python bench/amqp_frames.py [--deliveries N] [--repeats R]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import shlex
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pamqp.frame
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.brokers.rabbitmq import frames
from bridge.brokers.rabbitmq.frames import ORIGINAL_FRAME_RECEIVER, BufferedFrameReceiver

CHUNK = 65536


def stream(deliveries: int) -> bytes:
    parts = []
    for tag in range(1, deliveries + 1):
        properties = spec.Basic.Properties(
            content_type="application/octet-stream",
            delivery_mode=2,
            message_id=f"message-{tag}",
            timestamp=datetime.datetime(2026, 12, 5, tzinfo=datetime.UTC),
            headers={"trace-id": f"trace-{tag}", "attempt": 1},
        )
        deliver = spec.Basic.Deliver(consumer_tag="bridge", delivery_tag=tag, exchange="orders", routing_key="o.new")
        parts.append(pamqp.frame.marshal(deliver, 1))
        parts.append(pamqp.frame.marshal(ContentHeader(0, 100, properties), 1))
        parts.append(pamqp.frame.marshal(ContentBody(b"x" * 100), 1))
    return b"".join(parts)


async def timed(receiver_class: type[Any], data: bytes, frames_expected: int, chunked: bool) -> float:
    reader = asyncio.StreamReader()
    if not chunked:
        reader.feed_data(data)
        reader.feed_eof()

    async def feed() -> None:
        for start in range(0, len(data), CHUNK):
            reader.feed_data(data[start : start + CHUNK])
            if start + CHUNK >= len(data):
                reader.feed_eof()
            await asyncio.sleep(0)

    receiver = receiver_class(reader)
    started = time.perf_counter()
    feeder = asyncio.create_task(feed()) if chunked else None
    count = 0
    async for _ in receiver:
        count += 1
    elapsed = time.perf_counter() - started
    if feeder is not None:
        await feeder
    assert count == frames_expected, (count, frames_expected)
    return elapsed


def pamqp_only(
    buffer: bytearray, offset: int, end: int, frame_type: int, channel: int, size: int
) -> frames.ReceivedFrame:
    if buffer[end - 1] != 0xCE:
        raise AssertionError("bad frame end")
    return pamqp.frame.unmarshal(bytes(buffer[offset:end]))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = stream(args.deliveries)
    frames_expected = 3 * args.deliveries
    direct: Callable[..., frames.ReceivedFrame] = frames._decode

    rows: list[tuple[str, str, list[float]]] = []
    for chunked in (False, True):
        mode = "64 KiB chunks" if chunked else "in the reader"
        samples: dict[str, list[float]] = {"aiormq": [], "buffered": [], "buffered, pamqp only": []}
        for _ in range(args.repeats):  # interleaved, so a noisy second hits all three
            samples["aiormq"].append(await timed(ORIGINAL_FRAME_RECEIVER, data, frames_expected, chunked))
            samples["buffered"].append(await timed(BufferedFrameReceiver, data, frames_expected, chunked))
            frames._decode = pamqp_only  # type: ignore[assignment]
            try:
                samples["buffered, pamqp only"].append(
                    await timed(BufferedFrameReceiver, data, frames_expected, chunked)
                )
            finally:
                frames._decode = direct  # type: ignore[assignment]
        rows += [(mode, name, values) for name, values in samples.items()]

    print(f"{args.deliveries:,} deliveries of 100 B (3 frames each, {len(data) / args.deliveries:.0f} B on the wire)")
    print(f"Python {sys.version.split()[0]}, median of {args.repeats}, µs per delivery")
    medians = {(mode, name): statistics.median(values) * 1e6 / args.deliveries for mode, name, values in rows}
    for mode in ("in the reader", "64 KiB chunks"):
        original = medians[(mode, "aiormq")]
        for name in ("aiormq", "buffered", "buffered, pamqp only"):
            value = medians[(mode, name)]
            ratio = "" if name == "aiormq" else f"   aiormq / this: {original / value:.2f}x"
            print(f"  {mode:14}  {name:21} {value:6.2f} µs{ratio}")
    body = bytearray(pamqp.frame.marshal(ContentBody(b"x" * 100), 1))
    times = 200_000
    alone = {
        "direct": lambda: direct(body, 0, len(body), 3, 1, 100),
        "pamqp": lambda: pamqp.frame.unmarshal(bytes(body[0 : len(body)])),
    }
    best = {
        name: min(timeit.repeat(call, number=times, repeat=args.repeats)) / times * 1e9 for name, call in alone.items()
    }
    print(
        f"  one 100 B body frame alone: direct ContentBody {best['direct']:.0f} ns,"
        f" pamqp unmarshal {best['pamqp']:.0f} ns"
    )
    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")


if __name__ == "__main__":
    asyncio.run(main())
