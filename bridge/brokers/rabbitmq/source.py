"""(1) IN: RabbitMQ — a shadow copy of exchanges, a legacy queue, or a stream queue.

Three modes per route:

- `shadow`: the bridge declares its own durable queue (quorum by default) and binds it to
  the route's exchange like a legacy consumer's queue, so it receives a *copy* of every
  matching message and existing queues and consumers are untouched.
- `queue`: consume an existing queue — at cut-over, to drain it. It competes with any
  legacy consumer still attached.
- `stream`: read a stream queue from an offset; the bridge tracks the offset itself.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import DeliveredMessage

from bridge.brokers.rabbitmq.client import amqp_url, next_reconnect_delay, open_connection, reply_text
from bridge.brokers.rabbitmq.deliveries import DeliveryFrames
from bridge.brokers.rabbitmq.records import STREAM_OFFSET_HEADER, amqp_message, direct_message, stream_offset_of
from bridge.config.routes import FromRabbitMQ, RabbitMQMode
from bridge.config.sources import RabbitMQSource
from bridge.errors import RabbitMQConnectError, SourceUnavailableError, SourceUnreachableError
from bridge.routing import ExchangeType
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
    ) -> None:
        self.name = name
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
        self._stream_next: int | None = None  # stream mode: the offset to resume from
        self._stream_tags: deque[tuple[int, int]] = deque()  # stream mode: (offset, delivery tag)
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
                self._stream_next = stored[self._queue] + 1  # resume after what is stored
        await self._connect()

    async def fetch(self, max_messages: int, wait: float) -> Sequence[Received]:
        if self._lost.is_set() and not self._closing:
            await self._recover()
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
        except (aiormq.exceptions.AMQPError, ConnectionError) as error:
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
            await self._declare(channel)
            underlay = await channel.get_underlay_channel()
            self._epoch += 1
            self._lost.clear()
            self._buffer.clear()
            self._stream_tags.clear()
            connection.close_callbacks.add(self._on_close)
            channel.close_callbacks.add(self._on_close)
            self._connection, self._channel, self._underlay = connection, channel, underlay
            arguments: dict[str, Any] = {}
            if self._mode is RabbitMQMode.STREAM:
                arguments[STREAM_OFFSET_HEADER] = self._stream_start()
            # Before the consume: all its deliveries.
            if self._mode is RabbitMQMode.STREAM:
                DeliveryFrames.install(underlay, self._on_delivered)
            else:
                DeliveryFrames.install(underlay, self._on_delivered, self._on_direct)
            await underlay.basic_consume(self._queue, self._on_delivery, no_ack=False, arguments=arguments)
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

    async def _declare(self, channel: AbstractChannel) -> None:
        subscription = self._subscription
        if self._mode is not RabbitMQMode.SHADOW:
            await channel.declare_queue(self._queue, passive=True)  # must exist: never create a legacy queue
            return
        assert subscription.exchange is not None
        exchange = await channel.get_exchange(subscription.exchange, ensure=True)
        arguments: dict[str, Any] = {"x-queue-type": "quorum"} if subscription.queue_type == "quorum" else {}
        if subscription.single_active_consumer:
            arguments["x-single-active-consumer"] = True
        queue = await channel.declare_queue(self._queue, durable=True, arguments=arguments)
        if subscription.type is ExchangeType.HEADERS:
            await queue.bind(exchange, routing_key="", arguments=dict(subscription.arguments))
        elif subscription.type is ExchangeType.FANOUT:
            await queue.bind(exchange, routing_key="")
        else:
            for key in subscription.bindings:
                await queue.bind(exchange, routing_key=key)

    def _stream_start(self) -> Any:
        if self._stream_next is not None:
            return self._stream_next
        start = self._subscription.stream_offset
        if isinstance(start, int) or (isinstance(start, str) and start.isdigit()):
            return int(start)
        if start in ("first", "last", "next"):
            return start
        return datetime.fromisoformat(str(start))

    def _on_close(self, *_args: object) -> None:
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
        self._arrived.set()

    async def _on_delivery(self, message: DeliveredMessage) -> None:
        """aiormq's consumer callback; DeliveryFrames takes the deliveries before it would run."""
        self._on_delivered(message)

    def _received(self, delivered: DeliveredMessage, lane: Lane, stream: bool) -> Received | None:
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
            self._stream_tags.append((offset, tag))
            self._stream_next = offset + 1
        # A message a reverse route wrote too: bridge.decide filters it.
        message = amqp_message(delivered, self._queue, headers, offset)
        return Received(lane, offset if offset is not None else tag, message)
