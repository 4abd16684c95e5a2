"""DeliveryFrames puts deliveries together from a channel's frames, in order, and passes every
other frame — and any delivery whose frames break the sequence — to the channel's reader."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import aiormq.abc
import pytest
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from bridge.brokers.rabbitmq.deliveries import DeliveryFrames


class FakeChannel:
    """What DeliveryFrames uses of an aiormq channel: its frame queue."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[Any] = asyncio.Queue()


def deliver(tag: int) -> spec.Basic.Deliver:
    return spec.Basic.Deliver(consumer_tag="c", delivery_tag=tag, exchange="x", routing_key=f"k{tag}")


def header(size: int, message_id: str = "m") -> ContentHeader:
    return ContentHeader(0, size, spec.Basic.Properties(message_id=message_id, headers={"h": 1}))


def installed() -> tuple[FakeChannel, asyncio.Queue[Any], list[DeliveredMessage]]:
    channel = FakeChannel()
    original = channel.frames
    got: list[DeliveredMessage] = []
    DeliveryFrames.install(cast(aiormq.abc.AbstractChannel, channel), got.append)
    return channel, original, got


def drained(queue: asyncio.Queue[Any]) -> list[Any]:
    return [queue.get_nowait()[1] for _ in range(queue.qsize())]


async def test_deliveries_are_assembled_in_order_and_other_frames_pass_on() -> None:
    channel, original, got = installed()
    consume_ok = spec.Basic.ConsumeOk("c")
    await channel.frames.put((0, consume_ok))
    for item in [deliver(1), header(5, "one"), ContentBody(b"hello"), deliver(2), header(0, "empty")]:
        await channel.frames.put((0, item))
    # A body split over three frames (a message larger than frame_max).
    for item in [deliver(3), header(7, "three"), ContentBody(b"ab"), ContentBody(b"cde"), ContentBody(b"fg")]:
        channel.frames.put_nowait((0, item))
    cancel = spec.Basic.Cancel("c")
    await channel.frames.put((0, cancel))

    assert [(m.delivery.delivery_tag, m.header.properties.message_id, m.body) for m in got] == [
        (1, "one", b"hello"),
        (2, "empty", b""),
        (3, "three", b"abcdefg"),
    ]
    assert got[0].routing_key == "k1"
    assert got[0].header.properties.headers == {"h": 1}
    assert drained(original) == [consume_ok, cancel]
    # The channel's reader still reads the queue it had: get and task_done reach it.
    await channel.frames.put((0, cancel))
    assert (await channel.frames.get())[1] is cancel
    channel.frames.task_done()


FIRST, HEAD, CLOSE, NEXT = deliver(1), header(5), spec.Channel.Close(), deliver(2)


@pytest.mark.parametrize(
    "frames",
    [
        [FIRST, NEXT],  # no content header
        [FIRST, ContentBody(b"hello")],  # a body where the header belongs
        [FIRST, HEAD, CLOSE],  # the body missing
        [FIRST, HEAD, NEXT],
        [FIRST, HEAD, ContentBody(b"he"), CLOSE],  # the body cut short
    ],
)
async def test_a_broken_sequence_goes_to_the_channel_reader_whole(frames: list[Any]) -> None:
    """aiormq's reader then refuses it and closes the channel: the source reconnects and
    RabbitMQ redelivers; no delivery is half taken, so none can be acked unseen."""
    channel, original, got = installed()
    for frame in frames:
        await channel.frames.put((0, frame))
    assert got == []
    assert drained(original) == frames
    for item in [deliver(4), header(1), ContentBody(b"z")]:  # after it, deliveries are taken again
        await channel.frames.put((0, item))
    assert [m.body for m in got] == [b"z"]
