"""Decodes the two frames every delivery brings, Basic.Deliver and its content header, without
pamqp's general decoder, into the very objects pamqp's would make.

pamqp's `frame.unmarshal` decodes a method's arguments by looking up each one's type by name,
slicing the rest of the payload after every field and setting attributes one `setattr` at a
time: about 15 µs for these two frames (bench/amqp_frames.py), most of the 20 µs the buffered
receiver spent per 100-byte delivery. Here the two layouts are written out, read with `struct`
at offsets, and the objects are made with `__new__` and plain attribute stores (pamqp makes them
with `__init__`, whose defaults its decoder then overwrites; Basic.Deliver's `__init__` also runs
the exchange-name regex, which its decoder never applies). A headers table of text,
integers, booleans and voids only (what headers mostly hold) is decoded here too, as pamqp's
`decode.field_table` decodes those types; any other type, or a value that does not end inside
the table, has the whole table decoded by pamqp's own `field_table`, on the same bytes pamqp
gives it, so its values are pamqp's to the last nested type.

Only the usual shape takes this path: a frame whose payload is used up exactly, with Basic's
class id, weight 0, a single property-flags word, no reserved bit set and UTF-8 strings. Anything
else, and any error on the way, goes to `pamqp.frame.unmarshal` itself, so it gives what pamqp
gives and raises what pamqp raises. Where pamqp is lenient (it reads past a short string's end,
ignores bytes left over, never validates what it decodes) that is where this falls back, or, for
validation, does as pamqp does: a decoded exchange name is not checked against the spec's regex.
Two pamqp decodings are kept on purpose: the delivery tag is read as a signed 64-bit integer (a
tag of 2**63 or more comes out negative, as from pamqp), and a timestamp above 2**32-1 is taken
for milliseconds, giving a tz-aware UTC datetime as pamqp's. One difference, seen only with
`is`: headers in a row with the same timestamp share one (immutable) datetime.
"""

from __future__ import annotations

import datetime
import struct
from typing import Any

import pamqp.frame
from pamqp import commands, decode
from pamqp.constants import FRAME_END, FRAME_HEADER, FRAME_HEADER_SIZE, FRAME_METHOD
from pamqp.header import ContentHeader

DecodedFrame = tuple[int, int, pamqp.frame.FrameTypes]

Deliver = commands.Basic.Deliver
Properties = commands.Basic.Properties

_frame_header = struct.Struct(">BHI").unpack_from  # type, channel, payload size
_method_index = struct.Struct(">I").unpack_from  # class id and method id as pamqp's INDEX_MAPPING keys
_long_long_int = struct.Struct(">q").unpack_from  # signed, as pamqp's `longlong`
_content_header = struct.Struct(">HHQH").unpack_from  # class id, weight, body size, first flags word
_timestamp = struct.Struct(">Q").unpack_from

_DELIVER_INDEX = Deliver.index  # 0x003C003C
_BASIC = commands.Basic.frame_id  # 60
_UTC = datetime.UTC
_fromtimestamp = datetime.datetime.fromtimestamp
_field_table = decode.field_table

# Basic.Properties in flag order, with its flag bits as written in _header below (bit 0 says
# another flags word follows, bit 1 is reserved).
assert list(Properties.flags.items()) == [
    ("content_type", 0x8000),
    ("content_encoding", 0x4000),
    ("headers", 0x2000),
    ("delivery_mode", 0x1000),
    ("priority", 0x0800),
    ("correlation_id", 0x0400),
    ("reply_to", 0x0200),
    ("expiration", 0x0100),
    ("message_id", 0x0080),
    ("timestamp", 0x0040),
    ("message_type", 0x0020),
    ("user_id", 0x0010),
    ("app_id", 0x0008),
    ("cluster_id", 0x0004),
], "pamqp's Basic.Properties changed: frame_decode.py reads the old layout"
assert Properties.__slots__ == list(Properties.flags)

# The timestamp last decoded: consecutive messages mostly carry the same second, and a datetime
# costs about half a microsecond to make. It is immutable, so sharing one between frames is safe.
_last_timestamp: tuple[int, datetime.datetime] = (-1, datetime.datetime.min)  # -1: no 64-bit unsigned

# What a failed read raises here: a string that is not UTF-8 (UnicodeDecodeError is a
# ValueError), a struct read past the data, an index past it, pamqp's table decoder refusing.
_DECODE_ERRORS = (ValueError, IndexError, struct.error, OverflowError, OSError, TypeError, RecursionError)


def unmarshal(data: bytes) -> DecodedFrame:
    """What `pamqp.frame.unmarshal(data)` returns or raises, faster for Basic.Deliver and content
    header frames: `(bytes consumed, channel, frame)`."""
    frame = decode_fast(data)
    if frame is None:
        return pamqp.frame.unmarshal(data)
    return frame


def decode_fast(data: bytes) -> DecodedFrame | None:
    """The frame at the start of `data` decoded here, or None when it is not a Basic.Deliver or
    content header frame of the usual shape (pamqp's `unmarshal` is then the one to ask)."""
    if len(data) < FRAME_HEADER_SIZE + 1:
        return None
    frame_type, channel, size = _frame_header(data, 0)
    stop = FRAME_HEADER_SIZE + size  # where the payload ends and the frame-end byte is
    if not size or stop >= len(data) or data[stop] != FRAME_END:
        return None
    try:
        if frame_type == FRAME_METHOD:
            if size < 4 or _method_index(data, FRAME_HEADER_SIZE)[0] != _DELIVER_INDEX:
                return None
            method = _deliver(data, FRAME_HEADER_SIZE + 4, stop)
            return None if method is None else (stop + 1, channel, method)
        if frame_type == FRAME_HEADER:
            header = _header(data, FRAME_HEADER_SIZE, stop)
            return None if header is None else (stop + 1, channel, header)
    except _DECODE_ERRORS:
        return None
    return None


# Every read below moves the position forward, so the one check at the end (the payload used up
# exactly) also refuses a frame where some read ran past the payload; a read past `data` itself
# raises or yields a position past the end.


DeliverFields = tuple[str, int, bool, str, str]  # consumer_tag, delivery_tag, redelivered, exchange, routing_key
# body size, the properties present under aio-pika's names (all but headers and cluster_id, in flag
# order, as records.amqp_message lists them), the headers table (None when absent), cluster_id.
HeaderFields = tuple[int, dict[str, Any], dict[str, Any] | None, str]


def _deliver(data: bytes, position: int, stop: int) -> Deliver | None:
    fields = deliver_fields(data, position, stop)
    if fields is None:
        return None
    method = Deliver.__new__(Deliver)
    method.consumer_tag, method.delivery_tag, method.redelivered, method.exchange, method.routing_key = fields
    return method


def deliver_fields(data: bytes | bytearray, position: int, stop: int) -> DeliverFields | None:
    """Basic.Deliver's arguments from its payload after the method index: consumer_tag shortstr,
    delivery_tag longlong, redelivered bit (the first of an octet), exchange shortstr,
    routing_key shortstr. None when the payload is not used up exactly. Raises _DECODE_ERRORS."""
    length = data[position]
    position += 1
    consumer_tag = data[position : position + length].decode("utf-8")
    position += length
    (delivery_tag,) = _long_long_int(data, position)
    bits = data[position + 8]
    position += 9
    length = data[position]
    position += 1
    exchange = data[position : position + length].decode("utf-8")
    position += length
    length = data[position]
    position += 1
    routing_key = data[position : position + length].decode("utf-8")
    position += length
    if position != stop or bits > 1:  # the other seven bits are reserved: pamqp ignores them
        return None
    return consumer_tag, delivery_tag, bits == 1, exchange, routing_key


def _header(data: bytes, position: int, stop: int) -> ContentHeader | None:
    fields = header_fields(data, position, stop)
    if fields is None:
        return None
    body_size, values, headers, cluster_id = fields
    get = values.get
    properties = Properties.__new__(Properties)  # its __init__ validates; pamqp's decoder does not
    properties.content_type = get("content_type")
    properties.content_encoding = get("content_encoding")
    properties.headers = headers
    properties.delivery_mode = get("delivery_mode")
    properties.priority = get("priority")
    properties.correlation_id = get("correlation_id")
    properties.reply_to = get("reply_to")
    properties.expiration = get("expiration")
    properties.message_id = get("message_id")
    properties.timestamp = get("timestamp")
    properties.message_type = get("type")
    properties.user_id = get("user_id")
    properties.app_id = get("app_id")
    properties.cluster_id = cluster_id
    header = ContentHeader.__new__(ContentHeader)
    header.class_id = _BASIC  # type: ignore[assignment]  # pamqp types it None; its decoder stores the int
    header.weight = 0
    header.body_size = body_size
    header.properties = properties
    return header


def header_fields(data: bytes, position: int, stop: int) -> HeaderFields | None:  # noqa: PLR0912, PLR0915 (one branch per property, written out for speed)
    """A content header's payload: class id, weight, body size, property flags, then each
    property present, in flag order. None when it is not of the usual shape (see the module's
    docstring) or not used up exactly. Raises _DECODE_ERRORS."""
    global _last_timestamp  # noqa: PLW0603 (a one-entry cache)
    class_id, weight, body_size, flags = _content_header(data, position)
    if class_id != _BASIC or weight or flags & 0x0003:  # another flags word, the reserved bit
        return None
    position += 14
    values: dict[str, Any] = {}
    headers: dict[str, Any] | None = None
    cluster_id = ""  # Basic.Properties' default, where the others' is None
    if flags & 0x8000:
        length = data[position]
        position += 1
        values["content_type"] = data[position : position + length].decode("utf-8")
        position += length
    if flags & 0x4000:
        length = data[position]
        position += 1
        values["content_encoding"] = data[position : position + length].decode("utf-8")
        position += length
    if flags & 0x2000:
        # pamqp hands its table decoder the rest of the payload, not just the table: a value
        # inside may read past the table's end, and must read the same bytes here.
        table = _table(data, position, stop) or _field_table(data[position:stop])
        consumed, headers = table
        position += consumed
    if flags & 0x1000:
        values["delivery_mode"] = data[position]
        position += 1
    if flags & 0x0800:
        values["priority"] = data[position]
        position += 1
    if flags & 0x0400:
        length = data[position]
        position += 1
        values["correlation_id"] = data[position : position + length].decode("utf-8")
        position += length
    if flags & 0x0200:
        length = data[position]
        position += 1
        values["reply_to"] = data[position : position + length].decode("utf-8")
        position += length
    if flags & 0x0100:
        length = data[position]
        position += 1
        values["expiration"] = data[position : position + length].decode("utf-8")
        position += length
    if flags & 0x0080:
        length = data[position]
        position += 1
        values["message_id"] = data[position : position + length].decode("utf-8")
        position += length
    if flags & 0x0040:
        (seconds,) = _timestamp(data, position)
        position += 8
        last_seconds, timestamp = _last_timestamp
        if seconds != last_seconds:
            # As pamqp.decode.timestamp: past 2106 it must be milliseconds (an int stays an int).
            timestamp = _fromtimestamp(seconds / 1000.0 if seconds > 0xFFFFFFFF else seconds, tz=_UTC)
            _last_timestamp = seconds, timestamp
        values["timestamp"] = timestamp
    if flags & 0x0020:
        length = data[position]
        position += 1
        values["type"] = data[position : position + length].decode("utf-8")  # pamqp's message_type
        position += length
    if flags & 0x0010:
        length = data[position]
        position += 1
        values["user_id"] = data[position : position + length].decode("utf-8")
        position += length
    if flags & 0x0008:
        length = data[position]
        position += 1
        values["app_id"] = data[position : position + length].decode("utf-8")
        position += length
    if flags & 0x0004:
        length = data[position]
        position += 1
        cluster_id = data[position : position + length].decode("utf-8")
        position += length
    if position != stop:
        return None
    return body_size, values, headers, cluster_id


_uint32 = struct.Struct(">I").unpack_from
# The table value types decoded by _table, as pamqp.decode.TABLE_MAPPING reads them: its reader
# and width (a void: none). 't' is made a bool below, as pamqp's `boolean` does.
_TABLE_NUMBERS: dict[int, tuple[Any, int]] = {
    ord("t"): (struct.Struct("B").unpack_from, 1),
    ord("b"): (struct.Struct(">b").unpack_from, 1),
    ord("B"): (struct.Struct(">B").unpack_from, 1),
    ord("s"): (struct.Struct(">h").unpack_from, 2),
    ord("u"): (struct.Struct(">H").unpack_from, 2),
    ord("I"): (struct.Struct(">l").unpack_from, 4),
    ord("i"): (struct.Struct(">L").unpack_from, 4),
    ord("l"): (struct.Struct(">q").unpack_from, 8),
    ord("L"): (struct.Struct(">q").unpack_from, 8),
    ord("V"): (None, 0),
    0: (None, 0),
}
_LONG_STRING = ord("S")
_BOOLEAN = ord("t")


def _table(data: bytes, position: int, stop: int) -> tuple[int, dict[str, Any]] | None:
    """The field table at `position` as pamqp's `field_table(data[position:stop])` decodes it,
    when every value is a long string, an integer, a boolean or a void and ends inside the table;
    None otherwise (pamqp's decoder is then the one to ask). Raises _DECODE_ERRORS."""
    (length,) = _uint32(data, position)
    end = position + 4 + length
    if end > stop:
        return None
    position += 4
    table: dict[str, Any] = {}
    while position < end:
        key_length = data[position]
        position += 1
        if position + key_length >= end:  # the key and at least its value's type byte
            return None
        key = data[position : position + key_length].decode("utf-8")
        position += key_length
        kind = data[position]
        position += 1
        if kind == _LONG_STRING:
            if position + 4 > end:
                return None
            (size,) = _uint32(data, position)
            position += 4
            if position + size > end:
                return None
            raw = data[position : position + size]
            position += size
            try:
                value: Any = raw.decode("utf-8")
            except UnicodeDecodeError:
                value = raw  # as pamqp's long_str: the bytes, when they are not UTF-8
        else:
            number = _TABLE_NUMBERS.get(kind)
            if number is None:
                return None
            read, width = number
            if position + width > end:
                return None
            value = None if read is None else read(data, position)[0]
            if kind == _BOOLEAN:
                value = bool(value)
            position += width
        table[key] = value
    return 4 + length, table
