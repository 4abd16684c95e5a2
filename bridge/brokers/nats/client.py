"""Connecting to NATS with options fit for a bridge that runs for weeks.

nats-py's defaults suit short scripts: it gives up reconnecting after about two minutes,
notices a dead connection only after minutes, and buffers publishes made while
disconnected. The bridge reconnects forever, pings often, and turns the reconnect
buffer off (`pending_size=0`): the publisher resends unacknowledged messages itself, in
source order, and a buffer flushed after reconnect would overtake those resends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from typing import Any, Protocol

from nats.aio.client import Client as NatsClient
from nats.errors import AuthorizationError, SlowConsumerError
from nats.errors import Error as NatsError

from bridge.brokers.nats.guarded import GuardedClient, TlsNotEstablishedError
from bridge.config.model import BridgeConfig
from bridge.config.nats import NatsConfig
from bridge.errors import BridgeError
from bridge.logs import redact_url

log = logging.getLogger(__name__)


class ConnectionListener(Protocol):
    """Something that must know when the NATS connection drops and comes back."""

    async def on_disconnect(self) -> None: ...

    async def on_reconnect(self) -> None: ...

    def on_permission_denied(self, subject: str) -> None:
        """The server refused a publish to `subject` (the user lacks the permission): it
        dropped the message and will never answer it."""
        ...

    def on_closed(self, reason: str) -> None:
        """The client closed for good without being asked to: no reconnect follows, nothing
        sent from now on can be stored."""
        ...


class ConnectionEvents:
    """Fans the connection's disconnect/reconnect/close out to listeners registered at any time.

    The publisher is created after the connection exists, so the connection cannot be
    given it up front; it registers here instead.

    A client that closes for good is an outage, not a quiet moment: nats-py 2.16 closes it
    on any server `-ERR` but a stale connection or a permissions violation (a control line
    over the server's limit, a payload over max_payload, an expired or revoked login), and
    when finite reconnect attempts run out. No reconnect follows, so the owner of the
    connection must learn of it (`lost`, `wait_lost`) and give up the process.
    """

    def __init__(self) -> None:
        self._listeners: list[ConnectionListener] = []
        self.disconnects = 0
        self.reconnects = 0
        self.slow_consumers = 0  # replies the client dropped because the bridge read too slowly
        self.permission_violations = 0  # publishes the server refused: the user lacks the permission
        # Set by whoever closes the client on purpose (shutdown): that close is no outage.
        self.closing = False
        self.lost: str | None = None  # why the client closed for good when nobody asked it to
        self._lost = asyncio.Event()

    def add(self, listener: ConnectionListener) -> None:
        self._listeners.append(listener)

    async def disconnected(self) -> None:
        self.disconnects += 1
        for listener in self._listeners:
            await listener.on_disconnect()

    async def reconnected(self) -> None:
        self.reconnects += 1
        for listener in self._listeners:
            await listener.on_reconnect()

    def permission_denied(self, subject: str) -> None:
        self.permission_violations += 1
        for listener in self._listeners:
            listener.on_permission_denied(subject)

    def closed(self, reason: str) -> None:
        """The client closed for good on its own: tell the listeners, then whoever waits."""
        if self.closing or self.lost is not None:
            return
        self.lost = reason
        for listener in self._listeners:
            listener.on_closed(reason)
        self._lost.set()

    async def wait_lost(self) -> str:
        """Wait until the client closes for good without being asked to; return why."""
        await self._lost.wait()
        assert self.lost is not None
        return self.lost


_PUBLISH_DENIED = re.compile(r"permissions violation for publish to \"?([^\"\s']+)", re.IGNORECASE)
_SUBSCRIBE_DENIED = re.compile(r"permissions violation for subscription to \"?([^\"\s']+)", re.IGNORECASE)


def auth_method(config: NatsConfig) -> str:
    """How the bridge authenticates, in words for error messages (never a secret)."""
    if config.credentials_file is not None:
        method = f"credentials file {config.credentials_file}"
    elif config.nkey_seed_file is not None:
        method = f"NKey seed file {config.nkey_seed_file}"
    elif config.token is not None:
        method = "token"
    elif config.password is not None:
        method = f"user '{config.user}' and password"
    else:
        method = "no credentials"
    if config.tls_cert_file is not None:
        method += f", TLS client certificate {config.tls_cert_file}"
    return method


def wants_tls(config: NatsConfig) -> bool:
    """The file asks for TLS: a tls:// URL, a CA, a client certificate or a TLS-first handshake.

    Then TLS is a promise, not a preference: no server gets CONNECT (the credentials) in clear."""
    return (
        any(server.get_secret_value().startswith(("tls://", "wss://")) for server in config.servers)
        or config.tls_ca_file is not None
        or config.tls_cert_file is not None
        or config.tls_handshake_first
    )


def tls_context(config: NatsConfig) -> ssl.SSLContext | None:
    """A TLS context when the file asks for TLS (see `wants_tls`)."""
    if not wants_tls(config):
        return None
    try:
        context = ssl.create_default_context(cafile=config.tls_ca_file)
        if config.tls_cert_file is not None and config.tls_key_file is not None:
            context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    except (OSError, ssl.SSLError) as error:
        raise BridgeError(f"NATS TLS settings: cannot load the CA or client certificate: {error}") from None
    return context


async def connect_nats(config: NatsConfig, events: ConnectionEvents | None = None) -> NatsClient:
    """Connect with bridge-grade options; raise the client's error if no server answers in time."""

    async def error_cb(error: Exception) -> None:
        if isinstance(error, SlowConsumerError) and events is not None:
            events.slow_consumers += 1
        denied = _PUBLISH_DENIED.search(str(error))
        if denied is not None:
            log.error("NATS refused a publish to '%s': the bridge's user lacks the permission", denied.group(1))
            if events is not None:
                events.permission_denied(denied.group(1))
            return
        refused = _SUBSCRIBE_DENIED.search(str(error))
        if refused is not None:
            log.error(
                "NATS refused the bridge's subscription to '%s': the user needs subscribe permission on its "
                "reply inboxes (_INBOX.>) to receive PubAcks",
                refused.group(1),
            )
            return
        if not client.is_connected and not first_refusal.done() and _refused_for_good(error):
            # Before the first connection, credentials or certificates the server refuses will
            # be refused on every retry: fail now with the reason instead of retrying silently.
            first_refusal.set_result(error)
            return
        # nats-py reports every failed reconnect attempt here; one line each is enough.
        log.warning("NATS connection error: %s", error)

    async def disconnected_cb() -> None:
        if client.is_closed:
            return  # our own close(), not a lost connection
        log.warning("disconnected from NATS; reconnecting")
        if events is not None:
            await events.disconnected()

    async def reconnected_cb() -> None:
        url = client.connected_url.geturl() if client.connected_url else ""
        log.info("reconnected to NATS at %s", redact_url(url))
        if events is not None:
            await events.reconnected()

    async def closed_cb() -> None:
        # nats-py calls this for our own close() too; `events.closing` tells the two apart.
        if events is not None:
            events.closed(closed_reason(client, config))

    options = client_options(config)
    options.update(
        error_cb=error_cb, disconnected_cb=disconnected_cb, reconnected_cb=reconnected_cb, closed_cb=closed_cb
    )
    client = GuardedClient()
    client.require_tls = wants_tls(config)
    first_refusal: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()
    connecting = asyncio.create_task(client.connect(**options))  # type: ignore[arg-type]
    waiters: set[asyncio.Future[Any]] = {connecting, first_refusal}
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if not connecting.done():
        connecting.cancel()
        with contextlib.suppress(asyncio.CancelledError, NatsError, OSError):
            await connecting
        with contextlib.suppress(NatsError, OSError, TimeoutError):
            await client.close()
        raise first_refusal.result()
    connecting.result()
    return client


def client_options(config: NatsConfig) -> dict[str, object]:
    """nats-py's connect options for the file's settings (callbacks are added by the caller)."""
    options: dict[str, object] = {
        "servers": [server.get_secret_value() for server in config.servers],
        "name": config.name,
        "connect_timeout": config.connect_timeout.total_seconds(),
        "ping_interval": max(1, int(config.ping_interval.total_seconds())),
        # nats-py declares the connection stale when a ping finds more than this many still
        # unanswered: with 1, a hung server is noticed one to two ping intervals after it froze
        # (5-10 s by default, as the README says); with 2 it took three (up to 15 s).
        "max_outstanding_pings": 1,
        "max_reconnect_attempts": config.max_reconnect_attempts,
        "reconnect_time_wait": 0.5,
        "allow_reconnect": True,
        "pending_size": 0,
    }
    if config.user is not None:
        options["user"] = config.user
    if config.password is not None:
        options["password"] = config.password.get_secret_value()
    if config.token is not None:
        options["token"] = config.token.get_secret_value()
    if config.credentials_file is not None:
        options["user_credentials"] = config.credentials_file
    if config.nkey_seed_file is not None:
        options["nkeys_seed"] = config.nkey_seed_file
    context = tls_context(config)
    if context is not None:
        options["tls"] = context
    if config.tls_handshake_first:
        options["tls_handshake_first"] = True
    return options


def closed_reason(client: NatsClient, config: NatsConfig) -> str:
    """Why a client closed for good, in words for the one log line that says so (never a secret)."""
    error = client.last_error
    if isinstance(error, AuthorizationError) or "authorization" in str(error).lower():
        return (
            f"the server refused the bridge's login ({auth_method(config)}): "
            "expired or revoked credentials, or the account changed"
        )
    if error is None:
        return "the client closed without an error"
    text = str(error) or type(error).__name__
    if type(error) is NatsError:
        # nats-py turns a server's `-ERR '<text>'` into exactly this class ("nats: <text>").
        return f"the server sent -ERR '{text.removeprefix('nats: ')}' and nats-py closes the client on it"
    return f"gave up reconnecting (max_reconnect_attempts {config.max_reconnect_attempts}); last error: {text}"


async def watch_closed(client: NatsClient, config: NatsConfig, events: ConnectionEvents, every: float = 0.5) -> None:
    """Report a client that is closed although its closed callback never ran.

    nats-py closes the client on a server `-ERR` from a task (`_close`) that can die before it
    calls `closed_cb`: when publishes are still pending it flushes them into the socket the
    server has just closed, and the write's error ends the task. Without this the bridge would
    keep every route waiting for a connection that will never come back.
    """
    while events.lost is None:
        await asyncio.sleep(every)
        if client.is_closed and not events.closing:
            events.closed(closed_reason(client, config))


def _refused_for_good(error: Exception) -> bool:
    """An authentication or TLS refusal: retrying with the same settings cannot succeed."""
    return (
        isinstance(error, AuthorizationError | ssl.SSLError | TlsNotEstablishedError)
        or "authorization violation" in str(error).lower()
    )


# A one-shot command must fail when NATS is not there, not retry forever like `run` does
# (nats-py keeps retrying the first connect when reconnect attempts are unlimited, or 0).
_COMMAND_CONNECT_ATTEMPTS = 2


async def connect_for_command(config: BridgeConfig) -> NatsClient:
    """A connection for a one-shot command (streams, cutover, status, verify)."""
    attempts = config.nats.max_reconnect_attempts
    nats = config.nats.model_copy(
        update={"max_reconnect_attempts": attempts if attempts > 0 else _COMMAND_CONNECT_ATTEMPTS}
    )
    try:
        return await connect_nats(nats)
    except (NatsError, OSError, TimeoutError) as error:
        raise BridgeError(connect_error_text(config.nats, error)) from None


def connect_error_text(config: NatsConfig, error: BaseException) -> str:
    """One line for a failed connect: where, how the bridge authenticated, what the server said."""
    servers = ", ".join(redact_url(server.get_secret_value()) for server in config.servers)
    text = str(error) or type(error).__name__
    if isinstance(error, ssl.SSLError) or "ssl" in text.lower() or "certificate" in text.lower():
        text = f"TLS handshake failed: {text}"
    elif "authorization" in text.lower() or "authentication" in text.lower():
        text = f"authentication refused ({text})"
    return f"cannot connect to NATS at {servers} with {auth_method(config)}: {text}"


async def close_quietly(nc: NatsClient) -> None:
    """A failing close at the end of a command changes nothing for the user."""
    with contextlib.suppress(NatsError, OSError, TimeoutError):
        await nc.close()
