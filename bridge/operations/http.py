"""The bridge's HTTP endpoint: /metrics, /healthz, /readyz and /status (aiohttp, on the bridge's loop).

- /healthz: 200 while the process runs its event loop and can still publish (a liveness probe:
  restart if not); 503 once the NATS client closed for good, which no reconnect mends.
- /readyz: 200 when connected to NATS and every source and no route is stalled; otherwise
  503 with one line per problem, naming the route and the reason.
- /status: JSON of the same facts, per route and stream.
- /metrics: Prometheus text format.

It binds to 127.0.0.1 by default: metrics name streams, routes and queues, which is not
for everyone on the network. Bound elsewhere, give it a bearer token (NATS_BRIDGE_HTTP_TOKEN
or --http-token-file): /status and /metrics then answer 401 without `Authorization: Bearer
<token>`; /healthz and /readyz stay open, as probes carry no credentials.

Clients cannot hold it open: a connection must bring a complete request head within
`REQUEST_HEAD_TIMEOUT` of opening, or of the previous answer (so a half-sent request and an
idle keep-alive connection are both closed), and past `MAX_CONNECTIONS` open ones a new
connection is answered 503 and closed at once; file descriptors stay bounded.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from bridge.errors import HttpAddressError
from bridge.logs import Scrubber
from bridge.operations.health import HealthMonitor

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "127.0.0.1:9464"

# A connection's next request head (request line and headers) must arrive within this long of
# the connection opening or of the previous answer: a half-sent request, a client trickling its
# headers and an idle keep-alive connection are all closed after it.
REQUEST_HEAD_TIMEOUT = 5.0
# Open connections at most; a new one past it gets 503 and is closed at once.
MAX_CONNECTIONS = 64
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 21\r\n\r\ntoo many connections\n"
)


@dataclass(frozen=True, slots=True)
class HttpAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> HttpAddress:
        """`HOST:PORT`, `:PORT` (loopback) or `[v6]:PORT`."""
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise HttpAddressError(f"--http '{text}': expected HOST:PORT, e.g. {DEFAULT_ADDRESS}")
        return cls(host.strip("[]") or "127.0.0.1", int(port))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


TOKEN_ENV = "NATS_BRIDGE_HTTP_TOKEN"


def http_token(path: Path | None, env: Mapping[str, str]) -> str | None:
    """The bearer token /status and /metrics require: from a file, or the environment; None: open."""
    if path is not None:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise HttpAddressError(f"--http-token-file {path}: {error.strerror or error}") from None
        if not token:
            raise HttpAddressError(f"--http-token-file {path} is empty")
        return token
    return env.get(TOKEN_ENV) or None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _Connection(asyncio.Protocol):
    """One HTTP connection: aiohttp's request handler inside a deadline, counted by its site.

    Until a request head arrives the deadline runs; the app's first middleware stops it when a
    request reaches the app and starts it again once the handler answered. When it fires the
    connection is closed (aborted if an answer is still stuck in its buffer: a client that does
    not read is holding it too).
    """

    def __init__(self, site: _BoundedSite) -> None:
        self._site = site
        self._handler: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, base)  # a stream transport (uvloop's are not subclasses)
        if len(self._site.connections) >= self._site.limit:
            self._site.refused(transport)
            return
        self._transport = transport
        self._site.connections[transport] = self
        self._handler = self._site.new_handler()
        self.await_request()
        self._handler.connection_made(transport)

    def await_request(self) -> None:
        """Start the deadline for the next request head."""
        self.request_arrived()
        if self._transport is not None:
            loop = asyncio.get_running_loop()
            self._deadline = loop.call_later(self._site.head_timeout, self._expire)

    def request_arrived(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handler is None:
            return
        self.request_arrived()
        if self._transport is not None:
            self._site.connections.pop(self._transport, None)
            self._transport = None
        self._handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._handler is not None:
            self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received() if self._handler is not None else None

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()


class _BoundedSite(web.BaseSite):
    """A TCP site whose connections are bounded in number and in how long they wait for a request."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, *, limit: int, head_timeout: float) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self.limit = limit
        self.head_timeout = head_timeout
        self.connections = runner.app[_CONNECTIONS]  # shared with the app's middleware
        self._factory: Callable[[], asyncio.Protocol] | None = None
        self._refused = 0
        self._warned_at = -60.0

    @property
    def name(self) -> str:
        return f"http://{HttpAddress(self._host, self._port)}"

    def new_handler(self) -> asyncio.Protocol:
        assert self._factory is not None
        return self._factory()

    def refused(self, transport: asyncio.Transport) -> None:
        self._refused += 1
        transport.write(_REFUSAL)
        transport.close()
        now = time.monotonic()
        if now - self._warned_at >= 60:
            self._warned_at = now
            log.warning(
                "HTTP endpoint: %d connections open, the most it keeps; new ones are answered 503 and closed "
                "(%d so far)",
                self.limit,
                self._refused,
            )

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._factory = server
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), self._host, self._port)


# The open connections of the app's bounded site, by transport (none when served otherwise).
_CONNECTIONS: web.AppKey[dict[asyncio.BaseTransport, _Connection]] = web.AppKey("http_connections")


class Answers(Protocol):
    """What the four paths answer. The bridge answers from its health monitor and registry; a
    supervisor of worker processes (bridge.workers) from its workers' own endpoints, so both
    share one app: the same token rule, connection bounds and body shapes."""

    async def liveness(self) -> list[str]:
        """/healthz: the problems that make the process not alive (none: 200)."""

    async def readiness(self) -> list[str]:
        """/readyz: the problems that make it not ready (none: 200)."""

    async def status(self) -> dict[str, Any]:
        """/status, as JSON."""

    async def metrics(self) -> bytes:
        """/metrics, in Prometheus' text format (CONTENT_TYPE_LATEST)."""


class MonitorAnswers:
    """The bridge's own answers: the health monitor's snapshot and the metrics registry."""

    def __init__(self, monitor: HealthMonitor, registry: CollectorRegistry) -> None:
        self._monitor = monitor
        self._registry = registry

    async def liveness(self) -> list[str]:
        return self._monitor.liveness_problems()

    async def readiness(self) -> list[str]:
        return self._monitor.problems()

    async def status(self) -> dict[str, Any]:
        return self._monitor.status()

    async def metrics(self) -> bytes:
        return generate_latest(self._registry)


def problems_text(headline: str, problems: list[str]) -> str:
    """The body of a failing /healthz or /readyz: the headline, then one `- problem` line each."""
    return headline + "\n" + "".join(f"- {p}\n" for p in problems)


def build_app(
    monitor: HealthMonitor, registry: CollectorRegistry, token: str | None = None, scrubber: Scrubber | None = None
) -> web.Application:
    return build_answers_app(MonitorAnswers(monitor, registry), token, scrubber)


def build_answers_app(answers: Answers, token: str | None = None, scrubber: Scrubber | None = None) -> web.Application:
    scrubber = scrubber or Scrubber(())

    async def healthz(_request: web.Request) -> web.Response:
        problems = await answers.liveness()
        if problems:
            return web.Response(status=503, text=problems_text("not alive", problems))
        return web.Response(text="ok\n")

    async def readyz(_request: web.Request) -> web.Response:
        problems = await answers.readiness()
        if problems:
            return web.Response(status=503, text=problems_text("not ready", problems))
        return web.Response(text="ready\n")

    async def status(_request: web.Request) -> web.Response:
        text = scrubber.scrub(json.dumps(await answers.status(), indent=2))
        return web.Response(text=text + "\n", content_type="application/json")

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=await answers.metrics(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token is None or request.path in ("/healthz", "/readyz"):
            return await handler(request)
        given = request.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return await handler(request)
        return web.Response(status=401, text="a bearer token is required\n", headers={"WWW-Authenticate": "Bearer"})

    @web.middleware
    async def request_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        connection = connections.get(transport) if transport is not None else None
        if connection is not None:
            connection.request_arrived()
        try:
            return await handler(request)
        finally:
            if connection is not None:
                connection.await_request()  # for the next request, and for this answer to be written

    connections: dict[asyncio.BaseTransport, _Connection] = {}
    app = web.Application(middlewares=[request_deadline, require_token])
    app[_CONNECTIONS] = connections
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(
    address: HttpAddress,
    monitor: HealthMonitor,
    registry: CollectorRegistry,
    token: str | None = None,
    scrubber: Scrubber | None = None,
) -> web.AppRunner:
    """Start serving the bridge's monitor; the caller cleans up with `await runner.cleanup()`."""
    return await serve_answers(address, MonitorAnswers(monitor, registry), token, scrubber)


async def serve_answers(
    address: HttpAddress, answers: Answers, token: str | None = None, scrubber: Scrubber | None = None
) -> web.AppRunner:
    """Start serving `answers`; the caller cleans up with `await runner.cleanup()`."""
    if token is None and not _is_loopback(address.host):
        log.warning(
            "serving /status and /metrics on %s without a bearer token: anyone who reaches it sees the "
            "routes, streams and queues; set NATS_BRIDGE_HTTP_TOKEN or --http-token-file",
            address,
        )
    runner = web.AppRunner(
        build_answers_app(answers, token, scrubber),
        access_log=None,
        handle_signals=False,
        keepalive_timeout=REQUEST_HEAD_TIMEOUT,
    )
    await runner.setup()
    site = _BoundedSite(runner, address.host, address.port, limit=MAX_CONNECTIONS, head_timeout=REQUEST_HEAD_TIMEOUT)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        raise HttpAddressError(f"cannot serve HTTP on {address}: {error.strerror or error}") from None
    log.info("serving /metrics /healthz /readyz /status on http://%s", bound_address(runner, address))
    return runner


def bound_address(runner: web.AppRunner, asked: HttpAddress) -> HttpAddress:
    """Where `runner` listens: `asked`, with port 0 replaced by the port the system picked."""
    if asked.port == 0 and runner.addresses:
        return HttpAddress(asked.host, int(runner.addresses[0][1]))
    return asked
