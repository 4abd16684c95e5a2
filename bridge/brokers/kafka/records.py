"""A consumed Kafka record as the pipeline sees it: one conversion for the bridge's source and
for the commands that read a topic themselves (dry-run's sample, verify, repair)."""

from __future__ import annotations

from typing import Any

from bridge.message import KafkaOrigin, SourceMessage


def kafka_message(record: Any) -> SourceMessage:
    """A consumed record as the pipeline sees it (aiokafka's ConsumerRecord is untyped)."""
    origin = KafkaOrigin(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        timestamp_ms=record.timestamp,
    )
    return SourceMessage(origin, record.value, tuple(record.headers))
