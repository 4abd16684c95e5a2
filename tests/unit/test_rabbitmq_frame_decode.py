"""frame_decode decodes Basic.Deliver and content header frames into exactly what pamqp's
`frame.unmarshal` makes of them, and leaves every other frame, and every unusual one, to pamqp.

The reference is pamqp itself: every frame here is marshalled by `pamqp.frame.marshal` (or, for
what pamqp would not write, built byte by byte), decoded both ways, and the two outcomes compared:
the same type, bytes consumed and channel, the same attribute values (slots and `__dict__`), the
same bytes when marshalled again; or the same exception type and message. For the frames the fast
path is meant for, the tests also check that it took them (`decode_fast` is not None), so the
comparison is not pamqp against itself.
"""

from __future__ import annotations

import datetime
import decimal
import re
import struct
from contextlib import AbstractContextManager, nullcontext
from typing import Any
from unittest import mock

import pamqp.frame
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pamqp import commands as spec
from pamqp.base import Frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader, ProtocolHeader
from pamqp.heartbeat import Heartbeat

from bridge.brokers.rabbitmq import frame_decode

UTC = datetime.UTC
PROPERTY_NAMES = list(spec.Basic.Properties.flags)


# -- comparing the two decoders -----------------------------------------------------------------


def state(value: Any) -> Any:
    """What a decoded object holds, with every value's type (True is not 1 here): its type, its
    slots' values and its __dict__, down through the content header's properties and tables."""
    if isinstance(value, spec.Basic.Properties | Frame | ContentHeader | ContentBody | Heartbeat | ProtocolHeader):
        slots = {name: state(getattr(value, name)) for name in getattr(value, "__slots__", [])}
        return type(value), slots, {name: state(item) for name, item in vars(value).items()}
    if isinstance(value, dict):
        return dict, [(key, state(item)) for key, item in value.items()]  # in order
    if isinstance(value, list):
        return list, [state(item) for item in value]
    if isinstance(value, datetime.datetime):
        return datetime.datetime, value, value.tzinfo
    return type(value), value


def outcome(decoder: Any, data: bytes) -> tuple[Any, ...]:
    try:
        consumed, channel, frame = decoder(data)
    except Exception as e:  # the exception is what is compared
        # pamqp's messages name the method object, whose repr has its address.
        return "raised", type(e), re.sub(r"0x[0-9a-f]+", "0x…", str(e))
    return "decoded", consumed, channel, state(frame)


def unchecked_exchange_names() -> AbstractContextManager[Any]:
    """Basic.Deliver marshals whatever exchange name it holds (it checks it against the spec's
    regex and length limit otherwise; pamqp's decoder never does)."""
    return mock.patch.object(spec.Basic.Deliver, "validate", return_value=None)


def marshalled_again(frame: Any, channel: int) -> bytes | type[Exception]:
    try:
        return pamqp.frame.marshal(frame, channel)
    except Exception as e:
        return type(e)


def assert_same_as_pamqp(data: bytes, *, fast: bool, unchecked: bool = False, round_trip: bool = True) -> None:
    """frame_decode.unmarshal(data) comes out as pamqp.frame.unmarshal(data); `fast`: and its own
    decoder made it, which marshals again to what pamqp's marshals to and, with `round_trip`, to
    the frame's own bytes (not where pamqp's decoding loses something: a timestamp past 2106, a
    string present but empty). `unchecked`: marshal without Basic.Deliver's exchange-name check
    (pamqp decodes names it would not write)."""
    expected = outcome(pamqp.frame.unmarshal, data)
    assert outcome(frame_decode.unmarshal, data) == expected
    fast_result = frame_decode.decode_fast(data)
    assert (fast_result is not None) == fast, (fast_result, expected)
    if fast_result is None:
        return
    assert outcome(lambda _: fast_result, data) == expected
    _, channel, frame = fast_result
    _, _, pamqp_frame = pamqp.frame.unmarshal(data)
    check: AbstractContextManager[Any] = unchecked_exchange_names() if unchecked else nullcontext()
    with check:
        again = marshalled_again(frame, channel)
        assert again == marshalled_again(pamqp_frame, channel)
    if round_trip:
        assert again == data[: consumed_of(data)]


def consumed_of(data: bytes) -> int:
    return 8 + struct.unpack_from(">I", data, 3)[0]


def frame_bytes(frame_type: int, channel: int, payload: bytes, end: int = 0xCE) -> bytes:
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + bytes([end])


# -- strategies --------------------------------------------------------------------------------

# A short string is at most 255 bytes of UTF-8: any text of up to 63 characters, or ASCII up to 255.
short_strings = st.one_of(
    st.text(max_size=63),
    st.text(alphabet=st.characters(max_codepoint=127), min_size=64, max_size=255),
    st.sampled_from(["", "bridge", "amq.topic", "orders.created", "ctag-1.2"]),
)
channels = st.integers(0, 65535)
delivery_tags = st.integers(0, 2**64 - 1)

table_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(width=32, allow_nan=False),  # pamqp writes a float as 32 bits ('f')
    st.builds(
        lambda mantissa, scale: decimal.Decimal(mantissa).scaleb(-scale),
        st.integers(-(2**31), 2**31 - 1),
        st.integers(0, 255),
    ),
    st.text(max_size=40),
    st.datetimes(  # up to 2106: a later one comes back as milliseconds (test_any_timestamp_...)
        min_value=datetime.datetime(1970, 1, 2), max_value=datetime.datetime(2106, 1, 1), timezones=st.just(UTC)
    ),
    st.binary(max_size=20).map(bytearray),  # pamqp writes a bytearray, not bytes
)
table_values = st.recursive(
    table_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=20), children, max_size=4),
    ),
    max_leaves=12,
)
tables = st.dictionaries(st.text(max_size=30), table_values, max_size=6)
timestamps = st.datetimes(
    min_value=datetime.datetime(1970, 1, 1), max_value=datetime.datetime(9999, 12, 31), timezones=st.just(UTC)
) | st.datetimes(min_value=datetime.datetime(1970, 1, 2), max_value=datetime.datetime(2100, 1, 1))  # naive: UTC
octets = st.integers(0, 255)

PROPERTY_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "content_type": short_strings,
    "content_encoding": short_strings,
    "headers": tables,
    "delivery_mode": octets,
    "priority": octets,
    "correlation_id": short_strings,
    "reply_to": short_strings,
    "expiration": short_strings,
    "message_id": short_strings,
    "timestamp": timestamps,
    "message_type": short_strings,
    "user_id": short_strings,
    "app_id": short_strings,
    "cluster_id": short_strings,
}
property_sets = st.fixed_dictionaries({}, optional=PROPERTY_VALUES)


def properties(values: dict[str, Any]) -> spec.Basic.Properties:
    """Basic.Properties holding `values`, set after __init__: its validation refuses a cluster id
    or a delivery mode other than 1 and 2, which pamqp writes and decodes all the same."""
    result = spec.Basic.Properties()
    for name, value in values.items():
        setattr(result, name, value)
    return result


def deliver_frame(
    consumer_tag: str, delivery_tag: int, redelivered: bool, exchange: str, routing_key: str, channel: int
) -> tuple[bytes, bool]:
    """Basic.Deliver marshalled by pamqp, and whether the exchange is one pamqp would refuse to
    write (it decodes it all the same). A tag of 2**63 or more is written as its two's complement,
    the same eight bytes: pamqp's writer takes the signed range only."""
    method = spec.Basic.Deliver.__new__(spec.Basic.Deliver)
    method.consumer_tag, method.delivery_tag, method.redelivered = consumer_tag, delivery_tag, redelivered
    method.exchange, method.routing_key = exchange, routing_key
    if delivery_tag >= 2**63:
        method.delivery_tag = delivery_tag - 2**64
    try:
        method.validate()
    except ValueError:
        with unchecked_exchange_names():
            return pamqp.frame.marshal(method, channel), True
    return pamqp.frame.marshal(method, channel), False


TYPICAL_PROPERTIES = {
    "content_type": "application/octet-stream",
    "delivery_mode": 2,
    "message_id": "message-1",
    "timestamp": datetime.datetime(2026, 12, 5, tzinfo=UTC),
    "headers": {"trace-id": "trace-1"},
}


# -- Basic.Deliver -----------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(short_strings, delivery_tags, st.booleans(), short_strings, short_strings, channels)
@example("bridge", 1, False, "orders", "o.new", 1)
@example("", 2**63, True, "", "", 0)
@example("", 0, False, "", "", 0)
@example("", 2**64 - 1, True, "ünïcødé exchange, not a valid name", "r" * 255, 65535)
def test_a_deliver_decodes_as_pamqp_decodes_it(
    consumer_tag: str, delivery_tag: int, redelivered: bool, exchange: str, routing_key: str, channel: int
) -> None:
    data, unchecked = deliver_frame(consumer_tag, delivery_tag, redelivered, exchange, routing_key, channel)
    assert_same_as_pamqp(data, fast=True, unchecked=unchecked)
    _, _, method = frame_decode.unmarshal(data)
    assert isinstance(method, spec.Basic.Deliver)
    assert (method.consumer_tag, method.redelivered, method.exchange, method.routing_key) == (
        consumer_tag,
        redelivered,
        exchange,
        routing_key,
    )
    # pamqp reads the tag as signed: one of 2**63 or more comes out negative, from both.
    assert method.delivery_tag == (delivery_tag if delivery_tag < 2**63 else delivery_tag - 2**64)


def test_a_deliver_followed_by_more_bytes_is_decoded_alone() -> None:
    data, _ = deliver_frame("ctag", 7, False, "x", "k", 1)
    assert_same_as_pamqp(data + data + b"more", fast=True)
    assert frame_decode.unmarshal(data + b"more")[0] == len(data)


@pytest.mark.parametrize("bits", [0x02, 0x80, 0xFF, 0xFE])
def test_a_deliver_with_reserved_bits_set_goes_to_pamqp(bits: int) -> None:
    """pamqp reads bit 0 and ignores the rest; unusual, so it is pamqp's to decode."""
    data = bytearray(deliver_frame("ctag", 7, False, "x", "k", 1)[0])
    data[7 + 4 + 5 + 8] = bits  # header, index, "ctag" as a short string, the tag
    assert_same_as_pamqp(bytes(data), fast=False)


def test_a_deliver_with_bytes_left_over_goes_to_pamqp() -> None:
    """pamqp ignores bytes after the last argument; the fast path does not take such a frame."""
    data, _ = deliver_frame("ctag", 7, True, "x", "k", 1)
    payload = data[7:-1]
    assert_same_as_pamqp(frame_bytes(1, 1, payload + b"\x00"), fast=False)
    assert_same_as_pamqp(frame_bytes(1, 1, payload + b"\x03abc"), fast=False)


@pytest.mark.parametrize("field", ["consumer_tag", "exchange", "routing_key"])
def test_a_deliver_with_a_string_that_is_not_utf8_raises_as_pamqp_raises(field: str) -> None:
    values = {"consumer_tag": b"ctag", "exchange": b"x", "routing_key": b"k"}
    values[field] = b"\xff\xfe"
    payload = (
        struct.pack(">I", spec.Basic.Deliver.index)
        + bytes([len(values["consumer_tag"])])
        + values["consumer_tag"]
        + struct.pack(">QB", 7, 0)
        + bytes([len(values["exchange"])])
        + values["exchange"]
        + bytes([len(values["routing_key"])])
        + values["routing_key"]
    )
    assert_same_as_pamqp(frame_bytes(1, 1, payload), fast=False)
    with pytest.raises(pamqp.exceptions.UnmarshalingException):
        frame_decode.unmarshal(frame_bytes(1, 1, payload))


# -- content headers ---------------------------------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(property_sets, st.integers(0, 2**64 - 1), channels)
@example(TYPICAL_PROPERTIES, 100, 1)
@example({}, 0, 0)
@example({"timestamp": datetime.datetime(1970, 1, 1, tzinfo=UTC)}, 0, 0)
@example({name: "" for name in PROPERTY_NAMES if PROPERTY_VALUES[name] is short_strings}, 1, 1)
@example({"headers": {}, "delivery_mode": 0, "priority": 255, "cluster_id": "not empty"}, 5, 2)
@example({"timestamp": datetime.datetime(2200, 1, 1, tzinfo=UTC)}, 1, 1)  # past 2106: pamqp reads milliseconds
def test_a_content_header_decodes_as_pamqp_decodes_it(values: dict[str, Any], body_size: int, channel: int) -> None:
    data = pamqp.frame.marshal(ContentHeader(0, body_size, properties(values)), channel)
    written = values.get("timestamp")
    seconds = 0 if written is None else int(written.replace(tzinfo=UTC).timestamp())
    assert_same_as_pamqp(data, fast=True, round_trip=seconds <= 0xFFFFFFFF)
    _, _, header = frame_decode.unmarshal(data)
    _, _, pamqp_header = pamqp.frame.unmarshal(data)
    assert isinstance(header, ContentHeader)
    assert isinstance(pamqp_header, ContentHeader)
    assert header.properties == pamqp_header.properties
    timestamp = header.properties.timestamp
    assert timestamp is None or timestamp.tzinfo is UTC


def test_the_same_timestamp_twice_is_the_same_value() -> None:
    """The fast path keeps the last timestamp it made (a datetime is immutable)."""
    first = pamqp.frame.marshal(ContentHeader(0, 1, properties({"timestamp": datetime.datetime(2026, 1, 1)})), 1)
    second = pamqp.frame.marshal(ContentHeader(0, 1, properties({"timestamp": datetime.datetime(2027, 1, 1)})), 1)
    for data in (first, first, second, first):
        assert_same_as_pamqp(data, fast=True)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**64 - 1))
@example(0xFFFFFFFF)
@example(0x100000000)
@example(253402300799)  # 9999-12-31T23:59:59, read as milliseconds
@example(2**64 - 1)  # a year past 9999 even as milliseconds: pamqp raises
def test_any_timestamp_decodes_or_fails_as_pamqp(raw: int) -> None:
    payload = struct.pack(">HHQHQ", 60, 0, 1, 0x0040, raw)
    data = frame_bytes(2, 1, payload)
    expected = outcome(pamqp.frame.unmarshal, data)
    assert_same_as_pamqp(data, fast=expected[0] == "decoded", round_trip=raw <= 0xFFFFFFFF)


def header_payload(flags: int, properties_bytes: bytes, class_id: int = 60, weight: int = 0) -> bytes:
    return struct.pack(">HHQH", class_id, weight, 100, flags) + properties_bytes


@pytest.mark.parametrize(
    "payload",
    [
        # A second flags word (bit 0 of the first): pamqp reads it, the fast path leaves it to pamqp.
        struct.pack(">HHQHH", 60, 0, 100, 0x8001, 0x0000) + b"\x04text",
        struct.pack(">HHQHH", 60, 0, 100, 0x0001, 0x8000),
        header_payload(0x0002, b""),  # the reserved bit
        header_payload(0x8002, b"\x04text"),
        header_payload(0x8000, b"\x04text", class_id=50),  # not Basic: pamqp decodes Basic.Properties anyway
        header_payload(0x8000, b"\x04text", weight=1),
        header_payload(0x8000, b"\x04text" + b"left over"),
        header_payload(0x0000, b"\x00"),
        header_payload(0x8000, b"\x04\xff\xfe\xfd\xfc"),  # not UTF-8
        header_payload(0x2000, struct.pack(">I", 100) + b"short"),  # a table longer than the frame
        header_payload(0x2000, struct.pack(">I", 3) + b"\x01k?"),  # a field of an unknown type
        header_payload(0x2000, struct.pack(">I", 6) + b"\x01kS" + struct.pack(">I", 8) + b"12345678"),
        header_payload(0x2000, struct.pack(">I", 2) + b"\x01\xff"),  # a key that is not UTF-8
        header_payload(0x2000 | 0x1000, struct.pack(">I", 0)),  # the delivery mode missing
    ],
)
def test_unusual_content_headers_go_to_pamqp(payload: bytes) -> None:
    assert_same_as_pamqp(frame_bytes(2, 3, payload), fast=False)


def test_a_table_value_reading_past_the_table_reads_what_pamqp_reads() -> None:
    """pamqp gives its table decoder the rest of the payload: a long string inside a table may
    run past the table's end into the next property's bytes, and does so here too."""
    table = struct.pack(">I", 7) + b"\x01kS" + struct.pack(">I", 4)  # its string's 4 bytes are outside it
    payload = header_payload(0x2000 | 0x0080, table + b"\x03abc")  # ... they are the message id "abc"
    assert_same_as_pamqp(frame_bytes(2, 1, payload), fast=True, round_trip=False)
    _, _, header = frame_decode.unmarshal(frame_bytes(2, 1, payload))
    assert isinstance(header, ContentHeader)
    assert header.properties.headers == {"k": "\x03abc"}
    assert header.properties.message_id == "abc"


# -- everything else ---------------------------------------------------------------------------

OTHER_FRAMES = {
    "Basic.ConsumeOk": spec.Basic.ConsumeOk("ctag"),
    "Basic.Cancel": spec.Basic.Cancel("ctag", nowait=True),
    "Basic.CancelOk": spec.Basic.CancelOk("ctag"),
    "Basic.GetOk": spec.Basic.GetOk(delivery_tag=1, redelivered=True, exchange="x", routing_key="k", message_count=3),
    "Basic.Return": spec.Basic.Return(reply_code=312, reply_text="NO_ROUTE", exchange="x", routing_key="k"),
    "Basic.Ack": spec.Basic.Ack(delivery_tag=5, multiple=True),
    "Channel.Close": spec.Channel.Close(reply_code=406, reply_text="PRECONDITION_FAILED", class_id=60, method_id=40),
    "Channel.OpenOk": spec.Channel.OpenOk(),
    "Connection.Tune": spec.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=60),
    "Connection.Start": spec.Connection.Start(server_properties={"product": "RabbitMQ"}, locales="en_US"),
    "body": ContentBody(b"x" * 100),
    "heartbeat": Heartbeat(),
    "protocol header": ProtocolHeader(),
}


@pytest.mark.parametrize("name", OTHER_FRAMES)
def test_other_frames_go_to_pamqp(name: str) -> None:
    assert_same_as_pamqp(pamqp.frame.marshal(OTHER_FRAMES[name], 1), fast=False)


def typical_frames() -> list[bytes]:
    return [
        deliver_frame("bridge", 42, True, "orders", "o.new", 1)[0],
        pamqp.frame.marshal(ContentHeader(0, 100, properties(TYPICAL_PROPERTIES)), 1),
    ]


@pytest.mark.parametrize("data", typical_frames(), ids=["deliver", "content header"])
def test_every_truncation_of_a_typical_frame_comes_out_as_from_pamqp(data: bytes) -> None:
    """The payload cut at every length (the frame's size says so): pamqp reads some of these (it
    reads a short string past the payload's end as a shorter string), refuses the rest."""
    payload = data[7:-1]
    for length in range(len(payload)):
        assert_same_as_pamqp(frame_bytes(data[0], 1, payload[:length]), fast=False)
    # ... and the frame itself cut short, as bytes that never said the frame was shorter.
    for length in range(len(data)):
        assert_same_as_pamqp(data[:length], fast=False)


@pytest.mark.parametrize("data", typical_frames(), ids=["deliver", "content header"])
@pytest.mark.parametrize("end", [0x00, 0xCD, 0xFF])
def test_a_bad_frame_end_byte_comes_out_as_from_pamqp(data: bytes, end: int) -> None:
    assert_same_as_pamqp(data[:-1] + bytes([end]), fast=False)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from([1, 2]),
    st.sampled_from([b"", struct.pack(">I", spec.Basic.Deliver.index), struct.pack(">HHQ", 60, 0, 100)]),
    st.binary(max_size=80),
)
def test_garbage_comes_out_as_from_pamqp(frame_type: int, start: bytes, rest: bytes) -> None:
    data = frame_bytes(frame_type, 1, start + rest)
    expected = outcome(pamqp.frame.unmarshal, data)
    assert outcome(frame_decode.unmarshal, data) == expected
    if frame_decode.decode_fast(data) is not None:  # garbage that happens to be a well-formed frame
        assert_same_as_pamqp(data, fast=True, unchecked=True, round_trip=False)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_any_bytes_come_out_as_from_pamqp(data: bytes) -> None:
    assert outcome(frame_decode.unmarshal, data) == outcome(pamqp.frame.unmarshal, data)
