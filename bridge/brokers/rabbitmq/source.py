"""(1) IN: RabbitMQ — a shadow copy of exchanges, a legacy queue, or a stream queue.

Three modes per route:

- `shadow`: its own durable queue bound like a legacy consumer's (topology.py): a *copy*.
- `queue`: an existing queue, to drain it at cut-over (competing with legacy consumers).
- `stream`: a stream queue from an offset the bridge tracks itself (stream_position.py).

aio-pika opens the connection and declares the topology (readable, well-kept); deliveries
and acks use its underlying aiormq channel directly, because aio-pika's message wrapper
decodes `expiration` and `timestamp` lossily and costs time per message, and the deliveries
are put together from the channel's frames as they arrive (`deliveries.DeliveryFrames`)
rather than by aiormq's task per message; outside stream mode, the connection's receiver
decodes each delivery complete in its buffer straight into the pipeline's message
(`direct.py`), and each delivery is made into its `Received` as it arrives. aio-pika's
*robust* reconnect is deliberately not used: on reconnect it replays stream queues from
the original offset and hides that in-flight deliveries died with the channel. Instead,
each connection is an *epoch*: its deliveries form one lane (delivery tags are per
channel), and when it dies the lane is revoked — RabbitMQ redelivers what was unacked, with
the same Nats-Msg-Id — and the next epoch starts a new lane. A stream route is one lane
for good (its positions are stream offsets) and resumes after the last offset received.

A connection that dies before anything arrives is reopened after a pause (doubling to 5 s),
never in a tight loop. A stream route whose connection RabbitMQ closes with INTERNAL_ERROR
again and again at one resume point is stuck on a message RabbitMQ cannot deliver over AMQP
0-9-1: `unreadable.locate` finds its offset; the messages before it are handed over, then the
offset as an unreadable message (the route's `on_error`: a dead letter), and it resumes after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import DeliveredMessage

from bridge.brokers.rabbitmq.client import amqp_url, next_reconnect_delay, open_connection, reply_text
from bridge.brokers.rabbitmq.deliveries import DeliveryFrames
from bridge.brokers.rabbitmq.records import STREAM_OFFSET_HEADER, amqp_message, direct_message, stream_offset_of
from bridge.brokers.rabbitmq.stream_position import StreamPosition
from bridge.brokers.rabbitmq.topology import declare_route_queue
from bridge.brokers.rabbitmq.unreadable import (
    STALLS_BEFORE_SEARCH,
    StreamStall,
    is_internal_error,
    locate,
    unreadable_messages,
)
from bridge.config.routes import FromRabbitMQ, RabbitMQMode
from bridge.config.sources import RabbitMQSource
from bridge.errors import RabbitMQConnectError, SourceUnavailableError, SourceUnreachableError
from bridge.sources.base import Lane, LaneOwner, Received

log = logging.getLogger(__name__)


class RabbitMQRouteSource:
    """One route's deliveries from RabbitMQ, in any of the three modes."""

    def __init__(
        self,
        name: str,
        source: RabbitMQSource,
        subscription: FromRabbitMQ,
        queue: str,
        *,
        reconnect_delay: float = 1.0,
        route: str = "",
    ) -> None:
        self.name = name
        self._label = f"route {route} (source {name})" if route else f"source {name}"
        self._source = source
        self._subscription = subscription
        self._queue = queue
        self._mode = subscription.effective_mode
        self._reconnect_delay = reconnect_delay
        self._owner: LaneOwner | None = None
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._underlay: aiormq.abc.AbstractChannel | None = None
        self._epoch = 0
        # Stream mode: deliveries, made into Received as fetched (that moves the resume offset).
        # Otherwise: each delivery's Received, made as it arrives, in its connection's lane.
        self._buffer: deque[Any] = deque()
        self._arrived = asyncio.Event()
        self._lost = asyncio.Event()
        self._closing = False
        self._stream = StreamPosition(subscription.stream_start)  # stream mode: where to attach
        self._stream_tags: deque[tuple[int, int]] = deque()  # stream mode: (offset, delivery tag)
        self._received_in_epoch = 0  # messages fetched from the current connection
        self._close_error: BaseException | None = None  # why the current connection closed
        self._quiet_delay = reconnect_delay  # the pause before reopening a connection that got nothing
        self._stall = StreamStall()  # stream mode: INTERNAL_ERROR closes in a row at one resume point
        self._handover: deque[Received] = deque()  # stream mode: read while locating an unreadable offset
        self.stable_positions = self._mode is RabbitMQMode.STREAM
        self.settle_after: int | None = max(1, source.prefetch // 4)
        self.unread: int | None = None  # the queue's ready messages, as of the last backlog()

    @property
    def queue(self) -> str:
        return self._queue

    @property
    def checkpoint_scope(self) -> str:
        vhost = unquote(urlsplit(amqp_url(self._source)).path.removeprefix("/")) or "/"
        return f"rabbitmq-vhost:{vhost}"

    @property
    def lane(self) -> Lane:
        """The current lane: the queue for a stream, (queue, epoch) otherwise."""
        if self._mode is RabbitMQMode.STREAM:
            return self._queue
        return (self._queue, self._epoch)

    # ------------------------------------------------------------------ Source

    async def start(self, owner: LaneOwner) -> None:
        self._owner = owner
        if self._mode is RabbitMQMode.STREAM:
            stored = await owner.lanes_assigned([self._queue])
            if self._queue in stored and stored[self._queue] >= 0:
                self._stream.next_offset = stored[self._queue] + 1  # resume after what is stored
        await self._connect()

    async def fetch(self, max_messages: int, wait: float) -> Sequence[Received]:
        if self._lost.is_set() and not self._closing:
            await self._recover()
        if self._handover:
            return [self._handover.popleft() for _ in range(min(max_messages, len(self._handover)))]
        if not self._buffer:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), wait)
        buffer = self._buffer
        if self._mode is not RabbitMQMode.STREAM:
            if len(buffer) <= max_messages:
                batch = list(buffer)
                buffer.clear()
                return batch
            return [buffer.popleft() for _ in range(max_messages)]
        batch = []
        lane = self.lane
        while buffer and len(batch) < max_messages:
            received = self._received(buffer.popleft(), lane, True)
            if received is not None:
                batch.append(received)
        return batch

    async def settle(self, watermarks: Mapping[Lane, int]) -> None:
        underlay = self._underlay
        position = watermarks.get(self.lane)
        if underlay is None or position is None or self._lost.is_set():
            return  # a lane of a dead channel: RabbitMQ redelivers its unacked messages
        if self._mode is RabbitMQMode.STREAM:
            tag = None
            while self._stream_tags and self._stream_tags[0][0] <= position:
                tag = self._stream_tags.popleft()[1]
            if tag is None:
                return
        else:
            tag = position
        try:
            await underlay.basic_ack(tag, multiple=True)
        except (aiormq.exceptions.AMQPError, ConnectionError) as error:
            log.warning("source %s: ack failed (%s); the messages will be redelivered", self.name, error)

    def pause(self) -> None:
        # Nothing to do: the bridge acks only what is stored, so at `prefetch` unacked
        # deliveries RabbitMQ stops sending by itself.
        return

    def resume(self) -> None:
        return

    async def close(self) -> None:
        self._closing = True
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None

    async def backlog(self) -> dict[str, int]:
        """The queue's ready messages (a passive declare), which doubles as the check that
        RabbitMQ answers; raises SourceUnavailableError when it does not."""
        connection = self._connection
        if self._stall.count:  # connected between two closes, but stuck all the same: say why
            raise SourceUnavailableError(self._stall_text())
        if connection is None or connection.is_closed or self._lost.is_set():
            raise SourceUnavailableError(f"source '{self.name}': not connected (reconnecting)")
        try:
            # A channel of its own: a failed passive declare closes its channel, and that must
            # never be the one the deliveries arrive on (just after a restart a stream queue
            # answers 404 "home node down" for a moment).
            probe = await connection.channel(publisher_confirms=False)
            try:
                queue = await probe.declare_queue(self._queue, passive=True)
            finally:
                if not probe.is_closed:
                    await probe.close()
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as error:
            # RuntimeError: aiormq's "connection closed", when it closed since the check above; left
            # out, it failed the monitor's whole look at every route.
            raise SourceUnavailableError(f"source '{self.name}': RabbitMQ does not answer: {error}") from None
        if self._mode is RabbitMQMode.STREAM:
            # A stream's message count is everything it retains, read or not: no backlog figure.
            return {}
        ready = int(queue.declaration_result.message_count or 0)
        self.unread = ready
        return {self._queue: ready}

    @property
    def reconnects(self) -> int:
        """Connections made after the first (each one a new epoch)."""
        return max(0, self._epoch - 1)

    # ------------------------------------------------------------------ connection

    async def _connect(self) -> None:
        source = self._source
        try:
            connection = await open_connection(
                source, connect_timeout=10, heartbeat=int(source.heartbeat.total_seconds())
            )
        except RabbitMQConnectError as error:
            failure = SourceUnreachableError if error.unreachable else SourceUnavailableError
            raise failure(f"source '{self.name}': {error}") from None
        try:
            channel = await connection.channel(publisher_confirms=False)
            await channel.set_qos(prefetch_count=source.prefetch)
            await declare_route_queue(channel, self._subscription, self._queue)
            underlay = await channel.get_underlay_channel()
            self._epoch += 1
            self._received_in_epoch = 0
            self._close_error = None
            self._lost.clear()
            self._buffer.clear()
            self._stream_tags.clear()
            connection.close_callbacks.add(self._on_close)
            channel.close_callbacks.add(self._on_close)
            self._connection, self._channel, self._underlay = connection, channel, underlay
            arguments: dict[str, Any] = {}
            if self._mode is RabbitMQMode.STREAM:
                arguments[STREAM_OFFSET_HEADER] = self._stream.start
            # Before the consume: all its deliveries.
            if self._mode is RabbitMQMode.STREAM:
                DeliveryFrames.install(underlay, self._on_delivered)
            else:
                DeliveryFrames.install(underlay, self._on_delivered, self._on_direct)
            await underlay.basic_consume(self._queue, self._on_delivery, no_ack=False, arguments=arguments)
            self._stream.attached()
        except aiormq.exceptions.ChannelNotFoundEntity as error:
            await connection.close()
            raise SourceUnavailableError(f"source '{self.name}': {reply_text(error)}") from None
        except ConnectionError as error:
            # The connection went away while subscribing (a broker shutting down closes it with
            # CONNECTION_FORCED): an outage, like a refused connection.
            await connection.close()
            where = f"source '{self.name}': RabbitMQ"
            if isinstance(error, aiormq.exceptions.ConnectionNotAllowed):
                raise SourceUnavailableError(f"{where} refused the subscription: {error}") from None
            text = str(error) or type(error).__name__
            raise SourceUnreachableError(f"{where} closed the connection while subscribing: {text}") from None
        except aiormq.exceptions.AMQPError as error:
            await connection.close()
            raise SourceUnavailableError(f"source '{self.name}': RabbitMQ refused the subscription: {error}") from None
        log.info("source %s: consuming queue '%s' (%s mode, epoch %d)", self.name, self._queue, self._mode, self._epoch)

    def _on_close(self, _sender: object = None, error: BaseException | None = None) -> None:
        if error is not None and (self._close_error is None or is_internal_error(error)):
            self._close_error = error  # the connection's and the channel's: the broker's own reason wins
        if not self._closing:
            self._lost.set()
            self._arrived.set()

    async def _recover(self) -> None:
        """The connection or channel died: give up its lane, then reconnect until RabbitMQ is back."""
        old_lane = self.lane
        if self._owner is not None and self._mode is not RabbitMQMode.STREAM:
            await self._owner.lanes_revoked([old_lane])
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connection = self._channel = None
        self._underlay = None
        await self._after_loss()
        delay = self._reconnect_delay
        while not self._closing:
            try:
                await self._connect()
            except SourceUnavailableError as error:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # Stopped while the attempt failed, and the library it went through returned the
                    # failure instead of the cancellation: stop all the same.
                    raise asyncio.CancelledError from None
                log.warning("%s; retrying in %.1fs", error, delay)
                await asyncio.sleep(delay)
                delay = next_reconnect_delay(delay)
                continue
            log.info("source %s: reconnected to RabbitMQ", self.name)
            return

    async def _after_loss(self) -> None:
        """Before reconnecting: pause if the lost connection got nothing (no tight loop of
        connections the broker closes at once), and, for a stream, look for a message RabbitMQ
        cannot deliver once it has closed the connection with INTERNAL_ERROR at one resume
        point STALLS_BEFORE_SEARCH times in a row."""
        if self._received_in_epoch:
            self._quiet_delay = self._reconnect_delay
            self._stall.reset()
            return
        if self._mode is RabbitMQMode.STREAM:
            stalls = self._stall.closed(self._stream.start, self._close_error)
            if stalls:
                log.warning("%s; retrying in %.1fs", self._stall_text(), self._quiet_delay)
            if stalls and stalls % STALLS_BEFORE_SEARCH == 0:  # again every few, should a search find nothing
                await self._locate_unreadable()
                if self._handover:
                    self._quiet_delay = self._reconnect_delay
                    return
        await asyncio.sleep(self._quiet_delay)
        self._quiet_delay = next_reconnect_delay(self._quiet_delay)

    def _stall_text(self) -> str:
        return self._stall.describe(self._label, self._queue)

    async def _locate_unreadable(self) -> None:
        """Find the offset RabbitMQ cannot deliver; queue the messages before it and the offset
        itself (an unreadable message) to be handed over, and resume after it."""
        source = self._source

        async def connect() -> AbstractConnection:
            return await open_connection(source, connect_timeout=10, heartbeat=int(source.heartbeat.total_seconds()))

        start = self._stream.start
        found = await locate(connect, self._queue, start, source.prefetch)
        for delivered in found.delivered:
            received = self._received(delivered, self._queue, stream=True, tagged=False)
            if received is not None:
                self._handover.append(received)
        self._handover.extend(unreadable_messages(found, self._label, self._queue, start))
        if self._handover:
            self._stream.next_offset = self._handover[-1].position + 1
            self._stall.reset()

    # ------------------------------------------------------------------ deliveries

    def _on_delivered(self, message: DeliveredMessage) -> None:
        if self._mode is RabbitMQMode.STREAM:
            self._buffer.append(message)
        else:
            self._buffer.append(self._received(message, self.lane, False))
        self._arrived.set()

    def _on_direct(
        self,
        tag: int,
        redelivered: bool,
        exchange: str,
        routing_key: str,
        properties: dict[str, Any],
        headers: dict[str, Any] | None,
        body: bytes,
    ) -> None:
        """A delivery the receiver decoded whole (direct.py): its Received, as `_received` makes it."""
        message = direct_message(exchange, routing_key, self._queue, properties, headers, redelivered, body)
        self._buffer.append(Received((self._queue, self._epoch), tag, message))
        self._received_in_epoch += 1
        self._arrived.set()

    async def _on_delivery(self, message: DeliveredMessage) -> None:
        """aiormq's consumer callback; DeliveryFrames takes the deliveries before it would run."""
        self._on_delivered(message)

    def _received(self, delivered: DeliveredMessage, lane: Lane, stream: bool, tagged: bool = True) -> Received | None:
        delivery = delivered.delivery
        properties = delivered.header.properties
        tag = int(delivery.delivery_tag or 0)  # type: ignore[union-attr]
        headers = dict(properties.headers or {})
        offset: int | None = None
        if stream:
            offset, headers = stream_offset_of(delivered)
            if offset is None:
                log.error("source %s: stream delivery without x-stream-offset; not settled", self.name)
                return None
            if tagged:  # untagged: read on another connection, which acknowledged it already
                self._stream_tags.append((offset, tag))
            self._stream.next_offset = offset + 1
        self._received_in_epoch += 1
        # A message a reverse route wrote too: bridge.decide filters it.
        message = amqp_message(delivered, self._queue, headers, offset)
        return Received(lane, offset if offset is not None else tag, message)
