"""The algebra of binding keys along an exchange-to-exchange chain (pure): whether one topic key
takes a subset of another, their intersection, what a chain of bindings selects at its entry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bridge.importers.topology import HASH_TYPES, Binding
from bridge.routing import topic_matches

MAX_INTERSECTIONS = 16  # patterns one intersection of two topic keys may take before it is left a superset
MAX_KEY_LENGTH = 255  # bytes of a routing or binding key (an AMQP short string)


def key_words(key: str) -> list[str]:
    return key.split(".") if key else []


def has_wildcard(key: str) -> bool:
    return any(word in ("*", "#") for word in key_words(key))


def topic_subset(narrow: str, wide: str) -> bool:
    """Whether every routing key topic binding `narrow` matches is matched by `wide` too (sound, not
    complete: False may only mean "cannot tell")."""
    if narrow == wide or (bool(wide) and all(word == "#" for word in key_words(wide))):
        return True
    words = key_words(narrow)
    if "#" not in words:
        # `*` stands for any word: a word no literal can equal must still be matched, by `*` or `#`.
        return topic_matches(wide, ".".join("\x00" if word == "*" else word for word in words))
    wide_words = key_words(wide)
    if wide_words and wide_words[-1] == "#" and "#" not in wide_words[:-1]:
        head = wide_words[:-1]
        if len(words) < len(head):
            return False
        return (
            all(w == n if w != "*" else n != "#" for w, n in zip(head, words[: len(head)], strict=True))
            and "#" not in words[: len(head)]
        )
    return False


def topic_intersection(left: str, right: str) -> tuple[str | None, bool]:
    """(a topic binding matching exactly what both match, or None for nothing at all, exact?).
    When it cannot be expressed, `left` (a superset) with exact False."""
    if topic_subset(left, right):
        return left, True
    if topic_subset(right, left):
        return right, True
    if not has_wildcard(left):
        return (left if topic_matches(right, left) else None), True
    if not has_wildcard(right):
        return (right if topic_matches(left, right) else None), True
    patterns = topic_intersections(left, right)
    if patterns is not None and len(patterns) <= 1:
        return (patterns[0] if patterns else None), True  # `eu.#` and `*.orders.#` meet in `eu.orders.#`
    return left, False


class TooManyError(Exception):
    """An intersection falls apart into more patterns than are worth writing."""


def topic_intersections(left: str, right: str) -> list[str] | None:
    """Topic binding keys that together match exactly the routing keys both `left` and `right` match
    ([] when no key matches both), none covering another; None when that would take more than
    MAX_INTERSECTIONS keys or the keys are longer than RabbitMQ allows.

    Word by word from the front: two words meet in the narrower one (`*` gives way to a literal; two
    different literals never meet); a `#` facing a word either takes no word, or takes that word and
    stays for more; two `#` meet in one `#` followed by what is left once either of them has ended.
    """
    if len(left.encode()) > MAX_KEY_LENGTH or len(right.encode()) > MAX_KEY_LENGTH:
        return None
    a, b = tuple(key_words(left)), tuple(key_words(right))
    memo: dict[tuple[int, int], frozenset[tuple[str, ...]]] = {}

    def joined(word: str, tails: Iterable[tuple[str, ...]]) -> set[tuple[str, ...]]:
        return {tail if word == "#" and tail[:1] == ("#",) else (word, *tail) for tail in tails}

    def walk(i: int, j: int) -> frozenset[tuple[str, ...]]:
        if (i, j) in memo:
            return memo[(i, j)]
        found: set[tuple[str, ...]] = set()
        if i == len(a) or j == len(b):
            if all(word == "#" for word in (b[j:] if i == len(a) else a[i:])):
                found.add(())
        elif a[i] == "#" and b[j] == "#":
            found = joined("#", walk(i + 1, j) | walk(i, j + 1))
        elif a[i] == "#":
            found = set(walk(i + 1, j)) | joined(b[j], walk(i, j + 1))
        elif b[j] == "#":
            found = set(walk(i, j + 1)) | joined(a[i], walk(i + 1, j))
        elif a[i] == b[j] or "*" in (a[i], b[j]):
            found = joined(b[j] if a[i] == "*" else a[i], walk(i + 1, j + 1))
        if len(found) > MAX_INTERSECTIONS:
            raise TooManyError
        memo[(i, j)] = frozenset(found)
        return memo[(i, j)]

    try:
        patterns = sorted(walk(0, 0), key=lambda words: (len(words), words))
    except TooManyError:
        return None
    if ("",) in patterns:  # one empty word cannot be written: "" is the key of no words
        return None
    kept = [".".join(words) for words in patterns]
    for pattern in list(kept):
        if any(other != pattern and topic_subset(pattern, other) for other in kept):
            kept.remove(pattern)
    return kept


def selects_everything(kind: str | None, binding: Binding) -> bool:
    if kind == "fanout" or kind in HASH_TYPES:
        return True
    if kind == "topic":
        return bool(binding.routing_key) and all(word == "#" for word in key_words(binding.routing_key))
    if kind == "headers":
        mode = str(binding.arguments.get("x-match", "all"))
        tested = [
            k for k in binding.arguments if k != "x-match" and (mode.endswith("-with-x") or not k.startswith("x-"))
        ]
        return mode.startswith("all") and not tested
    return False


def merge_tables(left: Mapping[str, Any], right: Mapping[str, Any]) -> dict[str, Any] | None:
    """One headers table matching exactly what both match, when both are `all` tables of the same kind
    without conflicting values; None otherwise."""
    modes = {str(left.get("x-match", "all")), str(right.get("x-match", "all"))}
    if len(modes) != 1 or not modes <= {"all", "all-with-x"}:
        return None
    merged = dict(left)
    for name, value in right.items():
        if name in merged and merged[name] != value:
            return None
        merged[name] = value
    return merged


def chain_text(chain: list[Binding]) -> str:
    steps = [f"'{chain[0].source}'"]
    for binding in chain:
        shown = binding.routing_key if not binding.arguments else f"{binding.routing_key} {dict(binding.arguments)}"
        target = (
            f"'{binding.destination}'" if binding.destination_type == "exchange" else f"queue '{binding.destination}'"
        )
        steps.append(f"-[{shown}]-> {target}")
    return " ".join(steps)
