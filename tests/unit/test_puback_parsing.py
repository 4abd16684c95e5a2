"""The PubAck fast path reads exactly what json.loads would, or steps aside."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.jetstream.pubacks import parse_puback


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"stream":"ORDERS","seq":1}', ("ORDERS", 1, False)),
        (b'{"stream":"S","seq":18446744073709551615,"duplicate":true}', ("S", 18446744073709551615, True)),
        (b'{"stream":"S","seq":5,"domain":"hub"}', None),
        (b'{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}', None),
        (b'{"stream":"S","seq":}', None),
        (b"", None),
        (b'{"stream":"S"', None),
    ],
)
def test_known_shapes(data: bytes, expected: tuple[str, int, bool] | None) -> None:
    assert parse_puback(data) == expected


@given(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_-0123456789", min_size=1, max_size=32),
    st.integers(min_value=1, max_value=2**64 - 1),
    st.booleans(),
)
def test_agrees_with_json(stream: str, seq: int, duplicate: bool) -> None:
    document = {"stream": stream, "seq": seq, **({"duplicate": True} if duplicate else {})}
    data = json.dumps(document, separators=(",", ":")).encode()
    assert parse_puback(data) == (stream, seq, duplicate)
