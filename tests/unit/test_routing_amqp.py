"""AMQP routing must decide exactly as RabbitMQ 3.10+ does, edge cases first."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.routing import (
    ExchangeType,
    XMatch,
    amqp_values_equal,
    direct_matches,
    exchange_matches,
    fanout_matches,
    headers_match,
    split_amqp_words,
    topic_matches,
    x_match_of,
)

PROPERTY = settings(max_examples=400, deadline=None)

# --------------------------------------------------------------------------- words


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("", ()),
        ("a", ("a",)),
        ("a.b", ("a", "b")),
        ("a..b", ("a", "", "b")),
        (".", ("", "")),
        ("a.", ("a", "")),
        (".a", ("", "a")),
        ("#.*", ("#", "*")),
    ],
)
def test_split_amqp_words_keeps_empty_words_but_the_empty_key_is_zero_words(key: str, words: tuple[str, ...]) -> None:
    assert split_amqp_words(key) == words


# --------------------------------------------------------------------------- topic table

TOPIC_CASES = [
    # `#` alone
    ("#", "", True),
    ("#", "a", True),
    ("#", "a.b", True),
    ("#", ".", True),
    # `*` is exactly one word, and the empty key has none
    ("*", "", False),
    ("*", "a", True),
    ("*", "a.b", False),
    ("*", ".", False),
    ("*.*", ".", True),
    # trailing `#`
    ("a.#", "a", True),
    ("a.#", "a.b.c", True),
    ("a.#", "b", False),
    ("a.#", "", False),
    ("a.#", "ab", False),
    ("a.#", "a.", True),
    ("a.b.#", "a.b", True),
    ("a.b.#", "a.bc", False),
    # leading `#`
    ("#.a", "a", True),
    ("#.a", "x.y.a", True),
    ("#.a", "a.x", False),
    ("#.a", "", False),
    # `#` in the middle matches zero words too
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.y.b", True),
    ("a.#.b", "a.x.y", False),
    ("a.#.b", "a..b", True),
    ("a.#.#.b", "a.b", True),
    ("a.#.#.b", "a.x.y.z.b", True),
    # repeated `#`
    ("#.#", "", True),
    ("#.#", "a.b.c", True),
    ("#.b.#", "b", True),
    ("#.b.#", "a.b.c", True),
    ("#.b.#", "a.c", False),
    ("#.b.#", "", False),
    # `*` next to `#`
    ("a.*.#", "a", False),
    ("a.*.#", "a.b", True),
    ("a.*.#", "a.b.c.d", True),
    ("*.#", "", False),
    ("*.#", "x", True),
    ("#.*", "", False),
    ("#.*", "x", True),
    ("#.*", "x.y", True),
    # empty words are real words
    ("a.*.b", "a..b", True),
    ("a..b", "a..b", True),
    ("a.b", "a..b", False),
    (".#", "", False),
    (".#", ".", True),
    (".#", ".a.b", True),
    (".#", "a", False),
    ("a.*", "a.", True),
    ("a.", "a.", True),
    ("a.", "a", False),
    # the empty binding key matches only the empty routing key
    ("", "", True),
    ("", "a", False),
    ("", ".", False),
    ("a", "", False),
    # literal words are compared exactly; `#` and `*` in a routing key are just words
    ("order.*.created", "order.uk.created", True),
    ("order.*.created", "order.created", False),
    ("exact.key", "Exact.key", False),
    ("a.#", "a.#", True),
    ("a.b", "a.*", False),
]


@pytest.mark.parametrize(("binding", "routing_key", "expected"), TOPIC_CASES)
def test_topic_binding_matches_as_rabbitmq_does(binding: str, routing_key: str, expected: bool) -> None:
    assert topic_matches(binding, routing_key) is expected


def test_hash_alone_matches_the_empty_routing_key() -> None:
    assert topic_matches("#", "")


def test_star_never_matches_the_empty_routing_key() -> None:
    assert not topic_matches("*", "")


def test_hash_in_the_middle_matches_zero_words() -> None:
    assert topic_matches("a.#.b", "a.b")


def test_many_hashes_do_not_backtrack_exponentially() -> None:
    binding = ".".join(["#", "x"] * 40) + ".never"
    routing_key = ".".join(["x"] * 200)
    assert not topic_matches(binding, routing_key)
    assert topic_matches(".".join(["#"] * 60 + ["x"] + ["#"] * 60), routing_key)


# --------------------------------------------------------------------------- topic property


def reference_split(key: str) -> list[str]:
    return [] if key == "" else key.split(".")


def reference_topic_regex(binding: str, routing_key: str) -> bool:
    """Each word becomes "/word"; `*` is one such unit, `#` any number of them."""
    parts = []
    for word in reference_split(binding):
        if word == "*":
            parts.append("/[^/]*")
        elif word == "#":
            parts.append("(?:/[^/]*)*")
        else:
            parts.append("/" + re.escape(word))
    subject = "".join("/" + word for word in reference_split(routing_key))
    return re.fullmatch("".join(parts), subject) is not None


def reference_topic_recursive(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(reference_topic_recursive(rest, words[i:]) for i in range(len(words) + 1))
    return bool(words) and head in ("*", words[0]) and reference_topic_recursive(rest, words[1:])


binding_keys = st.lists(st.sampled_from(["a", "b", "", "*", "#", "#"]), max_size=7).map(".".join)
routing_keys = st.lists(st.sampled_from(["a", "b", "", "#", "*"]), max_size=8).map(".".join)


@PROPERTY
@given(binding_keys, routing_keys)
def test_topic_matches_agrees_with_the_reference_matchers(binding: str, routing_key: str) -> None:
    expected = reference_topic_regex(binding, routing_key)
    assert reference_topic_recursive(reference_split(binding), reference_split(routing_key)) is expected
    assert topic_matches(binding, routing_key) is expected


@PROPERTY
@given(routing_keys)
def test_a_binding_without_wildcards_matches_only_its_own_key(routing_key: str) -> None:
    assert topic_matches(routing_key, routing_key)
    assert topic_matches(routing_key + ".x", routing_key) is False


# --------------------------------------------------------------------------- direct, fanout, exchange


def test_direct_exchange_compares_keys_exactly() -> None:
    assert direct_matches("orders", "orders")
    assert not direct_matches("orders", "orders.created")
    assert not direct_matches("orders.#", "orders.created")
    assert direct_matches("", "")


def test_fanout_exchange_matches_everything() -> None:
    assert fanout_matches()
    assert exchange_matches(ExchangeType.FANOUT, [], None, "anything", None)


@pytest.mark.parametrize(
    ("kind", "keys", "routing_key", "expected"),
    [
        (ExchangeType.DIRECT, ["a", "b"], "b", True),
        (ExchangeType.DIRECT, ["a", "b"], "c", False),
        (ExchangeType.DIRECT, [], "a", False),
        (ExchangeType.TOPIC, ["x.*", "a.#"], "a", True),
        (ExchangeType.TOPIC, ["x.*", "a.#"], "b", False),
        (ExchangeType.TOPIC, [], "a", False),
        ("topic", ["#"], "", True),
        ("direct", ["a"], "a", True),
    ],
)
def test_exchange_matches_when_any_binding_key_matches(
    kind: ExchangeType | str, keys: list[str], routing_key: str, expected: bool
) -> None:
    assert exchange_matches(kind, keys, None, routing_key, None) is expected


def test_headers_exchange_ignores_keys_and_uses_the_arguments_as_the_binding() -> None:
    args = {"x-match": "any", "format": "pdf"}
    assert exchange_matches(ExchangeType.HEADERS, ["ignored"], args, "ignored", {"format": "pdf"})
    assert not exchange_matches("headers", [], args, "", {"format": "zip"})
    assert exchange_matches("headers", [], None, "", None)  # all of nothing


def test_unknown_exchange_type_is_refused() -> None:
    with pytest.raises(ValueError, match="x-custom"):
        exchange_matches("x-custom", [], None, "", None)


# --------------------------------------------------------------------------- headers table


@pytest.mark.parametrize(
    ("args", "headers", "expected"),
    [
        # all (the default) needs every argument
        ({"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3}, True),
        ({"a": 1, "b": 2}, {"a": 1}, False),
        ({"a": 1, "b": 2}, {"a": 1, "b": 3}, False),
        ({"x-match": "all", "a": 1}, {"a": 1}, True),
        # any needs one
        ({"x-match": "any", "a": 1, "b": 2}, {"b": 2}, True),
        ({"x-match": "any", "a": 1, "b": 2}, {"a": 2, "b": 1}, False),
        ({"x-match": "any", "a": 1}, None, False),
        # no arguments: all matches everything, any matches nothing
        ({}, None, True),
        ({}, {"a": 1}, True),
        ({"x-match": "all"}, {}, True),
        ({"x-match": "any"}, {"a": 1}, False),
        # x- arguments are ignored by all / any ...
        ({"x-match": "all", "x-tenant": "t1"}, {}, True),
        ({"x-match": "any", "x-tenant": "t1"}, {"x-tenant": "t1"}, False),
        ({"x-match": "all", "x-tenant": "t1", "a": 1}, {"a": 1, "x-tenant": "other"}, True),
        # ... but take part with the -with-x variants
        ({"x-match": "all-with-x", "x-tenant": "t1"}, {}, False),
        ({"x-match": "all-with-x", "x-tenant": "t1"}, {"x-tenant": "t1"}, True),
        ({"x-match": "all-with-x", "x-tenant": "t1", "a": 1}, {"a": 1, "x-tenant": "t2"}, False),
        ({"x-match": "any-with-x", "x-tenant": "t1"}, {"x-tenant": "t1"}, True),
        ({"x-match": "any-with-x", "x-tenant": "t1", "a": 1}, {"a": 1}, True),
        ({"x-match": "any-with-x", "x-tenant": "t1"}, {}, False),
        # x-match itself never takes part, even with -with-x
        ({"x-match": "all-with-x"}, {}, True),
        ({"x-match": "any-with-x"}, {"x-match": "any-with-x"}, False),
        # the prefix is case-sensitive, as in Erlang's <<"x-", _/binary>>
        ({"x-match": "all", "X-Tenant": "t1"}, {}, False),
        # a void (None) argument matches on presence alone
        ({"a": None}, {"a": "anything"}, True),
        ({"a": None}, {"a": None}, True),
        ({"a": None}, {"b": 1}, False),
        ({"x-match": "any", "a": None, "b": 1}, {"a": 0}, True),
        # a void header never equals a non-void argument
        ({"a": 1}, {"a": None}, False),
        # numbers compare by value ...
        ({"a": 1}, {"a": 1.0}, True),
        ({"a": 0}, {"a": -0.0}, True),
        # ... but booleans are not numbers
        ({"a": True}, {"a": 1}, False),
        ({"a": 1}, {"a": True}, False),
        ({"a": False}, {"a": 0}, False),
        ({"a": True}, {"a": True}, True),
        # longstr arrives as str or bytes
        ({"a": "pdf"}, {"a": b"pdf"}, True),
        ({"a": b"caf\xc3\xa9"}, {"a": "café"}, True),
        ({"a": "1"}, {"a": 1}, False),
        # nested values compare structurally with the same rules
        ({"a": [1, "x"]}, {"a": [1.0, b"x"]}, True),
        ({"a": [1]}, {"a": [True]}, False),
        ({"a": {"k": "v"}}, {"a": {"k": b"v"}}, True),
        ({"a": {"k": "v"}}, {"a": {"k": "v", "l": "w"}}, False),
        # decimals are (scale, value) in Erlang
        ({"a": Decimal("1.5")}, {"a": Decimal("1.50")}, False),
        ({"a": Decimal("1.5")}, {"a": Decimal("1.5")}, True),
        ({"a": Decimal("1")}, {"a": 1}, False),
    ],
)
def test_headers_binding_matches_as_rabbitmq_does(
    args: dict[str, object], headers: dict[str, object] | None, expected: bool
) -> None:
    assert headers_match(args, headers) is expected


def test_x_match_accepts_bytes_as_clients_decode_longstr() -> None:
    assert x_match_of({"x-match": b"any-with-x"}) is XMatch.ANY_WITH_X
    assert x_match_of({}) is XMatch.ALL


@pytest.mark.parametrize("value", ["ANY", "some", "", None, 1])
def test_invalid_x_match_is_refused_as_rabbitmq_refuses_the_binding(value: object) -> None:
    with pytest.raises(ValueError, match="x-match must be one of"):
        headers_match({"x-match": value}, {})


def test_bool_is_not_a_number_in_amqp_equality() -> None:
    assert not amqp_values_equal(True, 1)
    assert not amqp_values_equal(0, False)
    assert amqp_values_equal(2, 2.0)


# --------------------------------------------------------------------------- headers property
# A transliteration of headers_match/5 in rabbit_exchange_type_headers.erl (RabbitMQ 3.10+):
# both tables sorted by key (bytes), walked together, clause by clause in the same order.

VOID = object()


def erlang_term(value: object) -> object:
    """The decoded AMQP value as an Erlang term would compare under `==`."""
    if value is None:
        return ("atom", "undefined")
    if isinstance(value, bool):
        return ("atom", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("binary", value.encode())
    if isinstance(value, bytes):
        return ("binary", value)
    if isinstance(value, Decimal):
        sign, digits, exponent = value.as_tuple()
        assert isinstance(exponent, int)
        unscaled = int("".join(map(str, digits))) * (-1 if sign else 1)
        return ("decimal", -exponent, unscaled)
    if isinstance(value, list):
        return ("list", tuple(erlang_term(item) for item in value))
    if isinstance(value, dict):
        return ("table", frozenset((key, erlang_term(item)) for key, item in value.items()))
    raise AssertionError(f"no Erlang term for {value!r}")


def erlang_parse_x_match(args: Mapping[str, object]) -> str:
    value = args.get("x-match")
    text = value.decode() if isinstance(value, bytes) else value
    return {"all": "all", "any": "any", "all-with-x": "all_with_x", "any-with-x": "any_with_x"}.get(
        text if isinstance(text, str) else "", "all"
    )


def erlang_headers_match(args: Mapping[str, object], headers: Mapping[str, object] | None) -> bool:
    pattern = sorted(((key.encode(), VOID if value is None else value) for key, value in args.items()))
    data = sorted((key.encode(), value) for key, value in (headers or {}).items())
    kind = erlang_parse_x_match(args)
    all_match, any_match = True, False
    while True:
        if not all_match and kind in ("all", "all_with_x"):
            return False
        if any_match and kind in ("any", "any_with_x"):
            return True
        if not pattern:
            return all_match if kind in ("all", "all_with_x") else any_match
        pk, pv = pattern[0]
        if pk == b"x-match":
            pattern = pattern[1:]
            continue
        if pk.startswith(b"x-") and kind not in ("all_with_x", "any_with_x"):
            pattern = pattern[1:]
            continue
        if not data:
            pattern, data, all_match = [], [], False
            continue
        dk, dv = data[0]
        if pk > dk:
            data = data[1:]
            continue
        if pk < dk:
            pattern, all_match = pattern[1:], False
            continue
        if pv is VOID:
            pattern, data, any_match = pattern[1:], data[1:], True
            continue
        if erlang_term(pv) == erlang_term(dv):
            pattern, data, any_match = pattern[1:], data[1:], True
            continue
        pattern, data, all_match = pattern[1:], data[1:], False


SCALARS = [
    None,
    True,
    False,
    0,
    1,
    2,
    1.0,
    -0.0,
    0.5,
    "1",
    b"1",
    "a",
    b"a",
    "",
    b"",
    "é",
    "é".encode(),
    Decimal("1"),
    Decimal("1.0"),
    Decimal("1.00"),
]
scalar_values = st.sampled_from(SCALARS)
nested_values = st.recursive(
    scalar_values,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from(["k", "l"]), inner, max_size=2),
    max_leaves=4,
)
amqp_values = st.one_of(scalar_values, nested_values)  # scalars half the time: they hold the traps
header_names = st.sampled_from(["a", "b", "c", "x-a", "x-b", "X-a", "x-", "é"])
x_match_values = st.sampled_from(["all", "any", "all-with-x", "any-with-x", b"any", b"all-with-x"])


@PROPERTY
@given(
    st.dictionaries(header_names, amqp_values, max_size=4),
    st.none() | x_match_values,
    st.none() | st.dictionaries(header_names | st.just("x-match"), amqp_values, max_size=5),
)
def test_headers_match_agrees_with_rabbitmq_erlang_algorithm(
    args: dict[str, object], x_match: str | bytes | None, headers: dict[str, object] | None
) -> None:
    if x_match is not None:
        args = {**args, "x-match": x_match}
    assert headers_match(args, headers) is erlang_headers_match(args, headers)


@pytest.mark.parametrize("left", SCALARS, ids=repr)
def test_scalar_equality_agrees_with_erlang_terms_for_every_pair(left: object) -> None:
    for right in SCALARS:
        expected = erlang_term(left) == erlang_term(right)
        assert amqp_values_equal(left, right) is expected, (left, right)


@PROPERTY
@given(amqp_values, amqp_values)
def test_amqp_value_equality_agrees_with_erlang_terms(left: object, right: object) -> None:
    assert amqp_values_equal(left, right) is (erlang_term(left) == erlang_term(right))
    assert amqp_values_equal(left, right) is amqp_values_equal(right, left)
