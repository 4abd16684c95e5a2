"""bridge.routing.filters: the filters written for a consumer take every subject its legacy bindings
produce, never overlap (JetStream refuses that), and are exact whenever NATS can say it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bridge.routing import ExchangeType, is_valid_subject_filter
from bridge.routing.filters import consumer_filters
from bridge.routing.shapes import Lit, Shape, binding_words, contained_in_filters, filter_shape, intersects

WORDS = st.sampled_from(["a", "b", "c", "*", "#"])
KEYS = st.lists(WORDS, min_size=1, max_size=4).map(".".join)


def _shape(key: str) -> Shape:
    return (Lit("rmq"), Lit("x"), *binding_words(key, ExchangeType.TOPIC))


@given(st.lists(KEYS, min_size=1, max_size=5))
def test_filters_cover_every_binding_and_never_overlap(keys: list[str]) -> None:
    chosen = consumer_filters([_shape(key) for key in keys])
    assert all(is_valid_subject_filter(f) for f in chosen.filters)
    for key in keys:
        assert contained_in_filters(_shape(key), chosen.filters), (key, chosen.filters)
    for index, first in enumerate(chosen.filters):
        for second in chosen.filters[index + 1 :]:
            assert not intersects(filter_shape(first), filter_shape(second)), (first, second)


def test_exact_bindings_give_exact_filters() -> None:
    chosen = consumer_filters([_shape("order.#"), _shape("order.*.created"), _shape("audit")])
    assert chosen.filters == ["rmq.x.order", "rmq.x.order.>", "rmq.x.audit"]
    assert chosen.inexact == []
    assert chosen.merged == []


def test_a_hash_before_the_end_is_covered_and_named() -> None:
    chosen = consumer_filters([_shape("#.error")])
    assert chosen.filters == ["rmq.x.>"]
    assert chosen.inexact == ["rmq.x.>"]


def test_adjacent_hashes_are_one_run_with_exact_filters() -> None:
    chosen = consumer_filters([_shape("#.#"), _shape("a.#.*")])
    assert chosen.filters == ["rmq.x", "rmq.x.>"]  # '#.#' may be no word at all; 'a.#.*' is inside
    assert chosen.inexact == []
