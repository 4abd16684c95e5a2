"""Deliveries decoded whole from the receiver's buffer (direct.py) give the source the very
messages the frame-by-frame way gives it (frame_decode or pamqp, DeliveryFrames, records), in
the same order, with every other frame handed on as before, however the bytes arrive."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import decimal
import struct
from collections.abc import Iterator, Sequence
from typing import Any, cast

import aiormq.abc
import pamqp.decode
import pamqp.encode
import pamqp.frame
from aiormq.abc import TaskWrapper
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from pamqp.heartbeat import Heartbeat
from pydantic import SecretStr

from bridge.brokers.rabbitmq import frame_decode, frames
from bridge.brokers.rabbitmq.deliveries import DeliveryFrames
from bridge.brokers.rabbitmq.direct import DirectChannel
from bridge.brokers.rabbitmq.frames import BufferedFrameReceiver
from bridge.brokers.rabbitmq.source import RabbitMQRouteSource
from bridge.config.routes import FromRabbitMQ
from bridge.config.sources import RabbitMQSource

UTC = datetime.UTC
CONSUMER = 1  # the source's channel
OTHER = 2  # another consumer's channel on the same connection: never taken directly

strings = st.text(max_size=30) | st.sampled_from(["", "orders", "o.new"])
names = st.from_regex(r"[a-zA-Z0-9_.:-]{0,20}", fullmatch=True)  # what pamqp writes as an exchange
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(width=32, allow_nan=False),
    st.builds(lambda m, s: decimal.Decimal(m).scaleb(-s), st.integers(-(2**31), 2**31 - 1), st.integers(0, 255)),
    st.text(max_size=20),
    st.datetimes(datetime.datetime(1970, 1, 2), datetime.datetime(2106, 1, 1), timezones=st.just(UTC)),
    st.binary(max_size=10).map(bytearray),
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(strings, children, max_size=3),
    max_leaves=8,
)
PROPERTY_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "content_type": strings,
    "content_encoding": strings,
    "headers": st.dictionaries(strings, values, max_size=5),
    "delivery_mode": st.integers(0, 255),
    "priority": st.integers(0, 255),
    "correlation_id": strings,
    "reply_to": strings,
    "expiration": strings,
    "message_id": strings,
    "timestamp": st.datetimes(datetime.datetime(1970, 1, 1), datetime.datetime(9999, 12, 31), timezones=st.just(UTC)),
    "message_type": strings,
    "user_id": strings,
    "app_id": strings,
    "cluster_id": strings,
}


@st.composite
def deliveries(draw: st.DrawFn) -> list[tuple[int, Any]]:
    """One delivery's frames on the consumer's channel (a body split into frames of any size), or
    something else on the wire: another channel's delivery, a heartbeat, a consume-ok, or an
    unusual delivery (a content header with a weight) that only the frame-by-frame way takes."""
    kind = draw(st.sampled_from(["delivery", "delivery", "delivery", "other channel", "heartbeat", "ok", "unusual"]))
    if kind == "heartbeat":
        return [(0, Heartbeat())]
    if kind == "ok":
        return [(CONSUMER, spec.Basic.ConsumeOk("ctag"))]
    properties = spec.Basic.Properties()
    for name, value in draw(st.fixed_dictionaries({}, optional=PROPERTY_VALUES)).items():
        setattr(properties, name, value)  # after __init__: it refuses what pamqp writes all the same
    body = draw(st.binary(max_size=300))
    frame_size = draw(st.integers(1, 120))
    tag = draw(st.integers(0, 2**63 - 1))
    deliver = spec.Basic.Deliver("ctag", tag, draw(st.booleans()), draw(names), draw(strings))
    channel = OTHER if kind == "other channel" else CONSUMER
    header = ContentHeader(1 if kind == "unusual" else 0, len(body), properties)
    parts = [body[start : start + frame_size] for start in range(0, len(body), frame_size)]
    return [(channel, deliver), (channel, header)] + [(channel, ContentBody(part)) for part in parts]


def wire(sequence: Sequence[tuple[int, Any]]) -> bytes:
    return b"".join(pamqp.frame.marshal(frame, channel) for channel, frame in sequence)


def chunked(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    position, turn = 0, 0
    while position < len(data):
        size = sizes[turn % len(sizes)]
        yield data[position : position + size]
        position, turn = position + size, turn + 1


class FakeChannel:
    """What DeliveryFrames uses of an aiormq channel: its frame queue, whether it is closed."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[Any] = asyncio.Queue()
        self.is_closed = False


def described(weight: int, frame: Any) -> str:
    """A frame as text to compare: its type and what it marshals to (its repr has its address)."""
    return f"{weight} {type(frame).__name__} {pamqp.frame.marshal(frame, 0)!r}"


def route_source() -> RabbitMQRouteSource:
    source = RabbitMQSource(type="rabbitmq", url=SecretStr("amqp://guest:guest@localhost/"))
    subscription = FromRabbitMQ(queue="orders", mode="queue")  # type: ignore[arg-type]
    route = RabbitMQRouteSource("orders", source, subscription, "orders")
    route._epoch = 1
    return route


async def consumed(data: bytes, sizes: list[int], *, direct: bool) -> tuple[list[str], list[str], int]:
    """What the source buffered (each Received's repr), what reached the channel's own reader and
    the other frames (as aiormq's reader loop would dispatch them), and how many deliveries were
    taken directly."""
    reader = asyncio.StreamReader()
    receiver = BufferedFrameReceiver(reader)
    route = route_source()
    channel = FakeChannel()
    passed_on = channel.frames
    delivery_frames = DeliveryFrames.install(cast(aiormq.abc.AbstractChannel, channel), route._on_delivered)
    taken = 0

    def direct_sink(*fields: Any) -> None:
        nonlocal taken
        taken += 1
        route._on_direct(*fields)

    if direct:
        receiver.deliver_directly(CONSUMER, DirectChannel(delivery_frames.idle, direct_sink))

    async def feed() -> None:
        # The end comes with the last piece: an end while the receiver waits for a frame is a
        # connection error.
        for number, piece in enumerate(pieces, start=1):
            reader.feed_data(piece)
            if number == len(pieces):
                reader.feed_eof()
            await asyncio.sleep(0)

    pieces = list(chunked(data, sizes))
    if not pieces:
        reader.feed_eof()
    feeder = asyncio.create_task(feed())
    others: list[str] = []
    async for weight, number, frame in receiver:
        if weight == 0:  # what the receiver says after direct deliveries: the connection is alive
            assert direct
            assert number == 0
            assert isinstance(frame, Heartbeat)
            continue
        if number == CONSUMER:
            await channel.frames.put((weight, frame))
        else:
            others.append(f"{number} {described(weight, frame)}")
    await feeder
    passed = [described(*passed_on.get_nowait()) for _ in range(passed_on.qsize())]
    return [repr(received) for received in route._buffer], passed + others, taken


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(deliveries(), max_size=8), st.lists(st.integers(1, 400), min_size=1, max_size=5))
def test_direct_deliveries_are_the_messages_the_frame_by_frame_way_makes(
    sequence: list[list[tuple[int, Any]]], sizes: list[int]
) -> None:
    data = wire([frame for frames_ in sequence for frame in frames_])

    async def both() -> None:
        expected, expected_others, none_taken = await consumed(data, sizes, direct=False)
        got, got_others, _ = await consumed(data, sizes, direct=True)
        assert none_taken == 0
        assert got == expected
        assert got_others == expected_others

    asyncio.run(both())


async def test_deliveries_complete_in_one_read_are_taken_whole_and_the_loop_hears_the_connection_is_alive() -> None:
    sequence = [
        frame
        for tag in range(1, 101)
        for frame in [
            (CONSUMER, spec.Basic.Deliver("ctag", tag, False, "orders", "o.new")),
            (CONSUMER, ContentHeader(0, 3, spec.Basic.Properties(message_id=f"m{tag}", headers={"a": tag}))),
            (CONSUMER, ContentBody(b"abc")),
        ]
    ]
    data = wire(sequence)
    buffered, passed, taken = await consumed(data, [len(data)], direct=True)
    assert taken == 100
    assert passed == []
    assert len(buffered) == 100
    assert "position=100" in buffered[-1]
    assert "'message_id': 'm100'" in buffered[-1]


async def test_a_closed_channels_deliveries_go_the_frame_by_frame_way() -> None:
    channel = FakeChannel()
    got: list[Any] = []
    delivery_frames = DeliveryFrames.install(cast(aiormq.abc.AbstractChannel, channel), got.append)
    assert delivery_frames.idle()
    channel.is_closed = True
    assert not delivery_frames.idle()


async def test_deliver_directly_finds_the_receiver_of_the_channels_connection() -> None:
    class Connection:
        _reader_task: TaskWrapper

    class Channel:
        number = CONSUMER
        connection = Connection()

    reader = asyncio.StreamReader()
    receiver = BufferedFrameReceiver(reader)
    target = DirectChannel(lambda: True, lambda *_: None)
    assert not frames.deliver_directly(cast(aiormq.abc.AbstractChannel, Channel()), target)

    async def iterate() -> None:
        async for _ in receiver:
            pass

    task = asyncio.create_task(iterate())
    Channel.connection._reader_task = TaskWrapper(task)  # as aiormq's Connection keeps it
    await asyncio.sleep(0)
    assert frames.deliver_directly(cast(aiormq.abc.AbstractChannel, Channel()), target)
    assert receiver._direct == {CONSUMER: target}
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


simple_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=20)
)  # what frame_decode decodes in a table itself


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(strings, simple_values, max_size=6),
    st.integers(0, 200),
    st.integers(0, 255),
    st.binary(max_size=8),
)
def test_a_headers_table_decoded_without_pamqp_is_what_pamqp_decodes(
    table: dict[str, Any], where: int, byte: int, after: bytes
) -> None:
    """frame_decode's own table decoder takes every table of text, integers, booleans and voids,
    and whatever it takes, also with a byte changed or more bytes after it, is pamqp's value."""
    encoded = pamqp.encode.field_table(table)
    assert frame_decode._table(encoded, 0, len(encoded)) == (len(encoded), pamqp.decode.field_table(encoded)[1])
    changed = bytearray(encoded + after)
    if where < len(changed):
        changed[where] = byte
    data = bytes(changed)
    try:
        fast = frame_decode._table(data, 0, len(data))
    except (ValueError, IndexError, struct.error):
        return  # frame_decode hands the frame to pamqp, which decodes or refuses it
    if fast is not None:
        assert repr(fast) == repr(pamqp.decode.field_table(data))


async def test_after_direct_deliveries_the_reader_loop_gets_a_heartbeat_before_the_receiver_waits() -> None:
    """aiormq's watchdog takes the time of the last frame its loop saw: deliveries taken directly
    must not make a busy connection look stuck."""
    reader = asyncio.StreamReader()
    receiver = BufferedFrameReceiver(reader)
    got: list[int] = []
    receiver.deliver_directly(CONSUMER, DirectChannel(lambda: True, lambda tag, *_: got.append(tag)))
    one_delivery = [
        (CONSUMER, spec.Basic.Deliver("ctag", 7, False, "orders", "o.new")),
        (CONSUMER, ContentHeader(0, 2, spec.Basic.Properties())),
        (CONSUMER, ContentBody(b"hi")),
    ]
    reader.feed_data(wire(one_delivery))
    weight, channel, frame = await asyncio.wait_for(receiver.get_frame(), 5)
    assert (weight, channel, type(frame)) == (0, 0, Heartbeat)
    assert got == [7]
    reader.feed_data(Heartbeat.marshal())
    reader.feed_eof()
    weight, channel, frame = await asyncio.wait_for(receiver.get_frame(), 5)
    assert (weight, channel, type(frame)) == (8, 0, Heartbeat)  # the server's own
