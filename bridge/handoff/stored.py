"""What a stream holds between two sequences on a consumer's filter subjects, headers only: the
drain-phase handoff classifies each message (a forward copy of a legacy producer's message, or a
NATS producer's message that a reverse route wrote to the legacy broker) before it positions a
durable. Read through a short-lived consumer with no acks, in memory, so nothing is left behind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from nats.js import JetStreamContext

from bridge.handoff.queue_plan import looking_consumer
from bridge.headers import FORWARDED_HEADERS, STREAM_POSITION_HEADER

READ_BATCH = 500
READ_IDLE = 2.0  # seconds without a message: everything up to `last` that exists was read


@dataclass(frozen=True, slots=True)
class Stored:
    """One stored message: its sequence and whether a forward route wrote it (with its headers)."""

    sequence: int
    headers: Mapping[str, str]

    @property
    def forwarded(self) -> bool:
        """Copied from the legacy broker by a forward route (it carries `Kafka-Topic` or
        `Amqp-Exchange`); otherwise published to NATS by a producer."""
        return any(name in self.headers for name in FORWARDED_HEADERS)


async def read_stored(js: JetStreamContext, stream: str, filters: Sequence[str], first: int, last: int) -> list[Stored]:
    """Every message on `filters` in `stream` from sequence `first` through `last`, in order."""
    found: list[Stored] = []
    await each_stored(js, stream, filters, first, last, found.append)
    return found


async def count_stored(
    js: JetStreamContext, stream: str, filters: Sequence[str], first: int, last: int, which: Callable[[Stored], bool]
) -> int:
    """How many messages on `filters` from `first` through `last` are `which`: read as
    `read_stored` reads, without keeping them (a Kafka handoff's range may be long)."""
    counted = 0

    def count(stored: Stored) -> None:
        nonlocal counted
        counted += which(stored)

    await each_stored(js, stream, filters, first, last, count)
    return counted


async def each_stored(
    js: JetStreamContext, stream: str, filters: Sequence[str], first: int, last: int, take: Callable[[Stored], None]
) -> None:
    """Hand each message on `filters` from `first` through `last` to `take`, in order."""
    if last < first:
        return
    info = await js.add_consumer(stream, looking_consumer(filters, first, headers_only=True))
    assert info.name is not None
    subscription = await js.pull_subscribe_bind(durable=info.name, stream=stream)
    try:
        while True:
            try:
                batch = await subscription.fetch(READ_BATCH, timeout=READ_IDLE)
            except TimeoutError:  # nats-py's, or asyncio's when the fetch's deadline ran out first
                return
            for message in batch:
                sequence = message.metadata.sequence.stream
                if sequence > last:
                    return
                take(Stored(sequence, dict(message.headers or {})))
                if sequence == last:
                    return  # nothing further to wait for
    finally:
        await subscription.unsubscribe()
        await js.delete_consumer(stream, info.name)


def position_of(value: object, stream: str) -> int | None:
    """The stream sequence a reverse route's `nats-bridge-stream-seq` header names, when it names
    a message of `stream` (None: absent, another stream's, or not a position)."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    name, _, sequence = value.rpartition(":")
    return int(sequence) if name == stream and sequence.isdigit() else None


def stream_position(headers: Sequence[tuple[str, object]] | Mapping[str, object], stream: str) -> int | None:
    """The position a legacy message's headers carry (see `position_of`)."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        if name == STREAM_POSITION_HEADER:
            return position_of(value, stream)
    return None
