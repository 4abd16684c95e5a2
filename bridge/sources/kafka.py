"""(1) IN: Kafka topics, read through the bridge's own consumer group (aiokafka).

The bridge never joins a legacy consumer group: it gets its own (`nats-bridge.<service>.
<route>` unless the route names one), so every existing consumer keeps its offsets and its
share of the partitions — that is what makes it a shadow.

Offsets are committed only as explicit `{partition: watermark + 1}` from the pipeline,
never by `commit()` without arguments (which commits whatever `getmany` returned, acked
or not). On a rebalance the pipeline drains and settles the revoked partitions before they
are released. While JetStream is unreachable the partitions are paused but `getmany` keeps
being called, so the consumer stays in its group.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError, SaslAuthenticationFailed, UnsupportedSaslMechanismError
from aiokafka.helpers import create_ssl_context

from bridge.config.model import FromKafka, KafkaSource
from bridge.errors import BridgeError, SourceUnavailableError
from bridge.headers import ORIGIN_HEADER
from bridge.message import KafkaOrigin, SourceMessage
from bridge.sources.base import Lane, LaneOwner, Received

log = logging.getLogger(__name__)


def default_group(service: str, route: str) -> str:
    """The bridge's own consumer group for a route — never a legacy consumer's group."""
    return f"nats-bridge.{service}.{route}"


def full_match_pattern(pattern: str) -> re.Pattern[str]:
    """`pattern` anchored at the end: aiokafka uses re.match (a prefix match), Kafka's Java
    client matches the whole topic name, and the mapping file promises the latter."""
    return re.compile(f"(?:{pattern})\\Z")


def kafka_client_options(source: KafkaSource, *, client_suffix: str = "") -> dict[str, Any]:
    """Connection settings every aiokafka client of a source shares (consumer, admin, dry-run)."""
    options: dict[str, Any] = {
        "bootstrap_servers": source.bootstrap_servers,
        "client_id": source.client_id + client_suffix,
        "security_protocol": source.security_protocol,
    }
    if source.security_protocol in ("SSL", "SASL_SSL"):
        # Brokers are verified against ssl_ca_file (the system CAs without it), host names included.
        # No key password is "", not None: OpenSSL would prompt on the terminal for an encrypted key.
        key_password = source.ssl_key_password.get_secret_value() if source.ssl_key_password else ""
        try:
            options["ssl_context"] = create_ssl_context(
                cafile=source.ssl_ca_file,
                certfile=source.ssl_cert_file,
                keyfile=source.ssl_key_file,
                password=key_password,
            )
        except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
            files = ", ".join(f for f in (source.ssl_ca_file, source.ssl_cert_file, source.ssl_key_file) if f)
            hint = " (a wrong or missing ssl_key_password looks like this too)" if source.ssl_key_file else ""
            raise BridgeError(f"Kafka TLS settings: cannot load {files or 'the system CAs'}: {error}{hint}") from None
    if source.sasl_mechanism is not None:
        options["sasl_mechanism"] = source.sasl_mechanism
        options["sasl_plain_username"] = source.sasl_username
        if source.sasl_password is not None:
            options["sasl_plain_password"] = source.sasl_password.get_secret_value()
    return options


async def start_failure(source: KafkaSource, error: KafkaError) -> str:
    """Why a client could not start, in one line. aiokafka's bootstrap says only "Unable to
    bootstrap" and logs the cause (a refused SASL login, a failed TLS handshake): one direct
    connection to the first broker finds the cause again."""
    servers = ", ".join(source.bootstrap_servers)
    cause: BaseException = error
    host, _, port = source.bootstrap_servers[0].rpartition(":")
    if isinstance(error, KafkaConnectionError) and port.isdigit():
        options = kafka_client_options(source)
        del options["bootstrap_servers"]
        try:
            conn = await create_conn(host.strip("[]"), int(port), request_timeout_ms=10_000, **options)
        except (KafkaError, OSError, TimeoutError) as found:
            cause = found
        else:
            conn.close()
    if isinstance(cause, SaslAuthenticationFailed | UnsupportedSaslMechanismError):
        user = source.sasl_username
        return f"Kafka at {servers} refused the SASL {source.sasl_mechanism} login of user '{user}': {cause}"
    if isinstance(cause, ssl.SSLError):
        return f"TLS with Kafka at {servers} failed: {cause}"
    return f"Kafka at {servers} is not reachable: {cause}"


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


def _from_nats(headers: Sequence[tuple[str, bytes]]) -> bool:
    """Written by a reverse route (NATS -> Kafka): never copied back into NATS."""
    return any(name == ORIGIN_HEADER for name, _ in headers) if headers else False


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
        self._start_at: dict[TopicPartition, int] = {}  # first offset wanted after a seek to a time

    @property
    def group(self) -> str:
        return self._group

    @property
    def checkpoint_scope(self) -> str:
        return f"kafka-group:{self._group}"

    def _consumer_options(self) -> dict[str, Any]:
        source = self._source
        start = self._subscription.start
        options: dict[str, Any] = {
            **kafka_client_options(source),
            "group_id": self._group,
            "enable_auto_commit": False,
            "auto_offset_reset": "latest" if start == "latest" else "earliest",
            "isolation_level": "read_committed",
            "max_partition_fetch_bytes": 256 * 1024,
            "fetch_max_bytes": 4 * 1024 * 1024,
            "session_timeout_ms": 10_000,
            "heartbeat_interval_ms": 3_000,
            "rebalance_timeout_ms": 60_000,
            # Topics created after start (and new regex matches) are noticed within this.
            "metadata_max_age_ms": 30_000,
        }
        return options

    async def start(self, owner: LaneOwner) -> None:
        self._owner = owner
        consumer = AIOKafkaConsumer(**self._consumer_options())
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
            await consumer.stop()
            raise SourceUnavailableError(f"source '{self.name}': {await start_failure(self._source, error)}") from None

    async def fetch(self, max_messages: int, wait: float) -> Sequence[Received]:
        consumer = self._consumer
        assert consumer is not None, "fetch before start"
        batches = await consumer.getmany(timeout_ms=int(wait * 1000), max_records=max_messages)
        skip_tombstones = self._subscription.tombstones == "skip"
        received: list[Received] = []
        for tp, records in batches.items():
            lane = (tp.topic, tp.partition)
            start_at = self._start_at.get(tp)
            for record in records:
                if start_at is not None and record.offset < start_at:
                    continue  # fetched before the seek to the route's start time took effect
                if (record.value is None and skip_tombstones) or _from_nats(record.headers):
                    # A tombstone the route skips, or a record a reverse route wrote: filtered.
                    received.append(Received(lane, record.offset, None))
                    continue
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
                offsets[tp] = position + 1
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as error:
            # A rebalance in progress or a broker hiccup: the next settle commits a later
            # watermark; a restart re-reads from the last commit and de-duplicates.
            log.warning("source %s: commit failed, will retry with the next watermark: %s", self.name, error)

    def pause(self) -> None:
        self._paused = True
        if self._consumer is not None:
            self._consumer.pause(*self._consumer.assignment())

    def resume(self) -> None:
        self._paused = False
        if self._consumer is not None:
            self._consumer.resume(*self._consumer.assignment())

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

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
        try:
            ends = await consumer.end_offsets(assigned)
            lags = {}
            unread = 0
            for tp in assigned:
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
        start = self._subscription.start
        if consumer is not None and start not in ("earliest", "latest"):
            await self._seek_to_time(consumer, partitions, start)
        if consumer is not None and self._paused:
            consumer.pause(*partitions)
        if self._owner is not None and partitions:
            stored = await self._owner.lanes_assigned([(tp.topic, tp.partition) for tp in partitions])
            if consumer is not None:
                await self._skip_stored(consumer, partitions, stored)

    async def _skip_stored(
        self, consumer: AIOKafkaConsumer, partitions: Collection[TopicPartition], stored: Mapping[Lane, int]
    ) -> None:
        """Start after what the checkpoints say is stored when the group's commit is older (the
        bridge died between a checkpoint and its commit): re-reading it would only skip it."""
        for tp in partitions:
            through = stored.get((tp.topic, tp.partition), -1)
            if through < 0:
                continue
            try:
                position = await consumer.position(tp)
            except KafkaError:
                continue  # reading from the commit is slower, never wrong
            if position <= through:
                log.info(
                    "source %s: %s/%d resumes at %d, after its checkpoint",
                    self.name,
                    tp.topic,
                    tp.partition,
                    through + 1,
                )
                consumer.seek(tp, through + 1)

    async def _seek_to_time(
        self, consumer: AIOKafkaConsumer, partitions: Collection[TopicPartition], start: str
    ) -> None:
        """Partitions the group has never committed start at the first record at or after `start`."""
        timestamp_ms = int(datetime.fromisoformat(start).timestamp() * 1000)
        fresh = [tp for tp in partitions if await consumer.committed(tp) is None]
        if not fresh:
            return
        found = await consumer.offsets_for_times(dict.fromkeys(fresh, timestamp_ms))
        ends = await consumer.end_offsets(fresh)
        for tp in fresh:
            offset = found.get(tp)
            start_at = offset.offset if offset is not None else ends[tp]
            self._start_at[tp] = start_at
            consumer.seek(tp, start_at)


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
