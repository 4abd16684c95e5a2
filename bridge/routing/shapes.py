"""Subject shapes: a family of NATS subjects as a pattern over tokens, and how families meet.

A shape is a tuple of units: `Lit(token)`, `ONE` (exactly one token, any), `OPT` (zero or
one), `MANY` (zero or more). Where the words cannot be pinned down (an index past a `#`,
negative slice bounds over an unknown key) the shape widens to `MANY`/`OPT`: it may describe
subjects the route never produces, never the other way round. So "always captured" answers
are sound and can at worst raise a needless warning; "never captured" answers are sound too
(an over-wide shape only matches more filters).

NATS filters become shapes too (`*` -> ONE, `>` -> ONE MANY), so "can a route's subject land
in this stream" is shape intersection, and "does this stream take all of them" is containment
of a shape in a filter. The words a binding key or a topic regex admits are units as well
(`binding_words`, `regex_words`); `bridge.route_shapes` puts them into a route's template.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

from bridge.routing.amqp import ExchangeType, split_amqp_words
from bridge.routing.subjects import escape_token


@dataclass(frozen=True, slots=True)
class Lit:
    """One literal (already escaped) token."""

    token: str

    def __str__(self) -> str:
        return self.token


@dataclass(frozen=True, slots=True)
class Var:
    """A run of unknown tokens: `least` to `most` of them (None: no upper bound)."""

    least: int
    most: int | None

    def __str__(self) -> str:
        if (self.least, self.most) == (1, 1):
            return "*"
        if (self.least, self.most) == (0, None):
            return "[...]"
        if self.most is None:
            return "*." * self.least + "[...]"
        return "[" + "?." * (self.most - 1) + "?]"


ONE = Var(1, 1)
OPT = Var(0, 1)
MANY = Var(0, None)

Unit = Lit | Var
Shape = tuple[Unit, ...]


def show(shape: Shape) -> str:
    """A shape for people: `orders.order.[...]`, `clicks.*`."""
    return ".".join(str(unit) for unit in shape) or "(empty)"


def filter_shape(subject_filter: str) -> Shape:
    """A NATS subject filter as a shape (`*` one token, `>` one or more at the end)."""
    units: list[Unit] = []
    for token in subject_filter.split("."):
        if token == "*":
            units.append(ONE)
        elif token == ">":
            units += [ONE, MANY]
        else:
            units.append(Lit(token))
    return tuple(units)


def _normalise(shape: Shape) -> tuple[Unit, ...]:
    """Split every Var into ONE/OPT/MANY steps, which the matchers below walk one at a time."""
    out: list[Unit] = []
    for unit in shape:
        if isinstance(unit, Lit):
            out.append(unit)
            continue
        out += [ONE] * unit.least
        out += [MANY] if unit.most is None else [OPT] * (unit.most - unit.least)
    return tuple(out)


def _compatible(left: Unit, right: Unit) -> bool:
    return not (isinstance(left, Lit) and isinstance(right, Lit) and left.token != right.token)


def intersects(first: Shape, second: Shape) -> bool:
    """True when some subject fits both shapes."""
    return _intersects(_normalise(first), _normalise(second))


@lru_cache(maxsize=65536)
def _intersects(a: Shape, b: Shape) -> bool:
    if a and b and isinstance(a[0], Lit) and isinstance(b[0], Lit) and a[0].token != b[0].token:
        return False  # most pairs of a large file part at their first token
    memo: dict[tuple[int, int], bool] = {}

    def walk(i: int, j: int) -> bool:
        known = memo.get((i, j))
        if known is not None:
            return known
        if (i < len(a) and a[i] in (OPT, MANY) and walk(i + 1, j)) or (
            j < len(b) and b[j] in (OPT, MANY) and walk(i, j + 1)
        ):
            result = True
        elif i == len(a) or j == len(b):
            result = i == len(a) and j == len(b)
        elif not _compatible(a[i], b[j]) or (a[i] == MANY and b[j] == MANY):
            result = False  # two MANYs consuming together is covered by skipping one of them
        else:
            result = walk(i if a[i] == MANY else i + 1, j if b[j] == MANY else j + 1)
        memo[(i, j)] = result
        return result

    return walk(0, 0)


def contained_in_filter(shape: Shape, subject_filter: str) -> bool:
    """True when every subject of `shape` is captured by `subject_filter`."""
    return _contained(_normalise(shape), _normalise(filter_shape(subject_filter)))


@lru_cache(maxsize=65536)
def _contained(a: Shape, f: Shape) -> bool:
    """Containment of a shape in a filter shape (Lit/ONE then, at most, one final MANY)."""
    if a and f and isinstance(a[0], Lit) and isinstance(f[0], Lit) and a[0].token != f[0].token:
        return False

    @cache
    def walk(i: int, j: int) -> bool:
        if j < len(f) and f[j] == MANY:
            return True  # the filter's `>` tail takes whatever is left
        if i == len(a):
            return j == len(f)
        unit = a[i]
        if unit in (OPT, MANY):
            # Every choice must be captured: skipping the unit, and taking one token for it.
            if not walk(i + 1, j):
                return False
            return j < len(f) and f[j] == ONE and walk(i if unit == MANY else i + 1, j + 1)
        if j == len(f):
            return False
        target = f[j]
        if target == ONE:
            return walk(i + 1, j + 1)
        return isinstance(unit, Lit) and isinstance(target, Lit) and unit.token == target.token and walk(i + 1, j + 1)

    return walk(0, 0)


class FilterIndex:
    """Streams by the first token of their filters, so that a route's subjects are compared
    only with the streams that can take them: a file of a thousand streams and a thousand
    routes would otherwise cost a million shape comparisons."""

    def __init__(self, streams: Mapping[str, Sequence[str]]) -> None:
        self._order = {name: index for index, name in enumerate(streams)}
        self._by_first: dict[str, set[str]] = {}
        self._wild: set[str] = set()
        for name, filters in streams.items():
            for subject_filter in filters:
                first = subject_filter.split(".", 1)[0]
                if first in ("*", ">"):
                    self._wild.add(name)
                else:
                    self._by_first.setdefault(first, set()).add(name)

    def candidates(self, shape: Shape) -> list[str]:
        """The streams, in their declared order, that may take some subject of `shape`."""
        if shape and isinstance(shape[0], Lit):
            found = self._by_first.get(shape[0].token, set()) | self._wild
            return sorted(found, key=self._order.__getitem__)
        return list(self._order)


def contained_in_filters(shape: Shape, subject_filters: Sequence[str]) -> bool:
    """True when every subject of `shape` is captured by one of `subject_filters` together.

    A stream listing `rmq.x` and `rmq.x.>` captures `rmq.x.{rk}` although neither filter does
    alone: the shape's first optional part is split (absent, or present) until each piece fits
    one filter, for at most a few more tokens than the longest filter has (past that, only a
    `>` filter could take it, and that was tried on the whole).
    """
    filters = [_normalise(filter_shape(f)) for f in subject_filters]
    depth = max((len(f) for f in filters), default=0) + 2
    return _covered(_normalise(shape), tuple(filters), depth)


def _covered(shape: Shape, filters: tuple[Shape, ...], depth: int) -> bool:
    if any(_contained(shape, f) for f in filters):
        return True
    split = next((i for i, unit in enumerate(shape) if unit in (OPT, MANY)), None)
    if split is None or depth == 0:
        return False
    unit, head, tail = shape[split], shape[:split], shape[split + 1 :]
    taken = (ONE, MANY) if unit == MANY else (ONE,)
    return _covered(head + tail, filters, depth - 1) and _covered(head + taken + tail, filters, depth - 1)


def within_shapes(shape: Shape, others: Sequence[Shape]) -> bool:
    """True when every subject of `shape` is a subject of one of `others` (shapes may have `MANY`
    anywhere, unlike filters, so `contained_in_filters` cannot answer this).

    Both sides are small automata over tokens (a Lit takes its token, ONE any token, OPT and
    MANY may also take none); they are walked together, subsets of positions at a time, on
    every literal token either side names plus one token neither names. A state where `shape`
    may end and none of `others` can is a subject only `shape` has.
    """
    mine = _normalise(shape)
    theirs = [_normalise(other) for other in others]
    symbols = {unit.token for s in (mine, *theirs) for unit in s if isinstance(unit, Lit)}
    outsider = "\x00" + "".join(sorted(symbols))  # no token equals it: it stands for all the rest
    alphabet = [*symbols, outsider]
    start = (_closure(mine, {0}), frozenset((k, j) for k, s in enumerate(theirs) for j in _closure(s, {0})))
    seen = {start}
    todo = [start]
    while todo:
        here, there = todo.pop()
        if len(mine) in here and not any(j == len(theirs[k]) for k, j in there):
            return False
        for token in alphabet:
            step = _closure(mine, _step(mine, here, token))
            if not step:
                continue
            moved: set[tuple[int, int]] = set()
            for k, other in enumerate(theirs):
                moved |= {(k, j) for j in _closure(other, _step(other, {j for kk, j in there if kk == k}, token))}
            pair = (step, frozenset(moved))
            if pair not in seen:
                seen.add(pair)
                todo.append(pair)
    return True


def _step(shape: Shape, positions: frozenset[int] | set[int], token: str) -> set[int]:
    """Where each position goes on one token (before the closure)."""
    out: set[int] = set()
    for i in positions:
        if i == len(shape):
            continue
        unit = shape[i]
        if isinstance(unit, Lit):
            if unit.token == token:
                out.add(i + 1)
        elif unit == MANY:
            out.add(i)
        else:
            out.add(i + 1)
    return out


def _closure(shape: Shape, positions: set[int]) -> frozenset[int]:
    """Positions plus those reached by taking no token for OPT and MANY units."""
    found = set(positions)
    stack = list(positions)
    while stack:
        i = stack.pop()
        if i < len(shape) and shape[i] in (OPT, MANY) and i + 1 not in found:
            found.add(i + 1)
            stack.append(i + 1)
    return frozenset(found)


# --------------------------------------------------------------------------- words of a placeholder


def literal_words(value: str) -> list[Unit]:
    return [Lit(escape_token(word)) for word in split_amqp_words(value)]


def binding_words(binding: str, exchange_type: ExchangeType) -> list[Unit]:
    """The routing keys a binding admits, as word units."""
    if exchange_type is ExchangeType.DIRECT:
        return literal_words(binding)
    words: list[Unit] = []
    for word in split_amqp_words(binding):
        words.append(ONE if word == "*" else MANY if word == "#" else Lit(escape_token(word)))
    return words


_PLAIN_WORD = re.compile(r"[A-Za-z0-9_-]+")


def regex_words(pattern: str) -> list[Unit]:
    """Topic words a whole-name regex admits: its leading literal `word\\.` parts, then any words."""
    words: list[Unit] = []
    rest = pattern
    while True:
        match = _PLAIN_WORD.match(rest)
        if match is None or not rest[match.end() :].startswith(r"\."):
            break
        words.append(Lit(escape_token(match.group())))
        rest = rest[match.end() + 2 :]
    if _PLAIN_WORD.fullmatch(rest):
        return [*words, Lit(escape_token(rest))]
    return [*words, MANY]


def select_words(
    words: list[Unit], index: int | None, bounds: tuple[int | None, int | None] | None
) -> list[Unit] | None:
    """`words[index]` or `words[start:stop]` as units; None when an index is out of range for sure."""
    fixed = all(unit == ONE or isinstance(unit, Lit) for unit in words)
    if fixed:
        if index is not None:
            return [words[index]] if -len(words) <= index < len(words) else None
        start, stop = bounds if bounds is not None else (None, None)
        return words[start:stop]
    first_var = next(i for i, unit in enumerate(words) if not (unit == ONE or isinstance(unit, Lit)))
    if index is not None:
        return [words[index]] if 0 <= index < first_var else [ONE]
    start, stop = bounds if bounds is not None else (None, None)
    if stop is None and start is not None and 0 <= start <= first_var:
        return words[start:]
    if start is not None and stop is not None and 0 <= start <= stop:
        return [Var(0, stop - start)]
    return [MANY]
