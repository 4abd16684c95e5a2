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
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from bridge.errors import BridgeError
from bridge.logs import Scrubber
from bridge.operations.health import HealthMonitor

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "127.0.0.1:9464"


class HttpAddressError(BridgeError):
    """The --http address cannot be used."""


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


def build_app(
    monitor: HealthMonitor, registry: CollectorRegistry, token: str | None = None, scrubber: Scrubber | None = None
) -> web.Application:
    scrubber = scrubber or Scrubber(())

    async def healthz(_request: web.Request) -> web.Response:
        problems = monitor.liveness_problems()
        if problems:
            return web.Response(status=503, text="not alive\n" + "".join(f"- {p}\n" for p in problems))
        return web.Response(text="ok\n")

    async def readyz(_request: web.Request) -> web.Response:
        problems = monitor.problems()
        if problems:
            return web.Response(status=503, text="not ready\n" + "".join(f"- {p}\n" for p in problems))
        return web.Response(text="ready\n")

    async def status(_request: web.Request) -> web.Response:
        text = scrubber.scrub(json.dumps(monitor.status(), indent=2))
        return web.Response(text=text + "\n", content_type="application/json")

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token is None or request.path in ("/healthz", "/readyz"):
            return await handler(request)
        given = request.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return await handler(request)
        return web.Response(status=401, text="a bearer token is required\n", headers={"WWW-Authenticate": "Bearer"})

    app = web.Application(middlewares=[require_token])
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
    """Start serving; the caller cleans up with `await runner.cleanup()`."""
    if token is None and not _is_loopback(address.host):
        log.warning(
            "serving /status and /metrics on %s without a bearer token: anyone who reaches it sees the "
            "routes, streams and queues; set NATS_BRIDGE_HTTP_TOKEN or --http-token-file",
            address,
        )
    runner = web.AppRunner(build_app(monitor, registry, token, scrubber), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, address.host, address.port)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        raise HttpAddressError(f"cannot serve HTTP on {address}: {error.strerror or error}") from None
    port = address.port
    if port == 0 and runner.addresses:
        port = runner.addresses[0][1]
    log.info("serving /metrics /healthz /readyz /status on http://%s", HttpAddress(address.host, port))
    return runner
