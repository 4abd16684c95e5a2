"""Connecting to NATS with options fit for a bridge that runs for weeks.

nats-py's defaults suit short scripts: it gives up reconnecting after about two minutes,
notices a dead connection only after minutes, and buffers publishes made while
disconnected. The bridge reconnects forever, pings often, and turns the reconnect
buffer off (`pending_size=0`): the publisher resends unacknowledged messages itself, in
source order, and a buffer flushed after reconnect would overtake those resends.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.errors import SlowConsumerError

from bridge.config.model import BridgeConfig, NatsConfig
from bridge.errors import BridgeError

log = logging.getLogger(__name__)


class ConnectionListener(Protocol):
    """Something that must know when the NATS connection drops and comes back."""

    async def on_disconnect(self) -> None: ...

    async def on_reconnect(self) -> None: ...


class ConnectionEvents:
    """Fans the connection's disconnect/reconnect out to listeners registered at any time.

    The publisher is created after the connection exists, so the connection cannot be
    given it up front; it registers here instead.
    """

    def __init__(self) -> None:
        self._listeners: list[ConnectionListener] = []
        self.disconnects = 0
        self.reconnects = 0
        self.slow_consumers = 0  # replies the client dropped because the bridge read too slowly

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


def redact_url(url: str) -> str:
    """`url` with any password replaced by `***`, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None and not (parts.username and "@" in parts.netloc):
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    netloc = f"{user}:***@{host}" if parts.password is not None else f"***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def connect_nats(config: NatsConfig, events: ConnectionEvents | None = None) -> NatsClient:
    """Connect with bridge-grade options; raise the client's error if no server answers in time."""
    servers = [server.get_secret_value() for server in config.servers]

    async def error_cb(error: Exception) -> None:
        if isinstance(error, SlowConsumerError) and events is not None:
            events.slow_consumers += 1
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

    options: dict[str, object] = {
        "servers": servers,
        "name": config.name,
        "connect_timeout": config.connect_timeout.total_seconds(),
        "ping_interval": max(1, int(config.ping_interval.total_seconds())),
        "max_outstanding_pings": 2,
        "max_reconnect_attempts": config.max_reconnect_attempts,
        "reconnect_time_wait": 0.5,
        "allow_reconnect": True,
        "pending_size": 0,
        "error_cb": error_cb,
        "disconnected_cb": disconnected_cb,
        "reconnected_cb": reconnected_cb,
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
    client = NatsClient()
    await client.connect(**options)  # type: ignore[arg-type]
    return client


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
        # nats-py's messages name no password; the server URLs are not repeated here.
        raise BridgeError(f"cannot connect to NATS: {error or type(error).__name__}") from None


async def close_quietly(nc: NatsClient) -> None:
    """A failing close at the end of a command changes nothing for the user."""
    with contextlib.suppress(NatsError, OSError, TimeoutError):
        await nc.close()
