"""Token escaping must be reversible and injective, and always yield a valid subject token."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.routing import (
    escape_token,
    is_valid_subject,
    is_valid_subject_filter,
    unescape_token,
    unescape_token_str,
)

PROPERTY = settings(max_examples=400, deadline=None)


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("orders", "orders"),
        ("orders.created", "orders%2Ecreated"),
        ("", "%"),
        (b"", "%"),
        (" ", "%20"),
        ("a b", "a%20b"),
        ("*", "%2A"),
        (">", "%3E"),
        ("%", "%25"),
        ("%25", "%2525"),
        ("$JS", "%24JS"),
        ("\x7f", "%7F"),
        ("\t\n", "%09%0A"),
        ("café", "caf%C3%A9"),
        (b"\x00\xff", "%00%FF"),
        ("a-b_c:d/e#f+g~h{i}", "a-b_c:d/e#f+g~h{i}"),
    ],
)
def test_escape_token_follows_the_documented_scheme(value: str | bytes, token: str) -> None:
    assert escape_token(value) == token


def test_text_is_escaped_as_its_utf8_bytes() -> None:
    assert escape_token("ключ.é") == escape_token("ключ.é".encode())


def test_the_empty_value_is_a_lone_percent_which_nothing_else_produces() -> None:
    assert escape_token("") == "%"
    assert unescape_token("%") == b""
    assert escape_token("%") != "%"


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("", "never empty"),
        ("%4", "two uppercase hex digits"),
        ("%4g", "two uppercase hex digits"),
        ("%2e", "two uppercase hex digits"),
        ("%%", "two uppercase hex digits"),
        ("a%", "two uppercase hex digits"),
        ("%41", "always written as itself"),
        ("a.b", "must be written as %2E"),
        ("a b", "must be written as %20"),
        ("$", "must be written as %24"),
        ("é", "UTF-8 bytes"),
    ],
)
def test_unescape_token_refuses_malformed_or_non_canonical_tokens(token: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        unescape_token(token)


def test_unescape_token_str_refuses_tokens_that_are_not_utf8_text() -> None:
    assert unescape_token_str("caf%C3%A9") == "café"
    with pytest.raises(ValueError, match="not UTF-8"):
        unescape_token_str("%FF")


@pytest.mark.parametrize(
    ("subject", "valid"),
    [
        ("orders", True),
        ("orders.created.eu", True),
        ("orders.%2A", True),
        ("a*b.c>d", True),  # wildcards are whole tokens only
        ("$JS.API.INFO", True),
        ("ключ.é", True),
        ("", False),
        (".", False),
        ("a.", False),
        (".a", False),
        ("a..b", False),
        ("a.*", False),
        ("a.>", False),
        ("*", False),
        ("a b", False),
        ("a\tb", False),
        ("a\nb", False),
        ("a\x00b", False),
        ("a\u00a0b", False),
    ],
)
def test_publish_subjects_must_be_literal_and_well_formed(subject: str, valid: bool) -> None:
    assert is_valid_subject(subject) is valid


@pytest.mark.parametrize(
    ("subject", "valid"),
    [
        ("orders.>", True),
        ("orders.*.eu", True),
        ("*", True),
        (">", True),
        ("*.*.>", True),
        ("orders", True),
        ("orders.>.eu", False),
        ("orders..>", False),
        ("", False),
        ("a.", False),
        ("a .>", False),
    ],
)
def test_subject_filters_allow_star_tokens_and_a_final_gt(subject: str, valid: bool) -> None:
    assert is_valid_subject_filter(subject) is valid


@PROPERTY
@given(st.binary(max_size=40))
def test_bytes_round_trip_through_a_token(value: bytes) -> None:
    assert unescape_token(escape_token(value)) == value


@PROPERTY
@given(st.text(max_size=40))
def test_text_round_trips_through_a_token(value: str) -> None:
    assert unescape_token_str(escape_token(value)) == value


@PROPERTY
@given(st.binary(max_size=12), st.binary(max_size=12))
def test_distinct_values_get_distinct_tokens(left: bytes, right: bytes) -> None:
    assert (escape_token(left) == escape_token(right)) is (left == right)


@PROPERTY
@given(st.one_of(st.binary(max_size=40), st.text(max_size=40)))
def test_an_escaped_value_is_always_one_valid_token(value: str | bytes) -> None:
    token = escape_token(value)
    assert is_valid_subject(token)
    assert token
    assert all(0x21 <= ord(char) <= 0x7E for char in token)
    assert not set(token) & set(".*>$ ")


@PROPERTY
@given(st.text(alphabet="%0123456789ABCDEFaf.g$ ", max_size=8))
def test_every_token_that_decodes_is_the_canonical_spelling_of_its_value(token: str) -> None:
    try:
        value = unescape_token(token)
    except ValueError:
        return
    assert escape_token(value) == token
