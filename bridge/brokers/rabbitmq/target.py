"""A reverse route's RabbitMQ target: publish to an existing exchange, with publisher confirms.

The exchange is looked up passively and never declared: it belongs to the legacy topology,
and a bridge that quietly created a missing (or misspelt) exchange would publish into a void
while reporting success. A missing exchange is therefore an error naming it, and the route
keeps its messages un-acked on the JetStream side until someone declares it.

aio-pika opens the connection and the confirm channel (readable, well-kept); messages go
through its underlying aiormq channel, which skips aio-pika's per-message wrapper. One
publish per message runs as a task: aiormq's lock is FIFO, so the frames leave in batch
order, and all confirms are awaited together. `mandatory=False`, as legacy producers publish:
a message no queue is bound for is dropped by RabbitMQ and still confirmed.

The connection is not "robust": after any failure it is closed and the next write opens a
fresh one, so a half-dead channel can never swallow a confirm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection

from bridge.brokers.rabbitmq.client import amqp_url, open_connection
from bridge.config.sources import RabbitMQSource
from bridge.errors import RabbitMQConnectError, TargetUnavailableError
from bridge.headers import ORIGIN_HEADER, ORIGIN_NATS
from bridge.logs import redact_url
from bridge.targets import LegacyMessage, Outcome, WriteFailure

log = logging.getLogger(__name__)

# What a dying connection or channel raises for a publish in flight (a closed channel is a RuntimeError).
_LOST = (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError, ConnectionError, OSError)
MAX_ROUTING_KEY_BYTES = 255  # an AMQP shortstr
_REFUSED_FOR_GOOD = (aiormq.exceptions.ChannelAccessRefused, aiormq.exceptions.ChannelPreconditionFailed)
PERSISTENT = 2  # AMQP delivery_mode


class RabbitMQTarget:
    """Publishes batches to one exchange and reports each message's confirm."""

    key_name = "routing key"

    def __init__(
        self,
        source: RabbitMQSource,
        exchange: str,
        *,
        label: str = "",
        connect_timeout: float = 10.0,
        confirm_timeout: float = 30.0,
    ) -> None:
        self._source = source
        self._exchange = exchange
        self._label = label
        self._connect_timeout = connect_timeout
        self._confirm_timeout = confirm_timeout
        self._url = amqp_url(source)
        self._password = urlsplit(self._url).password
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._underlay: aiormq.Channel | None = None
        self.connects = 0  # connections opened, for tests and status

    @property
    def description(self) -> str:
        return f"RabbitMQ exchange '{self._exchange}' at {redact_url(self._url)}"

    def key_problem(self, key: str | None) -> str | None:
        if key is not None and len(key.encode("utf-8")) > MAX_ROUTING_KEY_BYTES:
            return f"routing key is longer than {MAX_ROUTING_KEY_BYTES} bytes (AMQP's limit)"
        return None

    # ------------------------------------------------------------------ connection

    async def connect(self) -> None:
        """Open the connection and a confirm channel, and check the exchange exists."""
        if self._usable():
            return
        await self.close()
        vhost = unquote(urlsplit(self._url).path.removeprefix("/")) or "/"
        try:
            connection = await open_connection(
                self._source,
                connect_timeout=self._connect_timeout,
                heartbeat=int(self._source.heartbeat.total_seconds()),
                name=f"nats-bridge reverse {self._label}".strip(),
            )
        except RabbitMQConnectError as error:
            raise TargetUnavailableError(str(error)) from None
        try:
            channel = await connection.channel(publisher_confirms=True)
            await channel.get_exchange(self._exchange, ensure=True)  # passive: never declared
            underlay = await channel.get_underlay_channel()
            # The concrete channel: its basic_publish can skip waiting for the socket drain.
            assert isinstance(underlay, aiormq.Channel)
        except aiormq.exceptions.ChannelNotFoundEntity:
            await _close_quietly(connection)
            raise TargetUnavailableError(
                f"RabbitMQ exchange '{self._exchange}' does not exist in vhost '{vhost}' at "
                f"{redact_url(self._url)}; the bridge never declares it: declare it, or fix 'to.exchange'"
            ) from None
        except (aiormq.exceptions.AMQPError, ConnectionError, OSError, TimeoutError) as error:
            await _close_quietly(connection)
            raise TargetUnavailableError(
                f"RabbitMQ at {redact_url(self._url)} refused the exchange '{self._exchange}': {self._text(error)}"
            ) from None
        self._connection, self._channel, self._underlay = connection, channel, underlay
        self.connects += 1
        log.info("reverse route %s: connected to %s", self._label, self.description)

    def _usable(self) -> bool:
        return (
            self._connection is not None
            and not self._connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
            and self._underlay is not None
        )

    async def close(self) -> None:
        connection = self._connection
        self._connection = self._channel = None
        self._underlay = None
        if connection is not None:
            await _close_quietly(connection)

    # ------------------------------------------------------------------ writing

    async def write(self, batch: Sequence[LegacyMessage]) -> list[Outcome]:
        """Publish every message, then wait for every confirm; one outcome per message."""
        if not batch:
            return []
        try:
            await self.connect()
        except TargetUnavailableError as error:
            return [WriteFailure(str(error))] * len(batch)
        underlay = self._underlay
        assert underlay is not None  # connect() succeeded
        exchange = self._exchange
        timeout = self._confirm_timeout
        publishes = [
            asyncio.ensure_future(
                underlay.basic_publish(
                    message.payload,
                    exchange=exchange,
                    routing_key=message.key or "",
                    properties=_properties(message),
                    mandatory=False,
                    timeout=timeout,
                    wait=False,
                )
            )
            for message in batch
        ]
        results = await asyncio.gather(*publishes, return_exceptions=True)
        outcomes: list[Outcome] = [self._outcome(result) for result in results]
        if any(outcome is not None for outcome in outcomes):
            await self.close()  # start the next attempt on a fresh connection and channel
        return outcomes

    def _outcome(self, result: object) -> Outcome:
        if isinstance(result, aiormq.spec.Basic.Ack):
            return None
        if isinstance(result, aiormq.spec.Basic.Nack):
            return WriteFailure(f"RabbitMQ refused the message (basic.nack) on exchange '{self._exchange}'")
        if isinstance(result, aiormq.exceptions.ChannelNotFoundEntity):
            return WriteFailure(f"RabbitMQ exchange '{self._exchange}' does not exist (any more): {self._text(result)}")
        if isinstance(result, _REFUSED_FOR_GOOD):
            # 403: no write permission (for this routing key, with topic permissions); 406: a
            # precondition the message fails (over max_message_size). The broker closes the
            # channel, so every publish in flight on it gets this too: the route sorts out whose
            # fault it was by writing the failed ones alone.
            return WriteFailure(f"RabbitMQ refused the message: {self._text(result)}", permanent=True)
        if isinstance(result, TimeoutError):
            return WriteFailure(f"RabbitMQ did not confirm within {self._confirm_timeout:.0f}s")
        if isinstance(result, aiormq.exceptions.PublishError):
            return WriteFailure(f"RabbitMQ returned the message: {self._text(result)}")
        if isinstance(result, _LOST):
            return WriteFailure(f"RabbitMQ connection lost before the confirm: {self._text(result)}")
        if isinstance(result, asyncio.CancelledError):  # aiormq cancels what a closing channel had queued
            return WriteFailure("RabbitMQ channel closed before the message was sent")
        if isinstance(result, BaseException):
            raise result  # not a broker problem: a bug, shown as it is
        return WriteFailure(f"RabbitMQ answered {result!r} instead of a confirm")

    def _text(self, error: BaseException) -> str:
        """An error's text for logs: the broker's reply text when there is one, never the password."""
        frame = error.args[0] if isinstance(error, aiormq.exceptions.AMQPError) and error.args else None
        reply = getattr(frame, "reply_text", None)
        text = str(reply) if reply else (str(error) or type(error).__name__)
        if self._password:
            text = text.replace(self._password, "***")
        return text.replace(self._url, redact_url(self._url))


def _properties(message: LegacyMessage) -> aiormq.spec.Basic.Properties:
    headers: dict[str, object] = dict(message.headers)
    headers[ORIGIN_HEADER] = ORIGIN_NATS  # loop prevention: forward routes never copy it back
    return aiormq.spec.Basic.Properties(
        headers=headers,  # type: ignore[arg-type]  # pamqp's FieldTable is invariant
        message_id=message.msg_id,
        delivery_mode=PERSISTENT,
    )


async def _close_quietly(connection: AbstractConnection) -> None:
    with contextlib.suppress(Exception):
        await connection.close()
