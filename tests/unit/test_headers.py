"""Source headers survive the trip into NATS headers: names, values and their types."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.headers import (
    BASE64_HEADERS,
    TYPED_HEADERS,
    decode_headers,
    encode_headers,
    encode_value,
    header_name_for,
    source_name_of,
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-(10**6), max_value=10**6),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.replace(microsecond=0)),
    st.binary(max_size=20),
    st.text(max_size=20),
)
amqp_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=6), children, max_size=4),
    ),
    max_leaves=12,
)


def normalised(value: Any) -> Any:
    """What a value is after the trip: UTF-8 bytes read back as text (documented)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=12), amqp_values, max_size=6))
def test_headers_round_trip_with_their_types(table: dict[str, Any]) -> None:
    encoded = encode_headers(tuple(table.items()))
    for name, value in encoded.items():
        assert "\r" not in value, f"{name} would break the header block"
        assert "\n" not in value, f"{name} would break the header block"
    decoded = decode_headers(encoded)
    assert set(decoded) == set(table)
    for name, value in table.items():
        if isinstance(value, str | bytes):
            assert decoded[name] in (normalised(value), value.encode() if isinstance(value, str) else value)
        else:
            assert decoded[name] == value
            assert type(decoded[name]) is type(value)


@given(st.text(min_size=1, max_size=30))
def test_header_names_are_tokens_and_reversible(name: str) -> None:
    header = header_name_for(name)
    assert header
    assert all(33 <= ord(char) < 127 and char not in '"(),/:;<=>?@[\\]{}' for char in header)
    assert source_name_of(header) == name


def test_plain_names_and_text_values_pass_unchanged() -> None:
    assert encode_headers((("tenant", "acme"), ("trace-id", b"abc"))) == {"tenant": "acme", "trace-id": "abc"}


def test_reserved_and_invalid_names_are_escaped() -> None:
    assert header_name_for("Nats-Msg-Id") == "Source-Nats-Msg-Id"
    assert header_name_for("my header") == "Source-my%20header"
    assert header_name_for("a:b") == "Source-a%3Ab"


def test_typed_and_binary_values_are_listed() -> None:
    encoded = encode_headers((("count", 5), ("blob", b"\xff\x00"), ("when", datetime(2026, 1, 2, tzinfo=UTC))))
    assert encoded["count"] == "5"
    assert encoded["blob"] == "/wA="
    assert encoded[TYPED_HEADERS] == "count,when"
    assert encoded[BASE64_HEADERS] == "blob"


def test_decimal_keeps_its_scale_and_bool_is_not_an_int() -> None:
    assert encode_value(Decimal("1.50")) == ('{"$decimal":"1.50"}', "typed")
    assert encode_value(True) == ("true", "typed")
    assert decode_headers(encode_headers((("flag", True),)))["flag"] is True
