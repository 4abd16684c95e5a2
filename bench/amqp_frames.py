"""What reading a RabbitMQ connection's frames costs: aiormq's FrameReceiver against the bridge's
BufferedFrameReceiver (bridge/brokers/rabbitmq/frames.py), on the same bytes, without a broker.

Why: py-spy put about a quarter of the bridge's CPU on RabbitMQ in aiormq's `get_frame` (a
BytesIO, a lock and three awaited `readexactly` per frame; three frames per small message). The
input is N deliveries of a 100-byte body (Basic.Deliver, a content header with a message id, a
timestamp and two headers, one body frame) marshalled by pamqp, read in three ways:

- in the reader: all of it fed into an asyncio.StreamReader before the clock starts;
- 64 KiB chunks: fed one chunk per loop iteration by another task, as a socket's reads arrive;
- and, for the buffered receiver, the same twice more: with Basic.Deliver and the content header
  decoded by pamqp's `unmarshal` instead of frame_decode.py's decoders ("pamqp decoding", as the
  receiver was before them), and with every frame decoded by `unmarshal` ("pamqp only": no
  direct ContentBody / Heartbeat either), to show what each shortcut is worth.

Then the whole way into the RabbitMQ source's buffer of Received messages, the same bytes in
64 KiB chunks: "frame by frame" hands every frame to the consumer channel's DeliveryFrames as
aiormq's reader loop does (its debug log call, channel lookup and awaited put; DeliveryFrames
builds the DeliveredMessage, the source its Received with records.amqp_message); "direct" has
the receiver decode each delivery complete in its buffer straight into the source (direct.py).

Then each kind of frame is decoded alone both ways (timeit, best of R, in microseconds): a
100-byte body frame, the Basic.Deliver, and the content header, once with the timestamp the
previous header had (frame_decode keeps the last one it made; every header in the stream above
has the same) and once with a new one each time.

Each figure is the median of R runs, in microseconds of wall time per delivery (one process,
nothing else running in it); the ratio is aiormq's over the buffered one.

    .venv/bin/python bench/amqp_frames.py [--deliveries N] [--repeats R]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import logging
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

from pydantic import SecretStr

from bridge.brokers.rabbitmq import frame_decode, frames
from bridge.brokers.rabbitmq.deliveries import DeliveryFrames
from bridge.brokers.rabbitmq.direct import DirectChannel
from bridge.brokers.rabbitmq.frames import ORIGINAL_FRAME_RECEIVER, BufferedFrameReceiver
from bridge.brokers.rabbitmq.source import RabbitMQRouteSource
from bridge.config.routes import FromRabbitMQ, RabbitMQMode
from bridge.config.sources import RabbitMQSource

CHUNK = 65536


def delivery(tag: int, second: int = 0) -> tuple[bytes, bytes, bytes]:
    """The three frames of one delivery: Basic.Deliver, content header, body."""
    properties = spec.Basic.Properties(
        content_type="application/octet-stream",
        delivery_mode=2,
        message_id=f"message-{tag}",
        timestamp=datetime.datetime(2026, 12, 5, 0, 0, second, tzinfo=datetime.UTC),
        headers={"trace-id": f"trace-{tag}", "attempt": 1},
    )
    deliver = spec.Basic.Deliver(consumer_tag="bridge", delivery_tag=tag, exchange="orders", routing_key="o.new")
    return (
        pamqp.frame.marshal(deliver, 1),
        pamqp.frame.marshal(ContentHeader(0, 100, properties), 1),
        pamqp.frame.marshal(ContentBody(b"x" * 100), 1),
    )


def stream(deliveries: int) -> bytes:
    return b"".join(b"".join(delivery(tag)) for tag in range(1, deliveries + 1))


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


class Channel:
    """What DeliveryFrames and aiormq's reader loop use of a channel."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[Any] = asyncio.Queue()
        self.is_closed = False


async def into_source(data: bytes, deliveries: int, direct: bool) -> float:
    """Seconds from the first chunk to every delivery in the source's buffer as a Received."""
    reader = asyncio.StreamReader()
    receiver = BufferedFrameReceiver(reader)
    source = RabbitMQSource(type="rabbitmq", url=SecretStr("amqp://guest:guest@localhost/"))
    route = RabbitMQRouteSource("bench", source, FromRabbitMQ(queue="q", mode=RabbitMQMode.QUEUE), "q")
    route._epoch = 1
    channel = Channel()
    delivery_frames = DeliveryFrames.install(channel, route._on_delivered)  # type: ignore[arg-type]
    if direct:
        receiver.deliver_directly(1, DirectChannel(delivery_frames.idle, route._on_direct))
    channels = {1: channel}
    log = logging.getLogger("aiormq.connection")

    async def feed() -> None:
        for start in range(0, len(data), CHUNK):
            reader.feed_data(data[start : start + CHUNK])
            if start + CHUNK >= len(data):
                reader.feed_eof()
            await asyncio.sleep(0)

    started = time.perf_counter()
    feeder = asyncio.create_task(feed())
    async for weight, number, frame in receiver:  # aiormq's Connection.__reader, in short
        log.debug("Received frame %r in channel #%d weight=%s on %r", frame, number, weight, None)
        if number == 0:
            continue
        ch = channels.get(number)
        if ch is not None:
            await ch.frames.put((weight, frame))
    elapsed = time.perf_counter() - started
    await feeder
    assert len(route._buffer) == deliveries, (len(route._buffer), deliveries)
    return elapsed


def pamqp_only(
    buffer: bytearray, offset: int, end: int, frame_type: int, channel: int, size: int
) -> frames.ReceivedFrame:
    if buffer[end - 1] != 0xCE:
        raise AssertionError("bad frame end")
    return pamqp.frame.unmarshal(bytes(buffer[offset:end]))


class PamqpDecoding:
    """Stands in for the frame_decode module in frames.py: pamqp's unmarshal for every method and
    header frame, as the receiver decoded them before frame_decode.py."""

    unmarshal = staticmethod(pamqp.frame.unmarshal)


NAMES = ("aiormq", "buffered", "buffered, pamqp decoding", "buffered, pamqp only")


def best_us(call: Callable[[], object], repeats: int, times: int = 100_000) -> float:
    return min(timeit.repeat(call, number=times, repeat=repeats)) / times * 1e6


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
        samples: dict[str, list[float]] = {name: [] for name in NAMES}
        for _ in range(args.repeats):  # interleaved, so a noisy second hits all four
            samples["aiormq"].append(await timed(ORIGINAL_FRAME_RECEIVER, data, frames_expected, chunked))
            samples["buffered"].append(await timed(BufferedFrameReceiver, data, frames_expected, chunked))
            frames.frame_decode = PamqpDecoding  # type: ignore[assignment]
            try:
                samples["buffered, pamqp decoding"].append(
                    await timed(BufferedFrameReceiver, data, frames_expected, chunked)
                )
            finally:
                frames.frame_decode = frame_decode
            frames._decode = pamqp_only  # type: ignore[assignment]
            try:
                samples["buffered, pamqp only"].append(
                    await timed(BufferedFrameReceiver, data, frames_expected, chunked)
                )
            finally:
                frames._decode = direct  # type: ignore[assignment]
        rows += [(mode, name, values) for name, values in samples.items()]

    into: dict[str, list[float]] = {"frame by frame": [], "direct": []}
    for _ in range(args.repeats):
        into["frame by frame"].append(await into_source(data, args.deliveries, direct=False))
        into["direct"].append(await into_source(data, args.deliveries, direct=True))

    print(f"{args.deliveries:,} deliveries of 100 B (3 frames each, {len(data) / args.deliveries:.0f} B on the wire)")
    print(f"Python {sys.version.split()[0]}, median of {args.repeats}, µs per delivery")
    medians = {(mode, name): statistics.median(values) * 1e6 / args.deliveries for mode, name, values in rows}
    for mode in ("in the reader", "64 KiB chunks"):
        original = medians[(mode, "aiormq")]
        for name in NAMES:
            value = medians[(mode, name)]
            ratio = "" if name == "aiormq" else f"   aiormq / this: {original / value:.2f}x"
            print(f"  {mode:14}  {name:25} {value:6.2f} µs{ratio}")

    slow = statistics.median(into["frame by frame"]) * 1e6 / args.deliveries
    fast = statistics.median(into["direct"]) * 1e6 / args.deliveries
    print(f"  into the source, 64 KiB chunks   frame by frame {slow:6.2f} µs")
    print(
        f"  into the source, 64 KiB chunks   direct         {fast:6.2f} µs   frame by frame / this: {slow / fast:.2f}x"
    )

    deliver, header, body = delivery(1)
    other_header = delivery(1, second=1)[1]
    headers = itertools.cycle([header, other_header])
    body_buffer = bytearray(body)
    kinds: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
        (
            "100 B body",
            lambda: pamqp.frame.unmarshal(bytes(body_buffer[0 : len(body_buffer)])),
            lambda: direct(body_buffer, 0, len(body_buffer), 3, 1, 100),
        ),
        ("Basic.Deliver", lambda: pamqp.frame.unmarshal(deliver), lambda: frame_decode.unmarshal(deliver)),
        ("header, same timestamp", lambda: pamqp.frame.unmarshal(header), lambda: frame_decode.unmarshal(header)),
        (
            "header, new timestamp",
            lambda: pamqp.frame.unmarshal(next(headers)),
            lambda: frame_decode.unmarshal(next(headers)),
        ),
    ]
    print(f"one frame alone, best of {args.repeats}, µs    pamqp unmarshal   direct / frame_decode")
    for kind, slow, fast in kinds:
        slow_us, fast_us = best_us(slow, args.repeats), best_us(fast, args.repeats)
        print(f"  {kind:24} {slow_us:15.2f} {fast_us:23.2f}   {slow_us / fast_us:.1f}x")
    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")


if __name__ == "__main__":
    asyncio.run(main())
