"""BufferedFrameReceiver hands out exactly what aiormq's FrameReceiver hands out for the same bytes,
however the bytes arrive, and fails the same way on a stream that ends or breaks; install() puts
it where aiormq's Connection.connect creates its receiver."""

from __future__ import annotations

import asyncio
import datetime
import inspect
import random
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import aiormq.connection
import pamqp.frame
import pytest
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError, ProtocolSyntaxError
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader, ProtocolHeader
from pamqp.heartbeat import Heartbeat

from bridge.brokers.rabbitmq import frames
from bridge.brokers.rabbitmq.frames import ORIGINAL_FRAME_RECEIVER, BufferedFrameReceiver

Receiver = aiormq.connection.FrameReceiver
RECEIVERS = [ORIGINAL_FRAME_RECEIVER, BufferedFrameReceiver]
FRAME_MAX = 131072  # RabbitMQ's default: a body frame carries at most FRAME_MAX - 8 bytes

PROPERTIES = spec.Basic.Properties(
    content_type="application/json",
    content_encoding="utf-8",
    headers={
        "trace": "abc",
        "count": 7,
        "big": 2**40,
        "ratio": 0.5,
        "flag": True,
        "raw": bytearray(b"\x00\xff"),
        "when": datetime.datetime(2026, 1, 2, 3, 4, 5),
        "nested": {"list": [1, "two", {"three": 3}], "empty": {}},
        "none": None,
    },
    delivery_mode=2,
    priority=5,
    correlation_id="corr-1",
    reply_to="replies",
    expiration="60000",
    message_id="message-1",
    timestamp=datetime.datetime(2026, 12, 5, 20, 30, 0, tzinfo=datetime.UTC),
    message_type="order.created",
    user_id="guest",
    app_id="tests",
)


def body_frames(body: bytes) -> list[ContentBody]:
    size = FRAME_MAX - 8
    return [ContentBody(body[start : start + size]) for start in range(0, len(body), size)]


def delivery(tag: int, body: bytes) -> list[tuple[int, Any]]:
    frames_: list[tuple[int, Any]] = [
        (1, spec.Basic.Deliver(consumer_tag="ctag", delivery_tag=tag, exchange="x", routing_key="k.1")),
        (1, ContentHeader(0, len(body), PROPERTIES)),
    ]
    return frames_ + [(1, part) for part in body_frames(body)]


def conversation() -> list[tuple[int, Any]]:
    """What a consumer's connection reads: the handshake, deliveries of 0, 1, 100 and 200,000
    bytes (the last in two body frames), a heartbeat and a channel's close."""
    start = spec.Connection.Start(
        server_properties={"product": "RabbitMQ", "capabilities": {"publisher_confirms": True}},
        mechanisms="PLAIN AMQPLAIN",
        locales="en_US",
    )
    sequence: list[tuple[int, Any]] = [
        (0, start),
        (0, spec.Connection.Tune(channel_max=2047, frame_max=FRAME_MAX, heartbeat=60)),
        (0, spec.Connection.OpenOk()),
        (1, spec.Channel.OpenOk()),
        (1, spec.Basic.ConsumeOk("ctag")),
    ]
    for tag, size in enumerate([0, 1, 100, 200_000], start=1):
        sequence += delivery(tag, random.Random(size).randbytes(size))
    sequence += [
        (0, Heartbeat()),
        (1, spec.Channel.Close(reply_code=406, reply_text="PRECONDITION_FAILED", class_id=60, method_id=40)),
    ]
    return sequence


def wire(sequence: Sequence[tuple[int, Any]]) -> bytes:
    return b"".join(pamqp.frame.marshal(frame, channel) for channel, frame in sequence)


def chunked(data: bytes, sizes: Callable[[], int]) -> Iterator[bytes]:
    position = 0
    while position < len(data):
        size = sizes()
        yield data[position : position + size]
        position += size


def random_sizes(seed: int) -> Callable[[], int]:
    generator = random.Random(seed)
    return lambda: generator.randint(1, 70_000)


async def received(receiver_class: type[Receiver], chunks: Iterator[bytes]) -> list[tuple[int, int, Any]]:
    """Every frame `receiver_class` reads while the chunks arrive, a loop iteration apart."""
    reader = asyncio.StreamReader()

    async def feed() -> None:
        # The end comes with the last chunk: an end that comes while a receiver waits for the next
        # frame is a connection error to aiormq's receiver (test_eof_while_waiting_...).
        pieces = list(chunks)
        for number, chunk in enumerate(pieces, start=1):
            reader.feed_data(chunk)
            if number == len(pieces):
                reader.feed_eof()
            await asyncio.sleep(0)

    feeder = asyncio.create_task(feed())
    got = [item async for item in receiver_class(reader)]
    await feeder
    return got


def same(got: tuple[int, int, Any], expected: tuple[int, int, Any]) -> bool:
    (consumed, channel, frame), (consumed_, channel_, frame_) = got, expected
    return (
        (consumed, channel) == (consumed_, channel_)
        and type(frame) is type(frame_)
        and vars(frame) == vars(frame_)
        and pamqp.frame.marshal(frame, channel) == pamqp.frame.marshal(frame_, channel_)
    )


CHUNKINGS: dict[str, Callable[[], Callable[[], int]]] = {
    "7 bytes": lambda: lambda: 7,
    "random sizes": lambda: random_sizes(2026),
    "all at once": lambda: lambda: 1 << 30,
}


@pytest.mark.parametrize("chunking", CHUNKINGS)
async def test_the_same_frames_as_aiormqs_receiver(chunking: str) -> None:
    data = wire(conversation())
    expected = await received(ORIGINAL_FRAME_RECEIVER, chunked(data, CHUNKINGS[chunking]()))
    got = await received(BufferedFrameReceiver, chunked(data, CHUNKINGS[chunking]()))
    assert len(got) == len(expected) == len(conversation())
    assert all(same(one, other) for one, other in zip(got, expected, strict=True))
    assert [type(frame) for _, _, frame in got].count(ContentBody) == 4  # none for the empty body
    assert sum(consumed for consumed, _, _ in got) == len(data)


async def test_one_byte_at_a_time() -> None:
    # Without the 200,000-byte body: a loop iteration per byte.
    sequence = [item for item in conversation() if len(getattr(item[1], "value", b"")) < 1000]
    sequence = [(c, f) for c, f in sequence if not (isinstance(f, ContentHeader) and f.body_size > 1000)]
    data = wire(sequence)
    expected = await received(ORIGINAL_FRAME_RECEIVER, chunked(data, lambda: 1))
    got = await received(BufferedFrameReceiver, chunked(data, lambda: 1))
    assert len(got) == len(sequence)
    assert all(same(one, other) for one, other in zip(got, expected, strict=True))


async def test_many_deliveries_in_one_read_and_across_reads() -> None:
    sequence = [item for tag in range(1, 2001) for item in delivery(tag, b"m" * (tag % 300))]
    data = wire(sequence)
    for sizes in (random_sizes(7), lambda: 1 << 30):
        got = await received(BufferedFrameReceiver, chunked(data, sizes))
        expected = await received(ORIGINAL_FRAME_RECEIVER, chunked(data, sizes))
        assert all(same(one, other) for one, other in zip(got, expected, strict=True))
        assert len(got) == len(sequence)


def fed(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


@pytest.mark.parametrize("receiver_class", RECEIVERS)
async def test_eof_at_a_frame_boundary_ends_the_iteration(receiver_class: type[Receiver]) -> None:
    receiver = receiver_class(fed(wire([(0, spec.Connection.OpenOk())])))
    _, _, frame = await receiver.get_frame()
    assert isinstance(frame, spec.Connection.OpenOk)
    with pytest.raises(StopAsyncIteration):
        await receiver.get_frame()
    assert not hasattr(receiver, "reader")  # aiormq's drops its reader there; so does this one


@pytest.mark.parametrize("receiver_class", RECEIVERS)
@pytest.mark.parametrize("cut", [1, 6, 7, 20, -1])
async def test_eof_inside_a_frame_is_a_connection_error(receiver_class: type[Receiver], cut: int) -> None:
    data = wire([(0, spec.Connection.OpenOk()), *delivery(1, b"x" * 100)])
    first = len(wire([(0, spec.Connection.OpenOk())]))
    receiver = receiver_class(fed(data[: first + cut] if cut > 0 else data[:cut]))
    await receiver.get_frame()
    with pytest.raises(AMQPConnectionError, match="Server connection unexpectedly closed"):
        async for _ in receiver:
            pass


async def test_eof_while_waiting_for_a_frame_is_a_connection_error() -> None:
    # As aiormq's: only an end seen before the call counts as an end at a boundary.
    for receiver_class in RECEIVERS:
        reader = asyncio.StreamReader()
        pending = asyncio.ensure_future(receiver_class(reader).get_frame())
        await asyncio.sleep(0)
        reader.feed_eof()
        with pytest.raises(AMQPConnectionError, match="Read 0 bytes but"):
            await pending


@pytest.mark.parametrize("receiver_class", RECEIVERS)
async def test_a_bad_frame_end_byte_is_an_invalid_frame(receiver_class: type[Receiver]) -> None:
    good = wire([(1, spec.Basic.Ack(delivery_tag=1))])
    receiver = receiver_class(fed(good + good[:-1] + b"\x00" + good))
    await receiver.get_frame()
    with pytest.raises(InvalidFrameError):
        await receiver.get_frame()


async def test_a_bad_end_byte_on_a_body_or_heartbeat_frame_is_an_invalid_frame() -> None:
    # pamqp reads a heartbeat without looking at its end byte; this receiver checks every frame.
    for frame in (ContentBody(b"abc"), Heartbeat()):
        data = pamqp.frame.marshal(frame, 1 if isinstance(frame, ContentBody) else 0)
        with pytest.raises(InvalidFrameError, match="Frame end byte 0x00"):
            await BufferedFrameReceiver(fed(data[:-1] + b"\x00")).get_frame()


@pytest.mark.parametrize("receiver_class", RECEIVERS)
async def test_an_empty_body_frame_is_an_invalid_frame(receiver_class: type[Receiver]) -> None:
    # A server sends no body frame for an empty body; pamqp refuses one of size 0.
    with pytest.raises(InvalidFrameError, match="No frame size"):
        await receiver_class(fed(pamqp.frame.marshal(ContentBody(b""), 1))).get_frame()


@pytest.mark.parametrize("receiver_class", RECEIVERS)
async def test_a_frame_pamqp_cannot_decode_is_an_invalid_frame(receiver_class: type[Receiver]) -> None:
    unknown_method = struct.pack(">BHIHH", 1, 0, 4, 999, 999) + b"\xce"
    with pytest.raises(InvalidFrameError, match="Unknown method index"):
        await receiver_class(fed(unknown_method)).get_frame()


@pytest.mark.parametrize("receiver_class", RECEIVERS)
async def test_a_protocol_header_answered_first_is_a_protocol_syntax_error(receiver_class: type[Receiver]) -> None:
    receiver = receiver_class(fed(b"AMQP\x00\x00\x09\x01"))
    with pytest.raises(ProtocolSyntaxError):
        await receiver.get_frame()
    assert not receiver.started


@pytest.mark.parametrize("receiver_class", RECEIVERS)
async def test_a_connection_reset_is_a_connection_error(receiver_class: type[Receiver]) -> None:
    reader = fed(wire([(0, spec.Connection.OpenOk())]), eof=False)
    receiver = receiver_class(reader)
    await receiver.get_frame()
    assert receiver.started
    reader.set_exception(ConnectionResetError(104, "Connection reset by peer"))
    with pytest.raises(AMQPConnectionError, match="Server connection reset"):
        await receiver.get_frame()


async def test_frames_read_before_a_failure_are_still_handed_out() -> None:
    # The one difference from aiormq's receiver, which raises at once: their bytes are already read.
    reader = fed(wire([(0, spec.Connection.OpenOk()), (1, spec.Channel.OpenOk())]), eof=False)
    receiver = BufferedFrameReceiver(reader)
    await receiver.get_frame()
    reader.set_exception(ConnectionResetError(104, "Connection reset by peer"))
    _, channel, frame = await receiver.get_frame()
    assert (channel, type(frame)) == (1, spec.Channel.OpenOk)
    with pytest.raises(AMQPConnectionError, match="Server connection reset"):
        await receiver.get_frame()


async def test_a_protocol_header_is_not_mistaken_for_a_frame_once_started() -> None:
    # ProtocolHeader marshals to the 8 bytes a server answers with; only a first frame is tested.
    assert ProtocolHeader().marshal().startswith(b"AMQP")
    receiver = BufferedFrameReceiver(fed(wire([(0, spec.Connection.OpenOk())])))
    await receiver.get_frame()
    assert receiver.started
    assert isinstance(receiver.lock, asyncio.Lock)


def test_install_puts_the_buffered_receiver_where_aiormq_connects() -> None:
    """Guard: the patch works only while aiormq's Connection.connect creates its receiver by the
    module-level name FrameReceiver; if aiormq changes that, this fails (tests/integration/
    test_rabbitmq_frame_receiver.py checks a real connection's reader task)."""
    assert ORIGINAL_FRAME_RECEIVER.__module__ == "aiormq.connection"
    frames.install()
    frames.install()
    assert frames.installed()
    assert aiormq.connection.FrameReceiver is BufferedFrameReceiver
    assert "FrameReceiver" in inspect.unwrap(aiormq.connection.Connection.connect).__code__.co_names
    assert "get_frame" in inspect.getsource(aiormq.connection.Connection.connect)
    assert issubclass(BufferedFrameReceiver, ORIGINAL_FRAME_RECEIVER)


async def read_client_frame(reader: asyncio.StreamReader) -> Any:
    head = await reader.readexactly(7)
    _, _, size = struct.unpack(">BHI", head)
    return pamqp.frame.unmarshal(head + await reader.readexactly(size + 1))[2]


async def test_a_real_aiormq_connection_reads_with_the_installed_receiver() -> None:
    """Guard, without a broker: aiormq's Connection, over a socket to a handshake-only server here,
    reads the handshake and then its frames with BufferedFrameReceiver once install() ran."""
    client_frames: list[Any] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readexactly(8) == ProtocolHeader().marshal()
        start = spec.Connection.Start(server_properties={"product": "here"}, mechanisms="PLAIN", locales="en_US")
        writer.write(pamqp.frame.marshal(start, 0))
        client_frames.append(await read_client_frame(reader))  # StartOk
        writer.write(pamqp.frame.marshal(spec.Connection.Tune(channel_max=16, frame_max=FRAME_MAX, heartbeat=0), 0))
        client_frames.append(await read_client_frame(reader))  # TuneOk
        client_frames.append(await read_client_frame(reader))  # Open
        # OpenOk and a heartbeat in one write: the heartbeat waits in the receiver's buffer.
        writer.write(pamqp.frame.marshal(spec.Connection.OpenOk(), 0) + Heartbeat.marshal())
        client_frames.append(await read_client_frame(reader))  # Close
        writer.write(pamqp.frame.marshal(spec.Connection.CloseOk(), 0))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    frames.install()
    try:
        connection: Any = await aiormq.connect(f"amqp://guest:guest@127.0.0.1:{port}/")
        try:
            coroutine = connection._reader_task.task.get_coro()  # aiormq keeps its receiver nowhere else
            receiver = coroutine.cr_frame.f_locals["frame_receiver"]
        finally:
            await connection.close()
    finally:
        server.close()
        await server.wait_closed()
    assert type(receiver) is BufferedFrameReceiver
    assert [type(frame) for frame in client_frames] == [
        spec.Connection.StartOk,
        spec.Connection.TuneOk,
        spec.Connection.Open,
        spec.Connection.Close,
    ]
