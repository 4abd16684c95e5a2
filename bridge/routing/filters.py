"""Subject shapes as NATS filter subjects: the exact filters of a shape, the narrowest one filter
that covers it when no exact set exists, and a set of filters JetStream accepts on one consumer.

Shared by dry-run's consumer check (which names the filters a consumer should have) and by the
importers (which write those filters), so the two can never disagree on what is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bridge.routing.shapes import Lit, Shape, Unit, Var, filter_shape, intersects, within_shapes

MOST_FILTERS = 8  # past this many, exact filters are not worth listing


def merge_runs(shape: Shape) -> Shape:
    """Adjacent runs of unknown tokens as one (`#.#` is one run of any length, `#.*` one of at
    least one token), so a run is always followed by a literal or by the end."""
    out: list[Unit] = []
    for unit in shape:
        last = out[-1] if out else None
        if isinstance(unit, Var) and isinstance(last, Var):
            most = None if unit.most is None or last.most is None else unit.most + last.most
            out[-1] = Var(last.least + unit.least, most)
        else:
            out.append(unit)
    return tuple(out)


def exact_filters(shape: Shape) -> list[str] | None:
    """NATS filters whose subjects are exactly the shape's; None when there are none (a run of
    any length before the end), [] when there are too many to list."""
    shape = merge_runs(shape)
    variants: list[list[str]] = [[]]
    for position, unit in enumerate(shape):
        if isinstance(unit, Lit):
            variants = [[*v, unit.token] for v in variants]
            continue
        assert isinstance(unit, Var)
        if unit.most is None:
            if position != len(shape) - 1:
                return None
            ones = ["*"] * unit.least
            variants = [[*v, *ones] for v in variants] + [[*v, *ones, ">"] for v in variants]
            continue
        variants = [[*v, *(["*"] * count)] for v in variants for count in range(unit.least, unit.most + 1)]
        if len(variants) > MOST_FILTERS:
            return []
    filters = [".".join(v) for v in variants if v]
    return filters if len(filters) <= MOST_FILTERS else []


def covering_filter(shape: Shape) -> str:
    """The narrowest single filter that takes every subject of a shape with a run before its end:
    its tokens up to that run, then '>' (the run is followed by more, so at least one token is left)."""
    tokens: list[str] = []
    for unit in merge_runs(shape):
        if isinstance(unit, Lit):
            tokens.append(unit.token)
        elif unit.most is None or unit.least != unit.most:
            break
        else:
            tokens += ["*"] * unit.least
    return ".".join([*tokens, ">"])


@dataclass(frozen=True, slots=True)
class ConsumerFilters:
    """Filters for one consumer: `filters` never overlap (JetStream refuses that) and together take
    every subject of the shapes; `inexact` names the shapes they take more than (shown as filters)."""

    filters: list[str]
    inexact: list[str]
    merged: list[str]  # filters widened because two overlapped, e.g. 'a.*.c' and 'a.b.*' -> 'a.*.*'


def consumer_filters(shapes: Sequence[Shape]) -> ConsumerFilters:
    """The narrowest non-overlapping filters that take everything in `shapes`.

    Each shape becomes its exact filters, or the covering filter when it has none (`a.#.b` ->
    `a.>`, a superset: listed in `inexact`). A filter inside another is dropped; two that only
    partly overlap are replaced by the filter generalising both (listed in `merged`), since one
    consumer may not hold overlapping filters.
    """
    filters: list[str] = []
    inexact: list[str] = []
    for shape in shapes:
        exact = exact_filters(shape)
        if exact:
            filters += [f for f in exact if f not in filters]
            continue
        cover = covering_filter(shape)
        inexact.append(cover)
        if cover not in filters:
            filters.append(cover)
    for subject_filter in list(filters):  # 'x.*' and 'x.*.>' are 'x.>', one filter
        if subject_filter.endswith(".*") and subject_filter + ".>" in filters:
            filters[filters.index(subject_filter)] = subject_filter[:-1] + ">"
            filters.remove(subject_filter + ".>")
    filters, merged = _apart(filters)
    return ConsumerFilters(filters, inexact, merged)


def _apart(filters: list[str]) -> tuple[list[str], list[str]]:
    """`filters` with none inside another and none overlapping (partial overlaps generalised), and
    a line per generalisation."""
    filters = list(filters)
    merged: list[str] = []
    changed = True
    while changed:
        changed = False
        for i, first in enumerate(filters):
            for second in filters[i + 1 :]:
                if not intersects(filter_shape(first), filter_shape(second)):
                    continue
                if within_shapes(filter_shape(second), [filter_shape(first)]):
                    filters.remove(second)
                elif within_shapes(filter_shape(first), [filter_shape(second)]):
                    filters.remove(first)
                else:
                    wider = generalise(first, second)
                    merged.append(f"'{first}' and '{second}' overlap: both taken by '{wider}'")
                    filters = [f for f in filters if f not in (first, second)]
                    filters.insert(i, wider)
                changed = True
                break
            if changed:
                break
    return filters, merged


def generalise(first: str, second: str) -> str:
    """One filter taking every subject of two overlapping filters: token by token the same token or
    '*', up to where either ends in '>' (then '>'). Two filters that overlap take subjects of a
    common length, so neither is shorter than the result."""
    a, b = first.split("."), second.split(".")
    tokens: list[str] = []
    for left, right in zip(a, b, strict=False):
        if ">" in (left, right):
            return ".".join([*tokens, ">"])
        tokens.append(left if left == right else "*")
    if len(a) != len(b):  # cannot happen for overlapping filters without '>'; stay correct anyway
        return ".".join([*tokens[: min(len(a), len(b)) - 1], ">"]) if min(len(a), len(b)) > 1 else ">"
    return ".".join(tokens)
