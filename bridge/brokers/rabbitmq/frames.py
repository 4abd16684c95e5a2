"""Reads a connection's AMQP frames from a buffer of large reads instead of three reads per frame.

aiormq's FrameReceiver reads every frame with a BytesIO, an asyncio.Lock and three awaited
`readexactly` calls (type, then channel and size, then payload and end byte): a consumer of
100-byte messages gets three frames per message (Basic.Deliver, content header, body), and the
bridge spent about a quarter of its CPU on RabbitMQ there. This receiver takes whatever the
socket has (up to 256 KiB per read) into one buffer and hands out every complete frame in it
without awaiting; it awaits the stream only when the next frame is not complete yet.

It is a drop-in, so `install` puts it in place of aiormq's class for every connection in the
process: aiormq creates its receiver by that name in `Connection.connect`, reads the handshake
through it and then gives the same object to the connection's reader task. What a caller can
see stays the same: the same `(bytes consumed, channel, frame)` tuples (body and heartbeat frames
are built directly, as pamqp builds them; Basic.Deliver and content headers, pamqp's general
decoder being most of what a delivery cost after buffering, are decoded by frame_decode.py into
the objects pamqp makes, every other or unusual frame by pamqp's own `unmarshal`),
StopAsyncIteration when the stream ended at a frame boundary before the call,
AMQPConnectionError when it ends inside a frame or the socket fails, ProtocolSyntaxError when
the server answers with its protocol header, InvalidFrameError for a frame that does not parse.
Two differences: the frame-end byte is checked here for every frame, where pamqp does not check
it on a heartbeat; and frames already read into the buffer are still handed out after the socket
failed, where aiormq's would raise at once (their bytes would still wait in the StreamReader).

A channel registered with `deliver_directly` (the source's consumer channel) has its complete
deliveries decoded by direct.py straight from the buffer and handed to its sink: those frames
never reach aiormq's reader loop. That loop keeps the time of the last frame it saw for its
heartbeat watchdog, which would take a connection busy with such deliveries for a stuck one; so
after taking any, the receiver hands the loop a Heartbeat (channel 0, which aiormq ignores but
for that time) before it awaits the next read: the connection is alive, as a heartbeat says.
"""

from __future__ import annotations

import asyncio
import struct
import weakref

import aiormq.abc
import aiormq.connection
import pamqp.frame
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError, ProtocolSyntaxError
from pamqp.body import ContentBody
from pamqp.constants import FRAME_BODY, FRAME_END, FRAME_HEADER_SIZE, FRAME_HEARTBEAT, FRAME_METHOD
from pamqp.exceptions import PAMQPException
from pamqp.heartbeat import Heartbeat

from bridge.brokers.rabbitmq import direct, frame_decode

ReceivedFrame = tuple[int, int, pamqp.frame.FrameTypes]

READ_SIZE = 1 << 18  # the most one read takes from the stream; a larger frame takes what it needs
_frame_header = struct.Struct(">BHI").unpack_from  # type, channel, payload size

# aiormq's own class, as it was before install(): the tests and the benchmark compare against it.
ORIGINAL_FRAME_RECEIVER: type[aiormq.connection.FrameReceiver] = aiormq.connection.FrameReceiver

# Each connection's receiver by the task that iterates it (aiormq's reader task, `_reader_task`):
# aiormq keeps the receiver nowhere else, and deliver_directly needs the connection's.
_READERS: weakref.WeakKeyDictionary[asyncio.Task[object], BufferedFrameReceiver] = weakref.WeakKeyDictionary()
_ALIVE: ReceivedFrame = (0, 0, Heartbeat())  # what the reader loop is told after direct deliveries


class BufferedFrameReceiver(aiormq.connection.FrameReceiver):
    """aiormq's FrameReceiver over a buffer: `get_frame` awaits the stream only for a frame that
    is not complete in the buffer yet. `started` and `lock` mean what they mean in aiormq's."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        super().__init__(reader)
        self._buffer = bytearray()
        self._offset = 0  # where the next frame starts in _buffer; what is before it is consumed
        self._direct: dict[int, direct.DirectChannel] = {}  # by channel number: deliver_directly
        self._unreported = False  # deliveries taken directly since the reader loop last saw a frame

    def __aiter__(self) -> BufferedFrameReceiver:
        # aiormq iterates the receiver only in its connection's reader task (the handshake calls
        # get_frame itself): remember whose receiver this is.
        task = asyncio.current_task()
        if task is not None:
            _READERS[task] = self
        return self

    async def get_frame(self) -> ReceivedFrame:
        while True:
            buffer, offset = self._buffer, self._offset
            available = len(buffer) - offset
            if available >= FRAME_HEADER_SIZE:
                if not self.started:
                    self._start(buffer, offset)
                frame_type, channel, size = _frame_header(buffer, offset)
                end = offset + FRAME_HEADER_SIZE + size + 1
                if end <= len(buffer):
                    if frame_type == FRAME_METHOD and channel in self._direct:
                        taken = direct.decode(buffer, offset, channel, self._direct[channel])
                        if taken:
                            self._offset = taken
                            self._unreported = True
                            continue
                    self._offset = end
                    self._unreported = False
                    return _decode(buffer, offset, end, frame_type, channel, size)
                needed = end - offset
            elif available == 0 and self.reader.at_eof():
                # As aiormq's: the stream ended between two frames, before this call.
                del self.reader
                raise StopAsyncIteration
            else:
                needed = FRAME_HEADER_SIZE
            if self._unreported:
                self._unreported = False
                return _ALIVE
            await self._fill(available, needed)

    def deliver_directly(self, channel: int, target: direct.DirectChannel) -> None:
        """Take `channel`'s complete deliveries from the buffer to `target` from now on."""
        self._direct[channel] = target

    def _start(self, buffer: bytearray, offset: int) -> None:
        # The server sends its protocol header instead of Connection.Start when it does not speak
        # the version the client asked for.
        if buffer.startswith(b"AMQP", offset):
            raise ProtocolSyntaxError("Unexpected AMQP protocol header")
        self.started = True

    async def _fill(self, available: int, needed: int) -> None:
        """Append the next read to the buffer; the consumed bytes are dropped once per read."""
        try:
            async with self.lock:
                data = await self.reader.read(max(READ_SIZE, needed - available))
        except ConnectionRefusedError as e:
            raise AMQPConnectionError(f"Server connection refused: {e!r}") from e
        except ConnectionResetError as e:
            raise AMQPConnectionError(f"Server connection reset: {e!r}") from e
        except ConnectionError as e:
            raise AMQPConnectionError(f"Server connection error: {e!r}") from e
        except OSError as e:
            raise AMQPConnectionError(f"Server communication error: {e!r}") from e
        if not data:
            raise AMQPConnectionError(
                f"Server connection unexpectedly closed. Read {available} bytes but {needed} bytes expected"
            )
        buffer = self._buffer
        if self._offset:
            del buffer[: self._offset]  # CPython advances the start; growing copies only the unconsumed rest
            self._offset = 0
        buffer += data


def _decode(buffer: bytearray, offset: int, end: int, frame_type: int, channel: int, size: int) -> ReceivedFrame:
    if buffer[end - 1] != FRAME_END:
        raise InvalidFrameError(
            f"Frame end byte {buffer[end - 1]:#04x}, not {FRAME_END:#04x}: frame type {frame_type}, "
            f"channel {channel}, {size} bytes"
        )
    # What pamqp.frame.unmarshal returns for these two, without its protocol-header test and slices.
    if frame_type == FRAME_BODY and size:
        return end - offset, channel, ContentBody(bytes(buffer[offset + FRAME_HEADER_SIZE : end - 1]))
    if frame_type == FRAME_HEARTBEAT and not size:
        return end - offset, channel, Heartbeat()
    try:
        return frame_decode.unmarshal(bytes(buffer[offset:end]))  # pamqp's unmarshal, faster for the usual two
    except PAMQPException as e:
        raise InvalidFrameError(str(e)) from e


def install() -> None:
    """Make every aiormq connection opened from now on read its frames with BufferedFrameReceiver
    (aiormq looks the class up by name in `Connection.connect`). Idempotent."""
    setattr(aiormq.connection, "FrameReceiver", BufferedFrameReceiver)  # noqa: B010 (mypy: not assignable)


def deliver_directly(channel: aiormq.abc.AbstractChannel, target: direct.DirectChannel) -> bool:
    """Have the receiver of `channel`'s connection take the channel's complete deliveries to
    `target`; False (nothing changed) when that connection does not read with this receiver."""
    task = getattr(channel.connection, "_reader_task", None)
    task = getattr(task, "task", task)  # aiormq wraps its tasks (aiormq.abc.TaskWrapper)
    receiver = _READERS.get(task) if isinstance(task, asyncio.Task) else None
    if receiver is None:
        return False
    receiver.deliver_directly(channel.number, target)
    return True


def installed() -> bool:
    return aiormq.connection.FrameReceiver is BufferedFrameReceiver
