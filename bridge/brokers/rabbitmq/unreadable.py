"""Stream offsets RabbitMQ cannot hand to an AMQP 0-9-1 consumer: noticed, located exactly, named.

RabbitMQ 3.10 cannot turn some stream messages into AMQP 0-9-1 (one written over the stream
protocol with an AMQP 1.0 header section): reading one, it closes the consumer's connection with
INTERNAL_ERROR (a function_clause in rabbit_msg_record:decode in its log), and again at every
reconnect. It converts all it reads at once (as much as the prefetch allows) before sending any
of it, so the deliveries before the message die with the connection too: the offset a stream
route resumes at can be hundreds of messages before the one at fault.

`StreamStall` counts the connections closed so in a row while the route's resume point stays
the same (nothing new received). At `STALLS_BEFORE_SEARCH` the source calls `locate`, which reads
on connections of its own with a prefetch of 1 — RabbitMQ then converts one message per read —
so the messages before the one at fault arrive one by one and the first read that closes the
connection is the one at fault. A transient close (a restart's CONNECTION_FORCED, a reset) is
never INTERNAL_ERROR, and ends a search without a verdict: only the broker's own repeated answer
dead-letters anything.

Stream offsets are not contiguous: a stream-protocol consumer that stores its offset writes a
tracking entry that takes an offset and holds no message. A read from offset N starts at the
first *message* at or after N, so "a read from N closes the connection" says only that the first
message at or after N cannot be delivered. `locate` reads from each offset after the last one
delivered until a read does not close the connection: the last offset that did holds such a
message for certain; the ones before it (only when several in a row close it) are such messages
or entries without one, which AMQP 0-9-1 cannot tell apart. Each is named, with which it is, and
dead-lettered: one dead letter too many, saying so, never a message lost without a word.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

import aiormq
from aio_pika.abc import AbstractConnection
from aiormq.abc import DeliveredMessage

from bridge.brokers.rabbitmq.records import STREAM_OFFSET_HEADER, stream_offset_of
from bridge.errors import RabbitMQConnectError
from bridge.message import AmqpOrigin, SourceMessage
from bridge.sources.base import Received

log = logging.getLogger(__name__)

STALLS_BEFORE_SEARCH = 3  # INTERNAL_ERROR closes in a row at one resume point before `locate` is asked
SEARCH_IDLE = 2.0  # seconds a one-by-one read waits for a delivery or a close before it concludes neither comes
MAX_SCAN = 32  # offsets tried one at a time after the last delivered one (each closing: a run of them)

StreamStart = int | str | datetime  # an offset, "first"/"last"/"next", or a timestamp (x-stream-offset)
Connect = Callable[[], Awaitable[AbstractConnection]]


def is_internal_error(error: BaseException | None) -> bool:
    """The broker closed the connection with INTERNAL_ERROR (541): a crash on its side, not a
    restart (CONNECTION_FORCED) or a network failure."""
    return isinstance(error, aiormq.exceptions.ConnectionInternalError)


def describe_close(error: BaseException | None) -> str:
    """The broker's close as one line: its reply text and code."""
    if isinstance(error, aiormq.exceptions.ConnectionInternalError):
        return "Connection.Close INTERNAL_ERROR (541)"
    return f"{type(error).__name__}: {error}" if error is not None else "closed"


@dataclass(slots=True)
class StreamStall:
    """Connections closed with INTERNAL_ERROR in a row while the resume point stayed the same."""

    at: StreamStart | None = None
    count: int = 0
    error: str = ""

    def closed(self, resume: StreamStart, error: BaseException | None) -> int:
        """A connection that received nothing ended: returns how many in a row ended with
        INTERNAL_ERROR at `resume` (0: it ended otherwise, which breaks the run)."""
        if not is_internal_error(error):
            self.reset()
            return 0
        if self.count and self.at == resume:
            self.count += 1
        else:
            self.at, self.count = resume, 1
        self.error = describe_close(error)
        return self.count

    def reset(self) -> None:
        self.at, self.count, self.error = None, 0, ""

    def describe(self, label: str, queue: str) -> str:
        """One line for the log and /status: who, which queue, from which offset, how often."""
        return (
            f"{label}: RabbitMQ closed the connection with {self.error} {self.count} time(s) in a row "
            f"before delivering anything of stream queue '{queue}' from offset {self.at}"
        )


class Outcome(Enum):
    CLOSED = "closed"  # the broker closed the connection with INTERNAL_ERROR: a message it cannot convert
    IDLE = "idle"  # neither a delivery nor a close within SEARCH_IDLE (nothing more to read yet)
    LIMIT = "limit"  # read as many as asked, and the connection stayed up
    FAILED = "failed"  # anything else (a restart, a refused connection): no verdict


@dataclass(slots=True)
class Read:
    """What one read with a prefetch of 1 got: the deliveries, in order, and how it ended."""

    delivered: list[DeliveredMessage] = field(default_factory=list)
    outcome: Outcome = Outcome.FAILED
    error: str = ""


@dataclass(frozen=True, slots=True)
class Located:
    """What `locate` found: readable messages read one by one (each to be handed over), the
    offsets that cannot be delivered as (offset, certain) — certain: it holds a message RabbitMQ
    cannot deliver; not certain: that, or an entry without a message — and the broker's error.
    `unreadable` is empty when there is no verdict (a transient close, nothing found)."""

    delivered: list[DeliveredMessage]
    unreadable: list[tuple[int, bool]]
    error: str = ""
    unlocatable: bool = False  # the first message of a read from a non-numeric start cannot be delivered


async def read_one_by_one(connect: Connect, queue: str, start: StreamStart, limit: int) -> Read:
    """Read stream queue `queue` from `start` with a prefetch of 1, acknowledging each delivery
    at once (on a stream an ack only grants credit), until the connection closes, `limit`
    deliveries, or SEARCH_IDLE seconds with neither."""
    read = Read()
    ended: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    arrived = asyncio.Event()

    def on_close(_sender: object, error: BaseException | None = None) -> None:
        if not ended.done():
            ended.set_result(error)

    try:
        connection = await connect()
    except RabbitMQConnectError as refused:
        read.error = str(refused)
        return read
    try:
        connection.close_callbacks.add(on_close)
        channel = await connection.channel(publisher_confirms=False)
        underlay = await channel.get_underlay_channel()
        await underlay.basic_qos(prefetch_count=1)

        async def on_message(message: DeliveredMessage) -> None:
            read.delivered.append(message)
            arrived.set()
            if len(read.delivered) < limit:
                tag = int(message.delivery.delivery_tag or 0)  # type: ignore[union-attr]
                with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError):
                    await underlay.basic_ack(tag)

        await underlay.basic_consume(queue, on_message, no_ack=False, arguments={STREAM_OFFSET_HEADER: start})
        while len(read.delivered) < limit:
            arrived.clear()
            waiting: asyncio.Future[Any] = asyncio.ensure_future(arrived.wait())
            try:
                done, _ = await asyncio.wait({waiting, ended}, timeout=SEARCH_IDLE)
            finally:
                waiting.cancel()
            if ended in done:
                break
            if not done:
                read.outcome = Outcome.IDLE
                return read
        else:
            read.outcome = Outcome.LIMIT
            return read
    except (aiormq.exceptions.AMQPError, ConnectionError) as failure:
        # The close can come while consuming starts: the same answer as a close afterwards.
        on_close(None, failure)
    finally:
        with contextlib.suppress(Exception):
            await connection.close()
    closed_by = ended.result() if ended.done() else None
    read.outcome = Outcome.CLOSED if is_internal_error(closed_by) else Outcome.FAILED
    read.error = describe_close(closed_by)
    return read


def offset_of(message: DeliveredMessage) -> int | None:
    """A stream delivery's offset (x-stream-offset)."""
    return stream_offset_of(message)[0]


async def locate(connect: Connect, queue: str, start: StreamStart, limit: int) -> Located:
    """Find the offsets from `start` on that RabbitMQ cannot deliver over AMQP 0-9-1 (see the
    module's docstring): read one by one up to the first that closes the connection, then try
    each offset after the last delivered one until a read does not close it, then each of the
    closing ones again."""
    first = await read_one_by_one(connect, queue, start, limit)
    if first.outcome is not Outcome.CLOSED:
        return Located(first.delivered, [])
    last = offset_of(first.delivered[-1]) if first.delivered else None
    if last is None:
        if not isinstance(start, int):
            return Located([], [], first.error, unlocatable=True)
        last = start - 1
    closing = last + 1  # the first message after `last` closed the connection: it is at or after here
    for candidate in range(last + 2, last + 2 + MAX_SCAN):
        probe = await read_one_by_one(connect, queue, candidate, 1)
        if probe.outcome is Outcome.FAILED:
            log.info("stream queue '%s': search for an undeliverable offset interrupted (%s)", queue, probe.error)
            return Located(first.delivered, [])
        if probe.outcome is not Outcome.CLOSED:
            break
        closing = candidate
    else:
        log.warning(
            "stream queue '%s': more than %d offsets in a row after %d close the connection; no verdict",
            queue,
            MAX_SCAN,
            last,
        )
        return Located(first.delivered, [])
    for offset in range(last + 1, closing + 1):
        # Asked once more: a broker that closed connections for a moment only (never seen, but
        # cheap to rule out) gives no verdict, rather than a dead letter for a readable message.
        again = await read_one_by_one(connect, queue, offset, 1)
        if again.outcome is not Outcome.CLOSED:
            log.info("stream queue '%s': offset %d closed a connection once only; no verdict", queue, offset)
            return Located(first.delivered, [])
    unreadable = [(offset, offset == closing) for offset in range(last + 1, closing + 1)]
    return Located(first.delivered, unreadable, first.error)


def unreadable_messages(found: Located, label: str, queue: str, start: StreamStart) -> list[Received]:
    """The offsets `found` cannot be delivered, as messages the route dead-letters (their lane is
    the queue, as every stream delivery's), each logged once."""
    if found.unlocatable:
        log.error(
            "%s: the first message of stream queue '%s' from %s cannot be delivered over AMQP 0-9-1 (%s), and "
            "where it is cannot be found over AMQP 0-9-1: read the stream with a stream-protocol client and "
            "set the route's stream_offset past it",
            label,
            queue,
            start,
            found.error,
        )
    messages = []
    for offset, certain in found.unreadable:
        log.warning(
            "%s: offset %d of stream queue '%s' cannot be delivered over AMQP 0-9-1 (%s%s); it goes to the "
            "route's on_error (dead letter by default) and the route resumes after it",
            label,
            offset,
            queue,
            found.error,
            "" if certain else ", or it holds no message",
        )
        origin = AmqpOrigin(exchange="", routing_key="", queue=queue, stream_offset=offset)
        reason = unreadable_reason(queue, offset, certain, found.error)
        messages.append(Received(queue, offset, SourceMessage(origin, b"", unreadable=reason)))
    return messages


def unreadable_reason(queue: str, offset: int, certain: bool, error: str) -> str:
    """Why a stream offset is dead-lettered, and how the operator reads what it holds."""
    read_it = (
        f"its content cannot be read over AMQP 0-9-1, so this dead letter's payload is empty: read offset "
        f"{offset} with a stream-protocol client (e.g. rstream or the stream Java client, port 5552, "
        f"offset specification {offset})"
    )
    if certain:
        return (
            f"RabbitMQ closes the AMQP 0-9-1 connection with {error} when it reads offset {offset} of stream "
            f"queue '{queue}' (3.10 cannot convert a stream message with an AMQP 1.0 header section, e.g. one "
            f"written over the stream protocol); {read_it}"
        )
    return (
        f"offset {offset} of stream queue '{queue}' holds either a message RabbitMQ cannot deliver over AMQP "
        f"0-9-1 (a read from it closes the connection with {error}, as the next offset's does) or an entry "
        f"without a message (an offset-tracking record); AMQP 0-9-1 cannot tell which; {read_it}"
    )
