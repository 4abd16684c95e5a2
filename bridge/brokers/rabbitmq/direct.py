"""A consumer channel's complete deliveries decoded straight from the receiver's buffer.

Each delivery is three frames or more (Basic.Deliver, content header, body frames). On the way
in, every frame was decoded into pamqp's objects, went once round aiormq's connection reader
loop (a log call, a `match`, a channel lookup, an awaited put), was put together with the others
into an aiormq DeliveredMessage by `deliveries.DeliveryFrames`, and was then read again by
`records.amqp_message`: about a third of the bridge's CPU on RabbitMQ. For a channel registered
here (the source's consumer channel), `BufferedFrameReceiver` hands a delivery whose frames are
all in its buffer to `decode` instead, which reads the fields the source needs
(`frame_decode.deliver_fields` and `header_fields`, the same decoders the pamqp objects are
made from, so the values are the same) and gives them to the channel's sink in one call.

Anything else goes the way it went before, frame by frame: a delivery not complete in the
buffer yet, a frame of another kind, channel or shape (`decode` answers None for whatever it
does not take whole, and the frames are then decoded and checked as before), any delivery
while `DeliveryFrames` is putting one together, and every delivery once the channel is closed.
Order is kept: the receiver reads the stream in order, and a delivery that went the frame-by-frame
way reached the sink before the receiver reads the frame after its last one.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pamqp.constants import FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEADER_SIZE

from bridge.brokers.rabbitmq import frame_decode

# delivery_tag, redelivered, exchange, routing_key, properties (aio-pika's names), headers, body
DirectSink = Callable[[int, bool, str, str, dict[str, Any], dict[str, Any] | None, bytes], None]

_frame_header = struct.Struct(">BHI").unpack_from  # type, channel, payload size
_method_index = struct.Struct(">I").unpack_from
_DELIVER_INDEX = frame_decode.Deliver.index
_DECODE_ERRORS = frame_decode._DECODE_ERRORS


class DirectChannel:
    """What the receiver needs of a registered channel: whether a delivery may be taken now
    (`idle`: nothing half put together by the frame-by-frame way, the channel open) and where
    it goes (`sink`)."""

    __slots__ = ("idle", "sink")

    def __init__(self, idle: Callable[[], bool], sink: DirectSink) -> None:
        self.idle = idle
        self.sink = sink


def decode(buffer: bytearray, offset: int, channel: int, target: DirectChannel) -> int:
    """Decode the delivery whose Basic.Deliver frame starts at `offset` (a complete method frame
    of `channel`), give it to `target.sink`, and return where the frame after it starts; 0 when
    it is not taken (not a Basic.Deliver of the usual shape, not complete in the buffer, or
    anything unusual), nothing given and the buffer untouched."""
    try:
        decoded = _decode(buffer, offset, channel)
    except _DECODE_ERRORS:
        return 0
    if decoded is None or not target.idle():
        return 0
    end, tag, redelivered, exchange, routing_key, properties, headers, body = decoded
    target.sink(
        tag, redelivered, exchange, routing_key, properties, headers, body
    )  # outside the try: its errors are its own
    return end


Decoded = tuple[int, int, bool, str, str, dict[str, Any], dict[str, Any] | None, bytes]


def _decode(buffer: bytearray, offset: int, channel: int) -> Decoded | None:
    size = _frame_header(buffer, offset)[2]
    start = offset + FRAME_HEADER_SIZE
    stop = start + size  # the Basic.Deliver's frame-end byte
    if size < 4 or buffer[stop] != FRAME_END or _method_index(buffer, start)[0] != _DELIVER_INDEX:
        return None
    deliver = frame_decode.deliver_fields(buffer, start + 4, stop)
    if deliver is None:
        return None
    # The content header, complete, of the same channel, ending with the frame-end byte.
    position = stop + 1
    available = len(buffer)
    if position + FRAME_HEADER_SIZE > available:
        return None
    frame_type, frame_channel, size = _frame_header(buffer, position)
    start = position + FRAME_HEADER_SIZE
    stop = start + size
    if frame_type != FRAME_HEADER or frame_channel != channel or stop >= available or buffer[stop] != FRAME_END:
        return None
    # As bytes, as the frame-by-frame way gives it: pamqp's table decoder reads byte arrays as
    # slices of what it is given (a bytearray's would be bytearrays).
    header = frame_decode.header_fields(bytes(buffer[start:stop]), 0, size)
    if header is None:
        return None
    body_size, properties, headers, _cluster_id = header
    position = stop + 1
    # The body frames until body_size is reached (DeliveryFrames' rule: the last may overshoot).
    parts: list[bytes] = []
    received = 0
    while received < body_size:
        if position + FRAME_HEADER_SIZE > available:
            return None
        frame_type, frame_channel, size = _frame_header(buffer, position)
        start = position + FRAME_HEADER_SIZE
        stop = start + size
        if frame_type != FRAME_BODY or frame_channel != channel or not size:
            return None
        if stop >= available or buffer[stop] != FRAME_END:
            return None
        parts.append(bytes(buffer[start:stop]))
        received += size
        position = stop + 1
    body = parts[0] if len(parts) == 1 else b"".join(parts)
    _consumer_tag, tag, redelivered, exchange, routing_key = deliver
    return position, tag, redelivered, exchange, routing_key, properties, headers, body
