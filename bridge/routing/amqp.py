"""RabbitMQ's routing rules, re-implemented so the bridge decides exactly as the broker would.

The bridge cannot hand AMQP bindings to NATS: `#` matches zero or more words anywhere in
an AMQP binding, while NATS `>` matches one or more tokens and only at the end, and the
empty routing key has no NATS subject at all. So the bridge matches with AMQP semantics
itself (RabbitMQ 3.10+), and these functions must agree with the broker on every edge:
empty keys, empty words, repeated `#`, and the headers exchange's `x-match` modes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import Final


class ExchangeType(StrEnum):
    """The four exchange types RabbitMQ ships, spelt as in `exchange.declare`."""

    DIRECT = "direct"
    TOPIC = "topic"
    FANOUT = "fanout"
    HEADERS = "headers"


class XMatch(StrEnum):
    """How a headers binding combines its arguments (the binding's `x-match` argument).

    The `-with-x` variants (RabbitMQ 3.10+) let arguments named `x-…` take part in matching;
    plain `all`/`any` ignore them because they are usually broker extensions, not headers.
    """

    ALL = "all"
    ANY = "any"
    ALL_WITH_X = "all-with-x"
    ANY_WITH_X = "any-with-x"


def split_amqp_words(key: str) -> tuple[str, ...]:
    """Split a routing or binding key into AMQP words.

    The empty key is zero words, not one empty word: RabbitMQ's split_topic_key(<<>>) is [],
    which is why `#` matches it and `*` does not. Every other key keeps its empty words.
    """
    if not key:
        return ()
    return tuple(key.split("."))


def direct_matches(binding_key: str, routing_key: str) -> bool:
    """A direct exchange routes on byte-for-byte equality of the keys."""
    return binding_key == routing_key


def fanout_matches() -> bool:
    """A fanout exchange ignores keys and headers: every bound queue gets every message."""
    return True


class TopicPattern:
    """A topic binding key compiled once, because one binding is tested against every message.

    Bindings that are literal, `#` alone, or a literal prefix followed by `#` (the common
    `orders.#`) are decided with string operations; anything else runs a greedy wildcard
    match over the words that never backtracks exponentially, however many `#` there are.
    """

    __slots__ = ("_prefix", "_shape", "_words", "binding_key")

    _LITERAL: Final = 0
    _EVERYTHING: Final = 1
    _PREFIX: Final = 2
    _GENERAL: Final = 3

    def __init__(self, binding_key: str) -> None:
        self.binding_key = binding_key
        words: list[str] = []
        for word in split_amqp_words(binding_key):
            if word == "#" and words and words[-1] == "#":
                continue  # `#.#` matches exactly what `#` matches
            words.append(word)
        self._words = tuple(words)
        self._prefix = ""
        wildcards = [i for i, word in enumerate(words) if word in ("*", "#")]
        if not wildcards:
            self._shape = self._LITERAL
        elif self._words == ("#",):
            self._shape = self._EVERYTHING
        elif wildcards == [len(words) - 1] and words[-1] == "#" and words[:-1] != [""]:
            # A prefix of exactly one empty word would join to "", which is also the
            # zero-word key: leave that rare shape to the general matcher.
            self._shape = self._PREFIX
            self._prefix = ".".join(words[:-1])
        else:
            self._shape = self._GENERAL

    def matches(self, routing_key: str) -> bool:
        """Whether RabbitMQ's topic exchange would route `routing_key` through this binding."""
        shape = self._shape
        if shape == self._LITERAL:
            return routing_key == self.binding_key
        if shape == self._EVERYTHING:
            return True
        if shape == self._PREFIX:
            prefix = self._prefix
            return routing_key == prefix or (
                routing_key.startswith(prefix) and routing_key[len(prefix) : len(prefix) + 1] == "."
            )
        return _match_words(self._words, split_amqp_words(routing_key))

    def __repr__(self) -> str:
        return f"TopicPattern({self.binding_key!r})"


def _match_words(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    # Greedy wildcard matching: `#` first consumes nothing; on a dead end the most recent `#`
    # takes one more word and matching resumes after it. Only the latest `#` ever needs
    # revisiting (what an earlier one could absorb, the later one can too), so this runs in
    # O(len(pattern) * len(words)) at worst and linear in practice.
    p = w = 0
    star = -1
    star_word = 0
    n_pattern = len(pattern)
    n_words = len(words)
    while w < n_words:
        if p < n_pattern:
            token = pattern[p]
            if token == "#":
                star = p
                star_word = w
                p += 1
                continue
            if token == "*" or token == words[w]:
                p += 1
                w += 1
                continue
        if star < 0:
            return False
        star_word += 1
        w = star_word
        p = star + 1
    while p < n_pattern and pattern[p] == "#":
        p += 1
    return p == n_pattern


@lru_cache(maxsize=4096)
def compile_topic(binding_key: str) -> TopicPattern:
    """The compiled form of a binding key, cached: bindings are few and reused per message."""
    return TopicPattern(binding_key)


def topic_matches(binding_key: str, routing_key: str) -> bool:
    """Whether a topic exchange routes `routing_key` through a binding with `binding_key`.

    `*` is exactly one word, `#` zero or more, anywhere in the binding; words may be empty
    (`a..b` has three). The empty routing key is zero words: `#` matches it, `*` does not,
    and the empty binding key matches only the empty routing key.
    """
    return compile_topic(binding_key).matches(routing_key)


# --------------------------------------------------------------------------- headers

_MISSING: Final = object()
_STRINGS: Final = (str, bytes, bytearray, memoryview)


def _as_bytes(value: str | bytes | bytearray | memoryview) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return bytes(value)


def amqp_values_equal(left: object, right: object) -> bool:
    """Compare two AMQP field values as RabbitMQ does (Erlang `==` on the decoded values).

    Erlang compares values without their wire types, so an int equals a float of the same
    value, and a longstr equals a byte array with the same bytes: clients hand those to
    Python as `str` or `bytes` unpredictably, so text and its UTF-8 bytes are equal here.
    Booleans are atoms in Erlang and never equal a number, although Python says True == 1.
    A decimal is a (scale, value) pair in Erlang: it equals only a decimal of the same scale.

    Nested arrays and tables are compared element by element with these same rules. That is
    looser than RabbitMQ, which also compares nested wire types and keeps nested tables in
    wire order; the bridge cannot see either after the client has decoded the message.
    Timestamps arrive as datetimes, which never equal numbers here (RabbitMQ would compare
    the integer seconds).
    """
    if left is None or right is None:
        return left is right
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, _STRINGS) or isinstance(right, _STRINGS):
        return isinstance(left, _STRINGS) and isinstance(right, _STRINGS) and _as_bytes(left) == _as_bytes(right)
    if isinstance(left, Decimal) or isinstance(right, Decimal):
        return (
            isinstance(left, Decimal)
            and isinstance(right, Decimal)
            and left.as_tuple().exponent == right.as_tuple().exponent
            and left == right
        )
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, Mapping) or isinstance(right, Mapping):
        if not (isinstance(left, Mapping) and isinstance(right, Mapping)) or len(left) != len(right):
            return False
        for key, value in left.items():
            other = right.get(key, _MISSING)
            if other is _MISSING or not amqp_values_equal(value, other):
                return False
        return True
    if isinstance(left, list | tuple) or isinstance(right, list | tuple):
        return (
            isinstance(left, list | tuple)
            and isinstance(right, list | tuple)
            and len(left) == len(right)
            and all(amqp_values_equal(a, b) for a, b in zip(left, right, strict=True))
        )
    return bool(left == right)


def x_match_of(binding_args: Mapping[str, object]) -> XMatch:
    """The `x-match` mode of a headers binding; `all` when the argument is absent.

    Raises ValueError for any other value or a non-string type: RabbitMQ 3.10+ refuses to
    create such a binding (validate_binding), so a config that contains one is wrong.
    """
    value = binding_args.get("x-match", _MISSING)
    if value is _MISSING:
        return XMatch.ALL
    text = value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else value
    if isinstance(text, str):
        try:
            return XMatch(text)
        except ValueError:
            pass
    options = ", ".join(mode.value for mode in XMatch)
    raise ValueError(f"x-match must be one of {options} (RabbitMQ refuses the binding otherwise), got {value!r}")


def headers_match(binding_args: Mapping[str, object], headers: Mapping[str, object] | None) -> bool:
    """Whether a headers exchange routes a message with `headers` through this binding.

    Follows rabbit_exchange_type_headers.erl (RabbitMQ 3.10+):

    * `x-match` itself never takes part; other arguments named `x-…` take part only with
      `all-with-x` / `any-with-x`, and are ignored with `all` / `any`.
    * an argument whose value is None (AMQP void) matches if the header is present at all;
      any other argument matches if the header is present with an equal value
      (see amqp_values_equal).
    * `all` needs every remaining argument to match, so it matches everything when none
      remain; `any` needs one, so it matches nothing when none remain.

    RabbitMQ walks both tables sorted by key in one merge; with unique keys (a Mapping) that
    is the same as looking each argument up, which is what this does.
    """
    mode = x_match_of(binding_args)
    with_x = mode in (XMatch.ALL_WITH_X, XMatch.ANY_WITH_X)
    need_all = mode in (XMatch.ALL, XMatch.ALL_WITH_X)
    present = headers if headers is not None else {}
    for name, expected in binding_args.items():
        if name == "x-match" or (not with_x and name.startswith("x-")):
            continue
        actual = present.get(name, _MISSING)
        matched = actual is not _MISSING and (expected is None or amqp_values_equal(expected, actual))
        if matched != need_all:
            return matched  # the first miss decides `all`, the first hit decides `any`
    return need_all


def exchange_matches(
    kind: ExchangeType | str,
    binding_keys: Sequence[str],
    binding_args: Mapping[str, object] | None,
    routing_key: str,
    headers: Mapping[str, object] | None,
) -> bool:
    """Whether an exchange of `kind` routes a message to a queue bound with these bindings.

    The queue is bound once per key in `binding_keys`, so one matching key is enough; a
    headers exchange ignores keys and matches the single binding `binding_args`.
    """
    match ExchangeType(kind):
        case ExchangeType.FANOUT:
            return True
        case ExchangeType.DIRECT:
            return routing_key in binding_keys
        case ExchangeType.TOPIC:
            return any(compile_topic(key).matches(routing_key) for key in binding_keys)
        case ExchangeType.HEADERS:
            return headers_match(binding_args or {}, headers)
