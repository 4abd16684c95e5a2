"""The reverse switch record is input like any phase record: only what `reverse --to` writes is
followed; anything else is refused with a reason that never quotes the input."""

from __future__ import annotations

import json

import pytest

from bridge.cutover.reverse_switch import Switch, SwitchRecord, switch_key
from bridge.errors import InvalidRecordError
from bridge.handoff.stored import Stored, position_of, stream_position


def test_a_written_record_reads_back() -> None:
    record = SwitchRecord(Switch.OFF, "ops@host", "2026-12-05T10:00:00Z", "moving orders", revision=7)
    again = SwitchRecord.from_json(record.to_json(), 7)
    assert again == record
    assert not again.running
    assert SwitchRecord().running  # no record: on
    assert switch_key("orders", "to-rabbit") == "reverse.orders.to-rabbit"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"", "empty value"),
        (b"off", "not JSON"),
        (b"[]", "a JSON array, not an object"),
        (json.dumps({"switch": "paused", "changed_by": "x", "changed_at": "2026-12-05T10:00:00Z"}).encode(), "switch"),
        (json.dumps({"switch": "off", "changed_by": "x", "changed_at": "yesterday"}).encode(), "changed_at"),
        (json.dumps({"switch": "off", "changed_by": "x", "changed_at": "2026-12-05T10:00:00"}).encode(), "time zone"),
        (json.dumps({"switch": "off", "changed_by": "", "changed_at": "2026-12-05T10:00:00Z"}).encode(), "changed_by"),
        (json.dumps({"switch": "off", "changed_by": "x", "changed_at": "2026-12-05T10:00:00Z", "x": 1}).encode(), "x"),
        (json.dumps({"switch": True, "changed_by": "x", "changed_at": "2026-12-05T10:00:00Z"}).encode(), "switch"),
        (b"{" + b'"a":' * 10 + b"}", ""),
        (b'{"switch": "off", "reason": "' + b"r" * 70_000 + b'"}', "bytes"),
    ],
)
def test_anything_else_is_refused_with_a_reason(value: bytes, why: str) -> None:
    with pytest.raises(InvalidRecordError) as raised:
        SwitchRecord.from_json(value, 1)
    assert why in str(raised.value)
    assert "r" * 100 not in str(raised.value)  # the input is never quoted back


def test_the_stream_position_a_reverse_write_carries() -> None:
    assert position_of("ORDERS:42", "ORDERS") == 42
    assert position_of(b"ORDERS:42", "ORDERS") == 42
    assert position_of("A:B:7", "A:B") == 7  # the sequence is after the last colon
    assert position_of("OTHER:42", "ORDERS") is None  # another stream's message
    assert position_of("ORDERS:-1", "ORDERS") is None
    assert position_of("ORDERS:", "ORDERS") is None
    assert position_of(42, "ORDERS") is None
    assert stream_position((("x", b"1"), ("nats-bridge-stream-seq", b"S:9")), "S") == 9
    assert stream_position({"nats-bridge-stream-seq": "S:9"}, "S") == 9
    assert stream_position({}, "S") is None
    assert Stored(1, {"Kafka-Topic": "t"}).forwarded
    assert Stored(1, {"Amqp-Exchange": "e"}).forwarded
    assert not Stored(1, {"Nats-Msg-Id": "x"}).forwarded
