"""Where a Kafka partition starts after an assignment (the pure rule), and the order in which a
newly assigned partition is held, prepared, positioned and released (with a fake consumer: the
order is the point; tests/integration/test_kafka_start_positions.py proves it against Kafka)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from bridge.brokers.kafka.source import KafkaTopicSource
from bridge.brokers.kafka.start import StartPosition, commit_metadata, partitions_at_start, start_position
from bridge.config.routes import FromKafka
from bridge.config.sources import KafkaSource
from bridge.sources.base import Lane


def test_a_commit_held_by_kafka_is_where_reading_resumes_whatever_start_says() -> None:
    for start in ("earliest", "latest", "2026-01-01T00:00:00+00:00"):
        assert start_position(0, 150, at_start=1, start=start, beginning=100, end=300) == StartPosition(
            150, "its committed offset"
        )
    assert start_position(0, 300, at_start=1, start="latest", beginning=100, end=300).offset == 300


def test_a_commit_no_longer_held_falls_back_to_the_earliest_offset_held_with_a_warning() -> None:
    for committed in (99, 301):  # removed by retention; beyond a truncated log
        position = start_position(0, committed, at_start=1, start="latest", beginning=100, end=300)
        assert (position.offset, position.warning, position.commit) == (100, True, False)
        assert f"committed offset {committed} is no longer held" in position.why


def test_without_a_commit_start_applies_to_partitions_there_at_the_first_start_only() -> None:
    latest = start_position(1, None, at_start=2, start="latest", beginning=5, end=90)
    assert (latest.offset, latest.commit) == (90, True)
    earliest = start_position(1, None, at_start=2, start="earliest", beginning=5, end=90)
    assert (earliest.offset, earliest.commit) == (5, False)
    timed = start_position(1, None, at_start=2, start="2026-01-01T00:00:00+00:00", beginning=5, end=90, at_time=40)
    assert (timed.offset, timed.commit) == (40, True)
    nothing_since = start_position(1, None, at_start=2, start="2026-01-01T00:00:00+00:00", beginning=5, end=90)
    assert nothing_since.offset == 90
    added = start_position(2, None, at_start=2, start="latest", beginning=0, end=90)
    assert (added.offset, added.commit, added.warning) == (0, False, False)
    assert "added after the route first started" in added.why


def test_partitions_at_start_comes_from_the_commits_metadata() -> None:
    assert partitions_at_start({}, 3) == 3  # the first start: every partition there now
    recorded = commit_metadata(2)
    assert partitions_at_start({0: (10, recorded), 1: (4, recorded)}, 4) == 2
    assert partitions_at_start({0: (10, commit_metadata(3)), 1: (4, commit_metadata(2))}, 4) == 2
    # Committed by a bridge that did not record it: which partitions were there is unknown.
    assert partitions_at_start({0: (10, ""), 1: (4, "")}, 4) == 0
    assert partitions_at_start({0: (10, ""), 1: (4, recorded)}, 4) == 2
    assert commit_metadata(None) == ""


class FakeConsumer:
    """Just what `partitions_assigned` uses, recording the calls in order."""

    def __init__(self, events: list[str], committed: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.events = events
        self.paused: set[TopicPartition] = set()
        self.assigned: set[TopicPartition] = set()
        self.committed = committed
        self.commits: list[dict[TopicPartition, Any]] = []

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *partitions: TopicPartition) -> None:
        self.events.append(f"pause {sorted(p.partition for p in partitions)}")
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.events.append(f"resume {sorted(p.partition for p in partitions)}")
        self.paused.difference_update(partitions)

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.assigned}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.events.append(f"seek {tp.partition} {offset}")

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 0)

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 50)

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.events.append("commit")
        self.commits.append(offsets)


class FakeAdmin:
    def __init__(self, consumer: FakeConsumer) -> None:
        self.consumer = consumer

    async def list_consumer_group_offsets(
        self, group: str, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        return {tp: self.consumer.committed.get(tp, OffsetAndMetadata(-1, "")) for tp in partitions}


class FakeOwner:
    """The pipeline's side: while it prepares the lanes, the source's own resume (backpressure
    lifting) must not release partitions still being prepared."""

    def __init__(self, events: list[str], consumer: FakeConsumer, source: KafkaTopicSource) -> None:
        self.events = events
        self.consumer = consumer
        self.source = source

    async def lanes_assigned(self, lanes: Collection[Lane]) -> Mapping[Lane, int]:
        self.events.append(f"prepare {sorted(lanes)} paused={sorted(p.partition for p in self.consumer.paused)}")
        self.source.resume()
        return {("t", 1): 29}  # partition 1's checkpoint: stored through 29

    async def lanes_revoked(self, lanes: Collection[Lane]) -> Mapping[Lane, int]:
        return {}

    def missing_before(self, lane: Lane, position: int) -> list[tuple[int, int]]:
        return []


async def test_new_partitions_stay_paused_until_prepared_and_positioned() -> None:
    events: list[str] = []
    source = KafkaTopicSource(
        "k",
        KafkaSource(type="kafka", bootstrap_servers=["127.0.0.1:1"]),
        FromKafka(topics=["t"], start="latest"),
        "g",
    )
    committed = {TopicPartition("t", 1): OffsetAndMetadata(20, commit_metadata(2))}
    consumer = FakeConsumer(events, committed)
    consumer.assigned = {TopicPartition("t", 0), TopicPartition("t", 1)}
    source._consumer = consumer  # type: ignore[assignment]
    source._positions.admin = FakeAdmin(consumer)  # type: ignore[assignment]
    source._owner = FakeOwner(events, consumer, source)
    await source.partitions_assigned(consumer.assigned)
    assert events == [
        "pause [0, 1]",
        "prepare [('t', 0), ('t', 1)] paused=[0, 1]",
        "resume []",  # the pipeline's resume leaves the held partitions alone
        "seek 0 50",  # no commit, there at the first start: `latest`, committed at once
        "seek 1 20",  # its commit
        "commit",
        "seek 1 30",  # after its checkpoint
        "resume [0, 1]",
    ]
    assert consumer.commits == [{TopicPartition("t", 0): (50, commit_metadata(2))}]
    assert not consumer.paused


async def test_partitions_assigned_while_the_route_is_paused_stay_paused() -> None:
    events: list[str] = []
    source = KafkaTopicSource(
        "k", KafkaSource(type="kafka", bootstrap_servers=["127.0.0.1:1"]), FromKafka(topics=["t"]), "g"
    )
    consumer = FakeConsumer(events, {})
    consumer.assigned = {TopicPartition("t", 0)}
    source._consumer = consumer  # type: ignore[assignment]
    source._positions.admin = FakeAdmin(consumer)  # type: ignore[assignment]
    source.pause()
    await source.partitions_assigned(consumer.assigned)
    assert consumer.paused == {TopicPartition("t", 0)}
    assert not any(event.startswith("resume [0") for event in events)
