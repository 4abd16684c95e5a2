"""The one place that opens a connection to RabbitMQ: the URL with vhost, user, TLS files and
auth mechanism applied, and why a connection failed, said the same way for routes, reverse
targets and every command.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection

from bridge.brokers.rabbitmq import frames
from bridge.config.sources import RabbitMQSource
from bridge.errors import RabbitMQConnectError
from bridge.logs import redact_url


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


async def open_connection(
    source: RabbitMQSource, *, connect_timeout: float, heartbeat: int | None = None, name: str | None = None
) -> AbstractConnection:
    """One connection to the source, for routes, reverse targets and commands alike, so every
    caller reports a refused login, a failed TLS handshake or an unreachable broker the same way.
    `name` is shown as the connection's name in RabbitMQ's management UI."""
    # Here rather than at import: every connection the bridge opens comes through this function,
    # and importing the module (for amqp_url, as the config checks do) leaves aiormq as it is.
    # The receiver is a drop-in, so other aiormq connections in the process may get it too.
    frames.install()
    url = amqp_url(source)
    kwargs: dict[str, Any] = {}
    if heartbeat is not None:
        kwargs["heartbeat"] = heartbeat
    if name is not None:
        kwargs["client_properties"] = {"connection_name": name}
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


def reply_text(error: aiormq.exceptions.AMQPError) -> str:
    """The broker's reply text of a refused operation (aiormq keeps it in the frame), else the error."""
    frame = error.args[0] if error.args else None
    text = getattr(frame, "reply_text", None)
    return str(text) if text else str(error)
