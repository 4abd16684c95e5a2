"""(1) IN: Kafka topics, read through the bridge's own consumer group (aiokafka).

The bridge never joins a legacy consumer group: it gets its own (`nats-bridge.<service>.
<route>` unless the route names one), so every existing consumer keeps its offsets and its
share of the partitions — that is what makes it a shadow.

Offsets are committed only as explicit `{partition: watermark + 1}` from the pipeline,
never by `commit()` without arguments (which commits whatever `getmany` returned, acked
or not). On a rebalance the pipeline drains and settles the revoked partitions before they
are released. While JetStream is unreachable the partitions are paused but `getmany` keeps
being called, so the consumer stays in its group.

Where a partition starts is decided here, not by aiokafka's `auto_offset_reset` (which is
`earliest`, so anything this module does not decide copies rather than skips): aiokafka applies
one answer both to a partition the group never read and to a committed offset that retention
removed, and a bridge needs different ones (`start_position`). A newly assigned partition is
paused until its lanes are prepared and its position is set, so not one record of it reaches the
pipeline from a position that is about to change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Collection, Mapping, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from bridge.brokers.kafka import client
from bridge.brokers.kafka.client import start_failure
from bridge.brokers.kafka.names import full_match_pattern
from bridge.brokers.kafka.positions import AssignmentPositions
from bridge.brokers.kafka.records import kafka_message
from bridge.brokers.kafka.start import commit_metadata
from bridge.config.routes import FromKafka
from bridge.config.sources import KafkaSource
from bridge.errors import SourceUnavailableError
from bridge.sources.base import Lane, LaneOwner, Received

log = logging.getLogger(__name__)

T = TypeVar("T")

# aiokafka retries a commit for as long as the group's coordinator cannot be reached, and waits
# its 40 s request timeout for a broker that took the request and answers nothing (a hung one).
# A commit not answered within COMMIT_TIMEOUT is given up: the next settle carries a later
# watermark anyway, and a stop (whose drain settles once more) must not wait for Kafka to come
# back. Once one went unanswered, the next ones wait only COMMIT_TIMEOUT_UNANSWERED until one is
# answered again, so Kafka being gone costs a stop one full timeout, not one per settle.
COMMIT_TIMEOUT = 2.0
COMMIT_TIMEOUT_UNANSWERED = 0.5
# Closing the consumer leaves the group (a LeaveGroup request) after the group coordination's
# last work; without an answer the partitions move on after the session timeout instead.
CLOSE_TIMEOUT = 3.0
# A backlog probe asking the group coordinator when the consumer stops loses its request, and
# aiokafka logs that as an ERROR ("marking coordinator dead") on a clean stop: close waits this
# long for a probe in flight (one committed-offset request per assigned partition) to finish.
PROBE_GRACE = 2.0


class KafkaTopicSource:
    """One route's subscription: a topic list or regex, in one consumer group."""

    stable_positions = True
    settle_after: int | None = None
    reconnects = 0  # aiokafka reconnects to brokers by itself and does not say so
    unread: int | None = None

    def __init__(self, name: str, source: KafkaSource, subscription: FromKafka, group: str) -> None:
        self.name = name
        self._source = source
        self._subscription = subscription
        self._group = group
        self._consumer: AIOKafkaConsumer | None = None
        self._owner: LaneOwner | None = None
        self._paused = False
        self._holding: set[TopicPartition] = set()  # assigned, paused until prepared and positioned
        self._commit_unanswered = False  # the last commit timed out (see COMMIT_TIMEOUT)
        self._positions = AssignmentPositions(name, source, group, subscription.start, self._commit_within)
        self._start_at = self._positions.start_at  # first offset wanted after a seek
        self._probes = 0  # backlog() calls asking Kafka now
        self._probes_done = asyncio.Event()
        self._probes_done.set()

    @property
    def group(self) -> str:
        return self._group

    @property
    def checkpoint_scope(self) -> str:
        return f"kafka-group:{self._group}"

    def _consumer_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "group_id": self._group,
            "enable_auto_commit": False,
            # Never `latest`: where a partition starts is decided in `_position`; whatever it
            # leaves to aiokafka (Kafka not answering then, an offset removed while reading)
            # resumes at the earliest offset held, which copies rather than skips.
            "auto_offset_reset": "earliest",
            "isolation_level": "read_committed",
            "max_partition_fetch_bytes": 256 * 1024,
            "fetch_max_bytes": 4 * 1024 * 1024,
            "session_timeout_ms": 10_000,
            "heartbeat_interval_ms": 3_000,
            "rebalance_timeout_ms": 60_000,
            # Topics created after start (and new regex matches) are noticed within this.
            "metadata_max_age_ms": 30_000,
        }
        return settings

    async def start(self, owner: LaneOwner) -> None:
        self._owner = self._positions.owner = owner
        consumer = client.consumer(self._source, **self._consumer_settings())
        listener = _Rebalance(self)
        if self._subscription.topics:
            consumer.subscribe(topics=list(self._subscription.topics), listener=listener)
        else:
            assert self._subscription.topic_pattern is not None
            consumer.subscribe(pattern=full_match_pattern(self._subscription.topic_pattern).pattern, listener=listener)
        # Set before start(): the first assignment can arrive while start() is still running.
        self._consumer = consumer
        try:
            await consumer.start()
        except KafkaError as error:
            self._consumer = None
            await self._stop_consumer(consumer)
            raise await start_failure(self.name, self._source, error) from None

    async def fetch(self, max_messages: int, wait: float) -> Sequence[Received]:
        consumer = self._consumer
        assert consumer is not None, "fetch before start"
        batches = await consumer.getmany(timeout_ms=int(wait * 1000), max_records=max_messages)
        received: list[Received] = []
        for tp, records in batches.items():
            lane = (tp.topic, tp.partition)
            start_at = self._start_at.get(tp)
            for record in records:
                if start_at is not None and record.offset < start_at:
                    continue  # fetched before the seek to the route's start time took effect
                # Tombstones and records a reverse route wrote too: bridge.decide filters them.
                received.append(Received(lane, record.offset, kafka_message(record)))
        return received

    async def settle(self, watermarks: Mapping[Lane, int]) -> None:
        await self._commit(watermarks)

    async def _commit(self, watermarks: Mapping[Lane, int]) -> None:
        consumer = self._consumer
        if consumer is None or not watermarks:
            return
        owned = consumer.assignment()
        offsets = {}
        for lane, position in watermarks.items():
            tp = _topic_partition(lane)
            if tp in owned:
                offsets[tp] = (position + 1, commit_metadata(self._positions.at_start.get(tp.topic)))
        if not offsets:
            return
        timeout = self._commit_timeout()
        try:
            await self._commit_within(consumer, offsets)
        except KafkaError as error:
            # A rebalance in progress or a broker hiccup: the next settle commits a later
            # watermark; a restart re-reads from the last commit and de-duplicates.
            log.warning("source %s: commit failed, will retry with the next watermark: %s", self.name, error)
        except TimeoutError:
            log.warning(
                "source %s: Kafka did not answer the commit within %.1fs; the next watermark is committed "
                "once it answers (a restart before then re-reads from the last commit and de-duplicates)",
                self.name,
                timeout,
            )

    def _commit_timeout(self) -> float:
        return COMMIT_TIMEOUT_UNANSWERED if self._commit_unanswered else COMMIT_TIMEOUT

    async def _commit_within(self, consumer: AIOKafkaConsumer, offsets: Mapping[TopicPartition, Any]) -> None:
        """`consumer.commit(offsets)`, given up after the commit timeout (TimeoutError). A request
        already sent may still be applied later: it commits what was stored all the same."""
        try:
            await _within(consumer.commit(offsets), self._commit_timeout())
        except TimeoutError:
            self._commit_unanswered = True
            _quiet_abandoned_commits()
            raise
        self._commit_unanswered = False

    def pause(self) -> None:
        self._paused = True
        if self._consumer is not None:
            self._consumer.pause(*self._consumer.assignment())

    def resume(self) -> None:
        self._paused = False
        if self._consumer is not None:
            # Partitions still being prepared stay paused: `partitions_assigned` resumes them.
            self._consumer.resume(*(set(self._consumer.assignment()) - self._holding))

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None  # no backlog probe starts now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._probes_done.wait(), PROBE_GRACE)
            await self._stop_consumer(consumer)
        await self._positions.close()

    async def _stop_consumer(self, consumer: AIOKafkaConsumer) -> None:
        """`consumer.stop()`, bounded: it waits for the group coordination's last work and for
        Kafka to answer the LeaveGroup request, neither of which comes while Kafka is down or hung
        (aiokafka's request timeout is 40 s). Past CLOSE_TIMEOUT the consumer is closed without."""
        try:
            await _within(consumer.stop(), CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning(
                "source %s: Kafka did not answer within %.0fs while the consumer left group %s; closed "
                "without it (its partitions go to other members after the session timeout)",
                self.name,
                CLOSE_TIMEOUT,
                self._group,
            )
        except KafkaError as error:
            log.warning("source %s: closing the Kafka consumer: %s", self.name, str(error) or type(error).__name__)
        else:
            return
        # What stop() did not get to: the fetcher's task and the connections (no request is sent).
        for part in (getattr(consumer, "_fetcher", None), getattr(consumer, "_client", None)):
            if part is not None:
                with contextlib.suppress(KafkaError, TimeoutError, OSError):
                    await _within(part.close(), 1.0)

    def owned_lanes(self) -> set[str] | None:
        """The partitions this instance reads now (`topic/partition`); None before start."""
        if self._consumer is None:
            return None
        return {f"{tp.topic}/{tp.partition}" for tp in self._consumer.assignment()}

    def all_lanes(self) -> set[str] | None:
        """Every partition of the topics the route reads, whoever owns it, as this consumer's
        metadata knows them; None while a topic's partitions are not known."""
        if self._consumer is None:
            return None
        lanes: set[str] = set()
        for topic in self._consumer.subscription():
            partitions = self._consumer.partitions_for_topic(topic)
            if partitions is None:
                return None
            lanes.update(f"{topic}/{partition}" for partition in partitions)
        return lanes

    # ------------------------------------------------------------------ rebalance

    async def backlog(self) -> dict[str, int]:
        """Per assigned partition (`topic/partition`), records after the group's committed offset.

        Asks the brokers (end offsets, committed offsets), so it doubles as the check that
        Kafka answers; raises SourceUnavailableError when it does not.
        """
        consumer = self._consumer
        if consumer is None:
            raise SourceUnavailableError(f"source '{self.name}': not connected")
        assigned = sorted(consumer.assignment())
        if not assigned:
            self.unread = None
            return {}
        self._probes += 1
        self._probes_done.clear()
        try:
            return await self._backlog_of(consumer, assigned)
        finally:
            self._probes -= 1
            if not self._probes:
                self._probes_done.set()

    async def _backlog_of(self, consumer: AIOKafkaConsumer, assigned: list[TopicPartition]) -> dict[str, int]:
        try:
            ends = await consumer.end_offsets(assigned)
            lags = {}
            unread = 0
            for tp in assigned:
                if self._consumer is None:  # closing
                    raise SourceUnavailableError(f"source '{self.name}': closing")
                committed = await consumer.committed(tp)
                lags[f"{tp.topic}/{tp.partition}"] = max(0, ends[tp] - (committed or 0))
                unread += max(0, ends[tp] - await consumer.position(tp))
        except KafkaError as error:
            self.unread = None
            raise SourceUnavailableError(f"source '{self.name}': Kafka does not answer: {error}") from None
        self.unread = unread
        return lags

    async def partitions_revoked(self, partitions: Collection[TopicPartition]) -> None:
        if self._owner is None or not partitions:
            return
        log.info(
            "source %s (group %s): %d partition(s) revoked; settling them", self.name, self._group, len(partitions)
        )
        watermarks = await self._owner.lanes_revoked([(tp.topic, tp.partition) for tp in partitions])
        await self._commit(watermarks)

    async def partitions_assigned(self, partitions: Collection[TopicPartition]) -> None:
        consumer = self._consumer
        log.info(
            "source %s (group %s): assigned %s",
            self.name,
            self._group,
            ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(partitions)) or "nothing",
        )
        if consumer is None or not partitions:
            return
        held = set(partitions)
        # Before the first await: aiokafka fetches for the new assignment while this runs, and a
        # record handed over now would reach the pipeline before its lane is prepared (what is
        # already stored unknown) and from a position that is about to change. Paused, none is.
        self._holding |= held
        consumer.pause(*held)
        try:
            stored: Mapping[Lane, int] = {}
            if self._owner is not None:
                stored = await self._owner.lanes_assigned([(tp.topic, tp.partition) for tp in sorted(held)])
            starts = await self._positions.position(consumer, held)
            await self._positions.skip_stored(consumer, held, starts, stored)
        finally:
            self._holding -= held
            if not self._paused:
                consumer.resume(*(held & set(consumer.assignment())))


async def _within(call: Awaitable[T], seconds: float) -> T:
    """`call`'s result, awaited in a task of its own for at most `seconds`: TimeoutError after
    that (the task is cancelled and left to finish). The task ending cancelled although this one
    was not is a KafkaError, not a CancelledError that would read as this task being cancelled:
    aiokafka's `Fetcher.close` awaits tasks it has just cancelled, so `consumer.stop()` can end
    that way (seen with Kafka down), and a route's stop then failed the whole bridge."""
    task = asyncio.ensure_future(call)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        task.add_done_callback(_retrieve)
        raise TimeoutError
    if task.cancelled():
        raise KafkaError("cancelled inside aiokafka")
    return task.result()


def _quiet_abandoned_commits() -> None:
    """aiokafka sends a commit from a task of its own behind `asyncio.shield`; a commit given up
    leaves that task behind, and its failure once Kafka's connection closes would be logged as
    "Task exception was never retrieved", with a traceback. Its outcome no longer matters."""
    for task in asyncio.all_tasks():
        if getattr(task.get_coro(), "__qualname__", "") == "GroupCoordinator._do_commit_offsets":
            task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Forwards aiokafka's rebalance callbacks; aiokafka swallows their exceptions, so log them."""

    def __init__(self, source: KafkaTopicSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        try:
            await self._source.partitions_revoked(revoked)
        except Exception:
            log.exception("source %s: settling revoked partitions failed", self._source.name)

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        try:
            await self._source.partitions_assigned(assigned)
        except Exception:
            log.exception("source %s: preparing assigned partitions failed", self._source.name)
            raise


def _topic_partition(lane: Lane) -> TopicPartition:
    assert isinstance(lane, tuple), "Kafka lanes are (topic, partition)"
    topic, partition = lane
    return TopicPartition(str(topic), int(partition))
