"""A reverse route's Kafka target: produce to one topic, idempotently, with acks=all.

`acks="all"` makes a confirm mean "on every in-sync replica", so an acked JetStream message
survives the loss of a Kafka broker; `enable_idempotence=True` lets the producer retry a
batch internally without writing it twice or out of order. A batch goes out pipelined — every
record handed to the producer, then all delivery futures awaited — and the producer keeps
per-partition order.

After a failed write the producer is stopped and the next write starts a new one: a producer
that has lost a batch may hold a broken sequence state, and a fresh producer id is the
simple way out. Records written again that way may reach Kafka twice (idempotence spans one
producer session), which is the at-least-once edge every Kafka producer has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka.errors import (
    InvalidTimestampError,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    PolicyViolationError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
    UnsupportedForMessageFormatError,
)

from bridge.brokers.kafka import client
from bridge.config.sources import KafkaSource
from bridge.errors import TargetUnavailableError
from bridge.headers import ORIGIN_HEADER, ORIGIN_NATS
from bridge.targets import LegacyMessage, Outcome, WriteFailure

log = logging.getLogger(__name__)

_ORIGIN = (ORIGIN_HEADER, ORIGIN_NATS.encode("ascii"))

# What Kafka answers for a record it will never take, however often it is sent: over the
# topic's max.message.bytes (or the producer's max_request_size), a write the route's user is
# not authorized for, a topic name or timestamp the broker rejects, a policy. Everything else
# (leader elections, timeouts, a broker down, sequence errors after a neighbour failed) passes.
_REFUSED_FOR_GOOD: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
    InvalidTopicError,
    InvalidTimestampError,
    PolicyViolationError,
    UnsupportedForMessageFormatError,
)


class KafkaTarget:
    """Produces batches to one topic and reports each record's acknowledgement."""

    key_name = "record key"

    def __init__(self, source: KafkaSource, topic: str, *, label: str = "", confirm_timeout: float = 30.0) -> None:
        self._source = source
        self._topic = topic
        self._label = label
        self._confirm_timeout = confirm_timeout
        self._producer: Any = None  # AIOKafkaProducer; aiokafka ships no type hints
        self.connects = 0  # producers started, for tests and status

    @property
    def description(self) -> str:
        servers = ",".join(self._source.bootstrap_servers)
        return f"Kafka topic '{self._topic}' at {servers}"

    def key_problem(self, key: str | None) -> str | None:
        return None  # Kafka takes any bytes as a key

    async def connect(self) -> None:
        """Start an idempotent producer and check the topic has partitions."""
        if self._producer is not None:
            return
        producer = client.producer(
            self._source,
            purpose="reverse",
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=int(self._confirm_timeout * 1000),
        )
        try:
            await producer.start()
            partitions = await producer.partitions_for(self._topic)
        except KafkaError as error:
            await _stop_quietly(producer)
            raise TargetUnavailableError(
                f"{self.description} is not available: {str(error) or type(error).__name__}"
            ) from None
        if not partitions:
            await _stop_quietly(producer)
            raise TargetUnavailableError(f"{self.description} has no partitions (does the topic exist?)")
        self._producer = producer
        self.connects += 1
        log.info("reverse route %s: producing to %s", self._label, self.description)

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_quietly(producer)

    async def write(self, batch: Sequence[LegacyMessage]) -> list[Outcome]:
        """Hand every record to the producer, then wait for every acknowledgement."""
        if not batch:
            return []
        try:
            await self.connect()
        except TargetUnavailableError as error:
            return [WriteFailure(str(error))] * len(batch)
        producer = self._producer
        futures: list[asyncio.Future[Any]] = []
        refused: WriteFailure | None = None
        for message in batch:
            headers = [(name, value.encode("utf-8")) for name, value in message.headers.items()]
            headers.append(_ORIGIN)  # loop prevention: forward routes never copy it back
            key = message.key.encode("utf-8") if message.key is not None else None
            try:
                futures.append(await producer.send(self._topic, value=message.payload, key=key, headers=headers))
            except KafkaError as error:
                # Nothing after this record may be sent, or it could land before it.
                refused = WriteFailure(
                    f"Kafka refused the record: {str(error) or type(error).__name__}",
                    permanent=isinstance(error, _REFUSED_FOR_GOOD),
                )
                break
        results = await asyncio.gather(*futures, return_exceptions=True)
        outcomes: list[Outcome] = [_outcome(result) for result in results]
        if refused is not None:
            outcomes.append(refused)
            unsent = WriteFailure("not sent: an earlier record of the batch was refused")
            outcomes.extend([unsent] * (len(batch) - len(outcomes)))
        if any(outcome is not None for outcome in outcomes):
            await self.close()  # a fresh producer (and producer id) for the next attempt
        return outcomes


def _outcome(result: object) -> Outcome:
    if isinstance(result, _REFUSED_FOR_GOOD):
        return WriteFailure(f"Kafka refused the record: {result or type(result).__name__}", permanent=True)
    if isinstance(result, KafkaError):
        return WriteFailure(f"Kafka did not acknowledge the record: {result or type(result).__name__}")
    if isinstance(result, asyncio.CancelledError):  # the producer was stopped under the record
        return WriteFailure("Kafka producer stopped before the record was acknowledged")
    if isinstance(result, BaseException):
        raise result  # not a broker problem: a bug, shown as it is
    return None  # RecordMetadata: stored on every in-sync replica


async def _stop_quietly(producer: Any) -> None:
    with contextlib.suppress(Exception):
        await producer.stop()
