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
decodes `expiration` and `timestamp` lossily and costs time per message. aio-pika's
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
import random
import ssl
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import DeliveredMessage

from bridge.config.model import FromRabbitMQ, RabbitMQMode, RabbitMQSource
from bridge.errors import SourceUnavailableError, SourceUnreachableError
from bridge.logs import redact_url
from bridge.message import AmqpOrigin, SourceMessage
from bridge.routing import ExchangeType
from bridge.sources.base import Lane, LaneOwner, Received

log = logging.getLogger(__name__)

# pamqp's property names -> the AMQP names used in AmqpOrigin.properties and headers.
_PROPERTY_NAMES = {
    "content_type": "content_type",
    "content_encoding": "content_encoding",
    "delivery_mode": "delivery_mode",
    "priority": "priority",
    "correlation_id": "correlation_id",
    "reply_to": "reply_to",
    "expiration": "expiration",
    "message_id": "message_id",
    "timestamp": "timestamp",
    "message_type": "type",
    "user_id": "user_id",
    "app_id": "app_id",
}
STREAM_OFFSET_HEADER = "x-stream-offset"


def amqp_url(source: RabbitMQSource) -> str:
    """The source's URL with its `vhost`, `username`, `password`, TLS and auth settings applied.

    aio-pika ignores `virtualhost=`/`login=`/`password=` keywords when it is given a URL, so
    they are written into the URL itself (percent-encoded, as the AMQP URI spec wants). aiormq
    takes its TLS files and mechanism from the URL's query, so for `amqps://` the `tls_*` files
    become `cafile`, `certfile` and `keyfile`, and EXTERNAL becomes `auth=external` with no user
    or password in the URL (the client certificate is the identity). File paths are not secrets:
    `redact_url` keeps the query and hides only the password.
    """
    url = source.url.get_secret_value()
    parts = urlsplit(url)
    external = source.auth_mechanism == "EXTERNAL"
    params: dict[str, str] = {}
    if parts.scheme.lower() == "amqps":
        tls_files = {"cafile": source.tls_ca_file, "certfile": source.tls_cert_file, "keyfile": source.tls_key_file}
        params.update({key: path for key, path in tls_files.items() if path is not None})
    if external:
        params["auth"] = "external"
    if source.vhost is None and source.username is None and source.password is None and not params:
        return url
    user = quote(source.username, safe="") if source.username is not None else (parts.username or "")
    password = (
        quote(source.password.get_secret_value(), safe="") if source.password is not None else (parts.password or "")
    )
    userinfo = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    if external:
        userinfo = ""  # EXTERNAL sends no user or password: the certificate's identity is the user
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    path = "/" + quote(source.vhost, safe="") if source.vhost is not None else parts.path
    # The URL's own query stays as written, except the keys set here; yarl (aiormq) decodes `+`
    # in a query as a space, so values are percent-encoded with quote(), not quote_plus().
    kept = [item for item in parts.query.split("&") if item and unquote(item.partition("=")[0]) not in params]
    kept += [f"{key}={quote(value, safe='/')}" for key, value in params.items()]
    return urlunsplit((parts.scheme, userinfo + host, path, "&".join(kept), parts.fragment))


# TLS alerts by which a broker turns down the client certificate it was shown
_CLIENT_CERT_ALERTS = (
    "ALERT_UNKNOWN_CA",
    "ALERT_BAD_CERTIFICATE",
    "ALERT_UNSUPPORTED_CERTIFICATE",
    "ALERT_CERTIFICATE_EXPIRED",
    "ALERT_CERTIFICATE_REVOKED",
    "ALERT_CERTIFICATE_REQUIRED",
)


def _connect_failure(source: RabbitMQSource, error: BaseException) -> tuple[str, bool]:
    """Why a connection attempt failed, for one line, and whether RabbitMQ simply did not answer
    (an outage to wait out): a refused login, a refused vhost and a failed TLS handshake say so,
    with the auth mechanism; anything else is 'not reachable'."""
    text = str(error) or type(error).__name__
    mechanism = source.auth_mechanism
    if isinstance(error, aiormq.exceptions.ProbableAuthenticationError | aiormq.exceptions.AuthenticationError):
        return f"refused the {mechanism} login: {text}", False
    if isinstance(error, aiormq.exceptions.ConnectionNotAllowed) or _open_refused(error):
        return (
            f"refused access to the vhost '{source.effective_vhost}' (it does not exist, or the user may not use it)",
            False,
        )
    # aiormq wraps the ssl module's error in an AMQPConnectionError
    tls = error if isinstance(error, ssl.SSLError) else error.__cause__
    if not isinstance(tls, ssl.SSLError):
        # Refused, reset, timed out, closed by a broker shutting down: an outage. Anything else
        # (a port that does not speak AMQP 0-9-1) is not reachable either, but will not mend itself.
        outage = isinstance(error, OSError | TimeoutError) and not isinstance(
            error, aiormq.exceptions.IncompatibleProtocolError
        )
        return f"is not reachable: {text}", outage
    reason = tls.reason or text
    if isinstance(tls, ssl.SSLCertVerificationError):
        trusted = "tls_ca_file" if source.tls_ca_file is not None else "the system CAs (no tls_ca_file)"
        return f"failed the TLS handshake ({reason}): its certificate does not verify against {trusted}: " + (
            tls.verify_message or text
        ), False
    if any(alert in reason for alert in _CLIENT_CERT_ALERTS):
        shown = "the client certificate" if source.tls_cert_file is not None else "no client certificate"
        return f"turned down {shown} in the TLS handshake ({mechanism} login): {reason}", False
    return f"failed the TLS handshake ({mechanism} login): {reason}", False


def _open_refused(error: BaseException) -> bool:
    """RabbitMQ answered Connection.Open (the vhost) with Connection.Close: aiormq reports it as
    an unexpected frame, without the reply code or text (a missing vhost, a user without access)."""
    return isinstance(error, aiormq.exceptions.InvalidFrameError) and "got <Connection.Close" in str(error)


class RabbitMQConnectError(SourceUnavailableError):
    """A connection the broker refused or never answered: where (password as ***) and why;
    `unreachable` when it did not answer at all (an outage, not a setting to fix)."""

    def __init__(self, where: str, reason: str, *, unreachable: bool = False) -> None:
        super().__init__(f"RabbitMQ at {where} {reason}")
        self.where = where
        self.reason = reason
        self.unreachable = unreachable


async def open_connection(
    source: RabbitMQSource, *, connect_timeout: float, heartbeat: int | None = None
) -> AbstractConnection:
    """One connection to the source, for routes and commands alike, so every caller reports a
    refused login, a failed TLS handshake or an unreachable broker the same way."""
    url = amqp_url(source)
    kwargs: dict[str, Any] = {}
    if heartbeat is not None:
        kwargs["heartbeat"] = heartbeat
    # Bounded by asyncio.timeout, not by asyncio.wait_for (here, or aio-pika's own when given a
    # `timeout`): in Python 3.11 wait_for returns the attempt's outcome when a cancellation arrives
    # just as the attempt ends, so a stop's cancellation of a failing attempt became a "not reachable"
    # the reconnect loop retried, and the stop waited until RabbitMQ was back.
    try:
        async with asyncio.timeout(connect_timeout):
            connection: AbstractConnection = await aio_pika.connect(url, **kwargs)
    except (aiormq.exceptions.AMQPError, ConnectionError, OSError, TimeoutError) as error:
        reason, unreachable = _connect_failure(source, error)
        raise RabbitMQConnectError(redact_url(url), reason, unreachable=unreachable) from None
    return connection


MAX_RECONNECT_DELAY = 5.0


def next_reconnect_delay(delay: float) -> float:
    """The wait before the next connect attempt: doubling, but never past 5 s (with a little
    jitter). A restarted RabbitMQ is typically back within seconds, and every second the bridge
    still waits afterwards is lag on every shadow route; a longer cap once left a route idle 16 s
    after its broker was back. The jitter keeps a fleet of bridges from reconnecting in lockstep."""
    return min(delay * 2, MAX_RECONNECT_DELAY) * random.uniform(0.8, 1.0)


def shadow_queue_name(service: str, route: str) -> str:
    """The bridge's own queue for a shadow route — never a legacy consumer's queue."""
    return f"nats-bridge.{service}.{route}"


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
        self._buffer: deque[DeliveredMessage] = deque()
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
        batch: list[Received] = []
        buffer = self._buffer
        lane = self.lane
        stream = self._mode is RabbitMQMode.STREAM
        while buffer and len(batch) < max_messages:
            delivered = buffer.popleft()
            received = self._received(delivered, lane, stream)
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
            await underlay.basic_consume(self._queue, self._on_delivery, no_ack=False, arguments=arguments)
        except aiormq.exceptions.ChannelNotFoundEntity as error:
            await connection.close()
            raise SourceUnavailableError(f"source '{self.name}': {_reply_text(error)}") from None
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

    async def _on_delivery(self, message: DeliveredMessage) -> None:
        self._buffer.append(message)
        self._arrived.set()

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


def stream_offset_of(delivered: DeliveredMessage) -> tuple[int | None, dict[str, Any]]:
    """A stream delivery's offset, and its headers without the offset header RabbitMQ adds."""
    headers = dict(delivered.header.properties.headers or {})
    raw = headers.pop(STREAM_OFFSET_HEADER, None)
    return (raw if isinstance(raw, int) else None), headers


def amqp_message(
    delivered: DeliveredMessage, queue: str | None, headers: Mapping[str, Any], stream_offset: int | None
) -> SourceMessage:
    """A delivery as the pipeline sees it: the AMQP properties under aio-pika's names."""
    delivery = delivered.delivery
    properties = delivered.header.properties
    values: dict[str, Any] = {}
    for attribute, name in _PROPERTY_NAMES.items():
        value = getattr(properties, attribute, None)
        if value is not None:
            values[name] = value
    origin = AmqpOrigin(
        exchange=delivery.exchange or "",  # type: ignore[union-attr]
        routing_key=delivery.routing_key or "",  # type: ignore[union-attr]
        queue=queue,
        properties=values,
        redelivered=bool(delivery.redelivered),  # type: ignore[union-attr]
        stream_offset=stream_offset,
    )
    return SourceMessage(origin, delivered.body, tuple(headers.items()))


def _reply_text(error: aiormq.exceptions.AMQPError) -> str:
    frame = error.args[0] if error.args else None
    text = getattr(frame, "reply_text", None)
    return str(text) if text else str(error)
