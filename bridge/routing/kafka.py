"""Which Kafka topics a subscription covers, decided as Kafka's own consumer decides it."""

from __future__ import annotations

import re
from collections.abc import Sequence


def is_internal_topic(topic: str) -> bool:
    """Whether a topic counts as Kafka-internal for pattern subscriptions.

    Kafka asks the broker (the metadata's is_internal flag: `__consumer_offsets`,
    `__transaction_state`, …); the bridge must decide without a round trip, so it treats
    every name starting with `__` as internal, which also covers the internal topics of
    Connect, Streams and Confluent tooling that nobody wants copied into NATS by a regex.
    """
    return topic.startswith("__")


def kafka_topic_matches(
    topic: str,
    topics: Sequence[str] = (),
    pattern: str | re.Pattern[str] | None = None,
    *,
    internal: bool | None = None,
) -> bool:
    """Whether a consumer subscribed to `topics`, or to `pattern`, receives `topic`.

    A topic list is exact names. A pattern must match the WHOLE topic name, as Kafka's Java
    client does (`Pattern.matcher(topic).matches()`): `orders` does not cover
    `orders-archive`, unlike Python's prefix-matching `re.match`. The pattern is read by
    Python's `re`, which agrees with java.util.regex on the usual syntax (`orders\\..*`,
    `(eu|us)-events`) but not on all of it (e.g. `\\p{Lu}`).

    Internal topics are never covered by a pattern (Kafka's `exclude.internal.topics`
    default) but can be listed by name. `internal` overrides the name-based guess when the
    caller knows the broker's flag. Kafka subscribes to a list or a pattern, never both:
    passing both is a ValueError.
    """
    if pattern is None:
        return topic in topics
    if topics:
        raise ValueError("a Kafka subscription is a topic list or a pattern, not both")
    if is_internal_topic(topic) if internal is None else internal:
        return False
    compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
    return compiled.fullmatch(topic) is not None
