"""A consumer channel's deliveries, assembled as the connection reads their frames.

aiormq passes every frame of a channel through a queue to the channel's reader task, which
awaits the delivery's content header and body frames one by one and then starts a task per
delivery for the consumer callback: four task wake-ups and one new task per message, most of
what a 100-byte message costs the bridge on RabbitMQ beyond what it costs on Kafka. The
source's channel carries nothing but its own consumer's deliveries and a few control frames,
so this takes its place as the channel's frame queue: a delivery's frames (Basic.Deliver, its
content header, its body frames) are put together right where the connection hands them over,
in arrival order, and given to the source's sink without a task switch; every other frame goes
on to the channel's reader unchanged (consume-ok, cancel, close, flow).

Frames of one channel never interleave (AMQP 0-9-1, 4.2.6), so a delivery is always the next
one to three-plus frames. A frame that breaks that sequence (a server bug) is passed on to
the channel's reader, whose own checks close the channel: the source then reconnects, and
RabbitMQ redelivers what was not acknowledged.

With a direct sink (`install(..., direct=...)`) the connection's buffered receiver takes every
delivery complete in its buffer straight to that sink (direct.py); what comes here is then only
what it leaves: a delivery split across reads, or an unusual one. `idle` tells the receiver when
it may take one: not while a delivery is half put together here (which would be a broken
sequence, for aiormq to refuse as before), nor once the channel is closed (aiormq drops a closed
channel's frames).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, cast

import aiormq.abc
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from bridge.brokers.rabbitmq import frames
from bridge.brokers.rabbitmq.direct import DirectChannel, DirectSink

DeliverySink = Callable[[DeliveredMessage], None]
Item = tuple[int, Any]  # (weight, frame), as aiormq's connection puts it on a channel's queue
_TAKEN: tuple[Item, ...] = ()  # what _take passes on for a delivery's frame: nothing, no list per frame


class DeliveryFrames:
    """Stands in for a channel's frame queue (`channel.frames`): it takes the deliveries'
    frames for itself and forwards the rest to the queue it replaced."""

    def __init__(self, channel: aiormq.abc.AbstractChannel, sink: DeliverySink) -> None:
        self._channel = channel
        self._frames: asyncio.Queue[Any] = channel.frames
        self._sink = sink
        self._pending: list[Item] = []  # the delivery being assembled: Deliver, header, body frames
        self._header: ContentHeader | None = None
        self._size = 0

    @classmethod
    def install(
        cls, channel: aiormq.abc.AbstractChannel, sink: DeliverySink, direct: DirectSink | None = None
    ) -> DeliveryFrames:
        """Take over `channel`'s deliveries; before basic_consume, so that every delivery of its
        consumer comes this way and none through aiormq's own path (which would reorder them).
        With `direct`, the deliveries the connection's receiver decodes whole go there instead."""
        delivery_frames = cls(channel, sink)
        channel.frames = cast("asyncio.Queue[Any]", delivery_frames)
        if direct is not None:
            frames.deliver_directly(channel, DirectChannel(delivery_frames.idle, direct))
        return delivery_frames

    def idle(self) -> bool:
        """No delivery half put together here, and the channel open: the receiver may take one."""
        return not self._pending and not self._channel.is_closed

    async def put(self, item: Item) -> None:
        for passed in self._take(item):
            await self._frames.put(passed)

    def put_nowait(self, item: Item) -> None:
        for passed in self._take(item):
            self._frames.put_nowait(passed)

    def __getattr__(self, name: str) -> Any:
        # get, task_done, qsize, empty...: the channel's reader reads the queue this replaced.
        return getattr(self._frames, name)

    def _take(self, item: Item) -> Sequence[Item]:
        """The frames to pass on to the channel's reader: none when `item` belongs to a delivery;
        on a broken sequence, the delivery's frames so far and `item`, for aiormq to refuse."""
        frame = item[1]
        pending = self._pending
        if not pending:
            if type(frame) is spec.Basic.Deliver:
                pending.append(item)
                return _TAKEN
            return [item]
        header = self._header
        if header is None:
            if type(frame) is not ContentHeader:
                return self._broken(item)
            pending.append(item)
            self._header = frame
            if not frame.body_size:
                self._emit()
            return _TAKEN
        if type(frame) is not ContentBody:
            return self._broken(item)
        pending.append(item)
        self._size += len(frame.value)
        if self._size >= header.body_size:
            self._emit()
        return _TAKEN

    def _emit(self) -> None:
        pending, header = self._pending, self._header
        assert header is not None
        parts = [item[1].value for item in pending[2:]]
        body = b"" if not parts else parts[0] if len(parts) == 1 else b"".join(parts)
        self._pending, self._header, self._size = [], None, 0
        delivered = DeliveredMessage(delivery=pending[0][1], header=header, body=body, channel=self._channel)
        self._sink(delivered)

    def _broken(self, item: Item) -> list[Item]:
        passed = [*self._pending, item]
        self._pending, self._header, self._size = [], None, 0
        return passed
