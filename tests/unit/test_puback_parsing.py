"""The PubAck fast path reads exactly what json.loads would, or steps aside."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
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


def _as_json(data: bytes) -> tuple[str, int, bool] | None:
    """What read_reply's JSON path reads from `data` when it is a PubAck of the plain shape."""
    try:
        reply = json.loads(data)
    except ValueError:
        return None
    if not isinstance(reply, dict) or set(reply) - {"stream", "seq", "duplicate"}:
        return None
    return reply.get("stream"), reply.get("seq"), bool(reply.get("duplicate", False))


near_names = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["S", 'a\\"b', "\\u00e9", "é", "a\x01", "\x7f", "ORDERS"]),
).map(lambda name: name.encode("utf-8", "surrogatepass"))
near_seqs = st.one_of(
    st.integers(0, 2**64).map(lambda n: str(n).encode()),
    st.sampled_from([b"007", b"", b"-1", b"1.5", b"1e3", b" 1", b"\xd9\xa1"]),
)
near_tails = st.sampled_from(
    [b"}", b',"duplicate":true}', b',"duplicate":false}', b"} ", b"", b',"duplicate":true', b"}}"]
)


@settings(max_examples=1000)
@given(near_names, near_seqs, near_tails)
def test_anything_near_the_shape_is_read_as_json_reads_it_or_left_to_json(name: bytes, seq: bytes, tail: bytes) -> None:
    data = b'{"stream":"' + name + b'","seq":' + seq + tail
    fast = parse_puback(data)
    if fast is not None:
        assert fast == _as_json(data)
        assert fast[2] == (tail == b',"duplicate":true}')
