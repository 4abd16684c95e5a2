"""The names the bridge gives and matches on Kafka: its own consumer group per route, and topic
patterns read as Kafka's Java client reads them."""

from __future__ import annotations

import re


def default_group(service: str, route: str) -> str:
    """The bridge's own consumer group for a route — never a legacy consumer's group."""
    return f"nats-bridge.{service}.{route}"


def full_match_pattern(pattern: str) -> re.Pattern[str]:
    """`pattern` anchored at the end: aiokafka uses re.match (a prefix match), Kafka's Java
    client matches the whole topic name, and the mapping file promises the latter."""
    return re.compile(f"(?:{pattern})\\Z")
