"""Closing a Kafka route's source while its backlog probe is asking the group coordinator.

The health monitor probes each route's backlog (one committed-offset request per assigned
partition) every few seconds; the routes stop before it does. A consumer stopped under a probe
in flight loses that request: aiokafka logs it as an ERROR ("Error sending OffsetFetchRequest
... marking coordinator dead") on what is a clean stop (CI saw it at the end of a 64-partition
drain), or the probe waits out aiokafka's 40 s request timeout. `close` now lets a probe in
flight end (it stops asking once the source is closing) before the consumer stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import TopicPartition

from bridge.brokers.kafka.source import KafkaTopicSource
from bridge.config.routes import FromKafka
from bridge.config.sources import KafkaSource
from bridge.errors import SourceUnavailableError
from bridge.sources.base import NoCheckpoints

pytestmark = [pytest.mark.kafka]

TopicFactory = Callable[..., Awaitable[str]]
PARTITIONS = 64


async def close_under_a_probe(source: KafkaTopicSource, at_request: int) -> object:
    """Start a backlog probe and close the source while its `at_request`th committed-offset
    request is being asked; what the probe ended with."""
    consumer = source._consumer
    assert consumer is not None
    asked = asyncio.Event()
    committed, calls = consumer.committed, 0

    async def counting(tp: TopicPartition) -> int | None:
        nonlocal calls
        calls += 1
        if calls == at_request:
            asked.set()
        return await committed(tp)

    consumer.committed = counting  # type: ignore[method-assign]
    probe = asyncio.create_task(source.backlog())
    await asked.wait()
    await source.close()
    (outcome,) = await asyncio.gather(probe, return_exceptions=True)
    return outcome


async def test_closing_under_a_backlog_probe_ends_it_at_once_and_logs_no_error(
    kafka_bootstrap: str, kafka_topic: TopicFactory, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    topic = await kafka_topic(partitions=PARTITIONS)
    for attempt, at_request in enumerate((2, 12, 40)):
        source = KafkaTopicSource(
            "kafka",
            KafkaSource(type="kafka", bootstrap_servers=[kafka_bootstrap]),
            FromKafka(topics=[topic]),
            f"bridge-{unique_name}-{attempt}",
        )
        await source.start(NoCheckpoints())
        async with asyncio.timeout(60):
            while len(source._consumer.assignment() if source._consumer else ()) < PARTITIONS:
                await source.fetch(100, 0.2)
        await source.backlog()  # once whole first: a new topic's leaders are known to the client
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="aiokafka"):
            async with asyncio.timeout(10):  # before: the probe hung for aiokafka's 40 s request timeout
                outcome = await close_under_a_probe(source, at_request)
        assert isinstance(outcome, SourceUnavailableError), outcome
        assert "closing" in str(outcome), outcome
        errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
        assert errors == [], errors
