"""nats-py's Client with its edges guarded: the class every bridge connection is made of.

Three edges, each a place where nats-py as it is would break a promise of the bridge: CONNECT
(the login) sent in clear to a server that did not establish TLS the file asks for; the
publisher's PubAcks taking a queue and a task hop per reply (`ReplyParser`); and a close that
writes its buffer into a socket the server already reset, dying before it tells anyone. Made
by `bridge.brokers.nats.client.connect_nats`, the one place a connection is opened.
"""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.transport import TcpTransport, Transport, WebSocketTransport
from nats.errors import Error as NatsError

from bridge.brokers.nats.replies import ReplyParser


class TlsNotEstablishedError(NatsError):
    """The file asks for TLS and the server did not establish it: CONNECT was never sent."""

    def __init__(self, server: str) -> None:
        super().__init__(server)
        self.server = server

    def __str__(self) -> str:
        return (
            f"{self.server} did not establish TLS, which the mapping asks for "
            "(a tls:// URL or a TLS setting); refused before sending the login: nothing was sent in clear"
        )


class GuardedClient(NatsClient):
    """nats-py's client, refusing to send CONNECT outside TLS when the file asks for TLS.

    nats-py 2.16 upgrades to TLS only when the server's INFO says `tls_required`
    (`_process_connect_init`): a plaintext server, or anyone in the middle who answers
    `tls_required:false`, would get CONNECT with the token, password, JWT or signature in
    clear. nats.go refuses that case (ErrSecureConnWanted); so does this client, by
    checking the socket itself (not what INFO claimed) right before CONNECT is built. A
    server that offers TLS without requiring it (`tls_available`, `allow_non_tls`) is asked
    for TLS, as nats.go does.
    """

    require_tls = False

    def __init__(self) -> None:
        super().__init__()
        self._ps = ReplyParser(self)  # nats-py's parser, with the publisher's PubAcks on a short path
        self._asked_to_close = False

    async def close(self) -> None:
        self._asked_to_close = True
        await super().close()

    async def drain(self) -> None:
        self._asked_to_close = True
        await super().drain()

    async def _close(self, status: int, do_cbs: bool = True) -> None:
        # nats-py writes what is still in its buffer as it closes. A close nobody asked for (the
        # server's -ERR, reconnects run out) or one while reconnecting has no live socket to write
        # to: the server has gone or is going, and under uvloop a transport it already reset raises
        # RuntimeError ("the handler is closed") out of the close task, which then never reaches
        # the closed callback that tells the bridge to give up (tests/integration/
        # test_nats_close_edges.py). Nothing is lost by dropping them: they were never stored.
        if not self.is_closed and (not self._asked_to_close or not self.is_connected):
            discard_unsent_commands(self)
        await super()._close(status, do_cbs)

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        if initial_connection and self.require_tls and info.get("tls_available") and not info.get("tls_required"):
            info["tls_required"] = True  # the same dict nats-py checks next: it upgrades now
        await super()._process_info(info, initial_connection)

    def _connect_command(self) -> bytes:
        if self.require_tls and not _is_tls(self._transport):
            server = self._current_server
            where = server.uri.netloc.rpartition("@")[2] if server is not None else "the server"
            raise TlsNotEstablishedError(f"NATS server {where}")
        return super()._connect_command()


def discard_unsent_commands(nc: NatsClient) -> None:
    """Drop the commands nats-py holds for writing, which it would otherwise write on reconnect or close."""
    # There is no public way to drop them; doing so keeps per-partition order after a reconnect
    # (tests/brokers/test_publisher_*.py restarts nats-server mid-flow to prove it).
    # Subscriptions are replayed from `_subs`, so nothing but unsent publishes is lost.
    pending = getattr(nc, "_pending", None)
    if isinstance(pending, list):
        pending.clear()
        nc._pending_data_size = 0


def _is_tls(transport: Transport | None) -> bool:
    """Whether the connection the client would write CONNECT to is TLS, asked of the socket."""
    if isinstance(transport, TcpTransport):
        writer = transport._io_writer
        return writer is not None and writer.get_extra_info("ssl_object") is not None
    if isinstance(transport, WebSocketTransport):
        return bool(transport._using_tls)
    return False
