"""Kafka subscriptions: exact topic lists, and regexes that must match the whole name."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.routing import is_internal_topic, kafka_topic_matches


def test_a_topic_list_matches_exact_names_only() -> None:
    assert kafka_topic_matches("orders", ["orders", "payments"])
    assert not kafka_topic_matches("orders-archive", ["orders"])
    assert not kafka_topic_matches("Orders", ["orders"])


def test_no_subscription_matches_nothing() -> None:
    assert not kafka_topic_matches("orders")


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("orders", "orders", True),
        ("orders", "orders-archive", False),  # Python's re.match would say yes
        ("orders", "old-orders", False),
        (r"orders\..*", "orders.created", True),
        (r"orders\..*", "orders", False),
        ("(eu|us)-events", "eu-events", True),
        ("(eu|us)-events", "eu-events-dlq", False),
        ("a|b", "ab", False),
        (".*", "anything", True),
    ],
)
def test_a_pattern_must_match_the_whole_topic_as_in_kafkas_java_client(
    pattern: str, topic: str, expected: bool
) -> None:
    assert kafka_topic_matches(topic, pattern=pattern) is expected
    assert kafka_topic_matches(topic, pattern=re.compile(pattern)) is expected


def test_internal_topics_are_never_matched_by_a_pattern() -> None:
    assert is_internal_topic("__consumer_offsets")
    assert not kafka_topic_matches("__consumer_offsets", pattern=".*")
    assert not kafka_topic_matches("__transaction_state", pattern="__.*")


def test_internal_topics_can_still_be_listed_by_name() -> None:
    assert kafka_topic_matches("__consumer_offsets", ["__consumer_offsets"])


def test_the_brokers_internal_flag_overrides_the_name_guess() -> None:
    assert kafka_topic_matches("__my_topic", pattern=".*", internal=False)
    assert not kafka_topic_matches("odd_internal", pattern=".*", internal=True)


def test_single_underscore_topics_are_not_internal() -> None:
    assert kafka_topic_matches("_schemas", pattern=".*")


def test_a_list_and_a_pattern_together_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        kafka_topic_matches("orders", ["orders"], "orders")


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet="ab._-", max_size=8),
    st.sampled_from(["a", "a.*", "[ab]+", "_.*", "__.*", "a|b", "(a|b)\\.", ".*b"]),
)
def test_pattern_matching_is_fullmatch_minus_internal_topics(topic: str, pattern: str) -> None:
    expected = re.fullmatch(pattern, topic) is not None and not topic.startswith("__")
    assert kafka_topic_matches(topic, pattern=pattern) is expected
