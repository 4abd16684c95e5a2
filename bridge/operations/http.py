"""The bridge's HTTP endpoint: /metrics, /healthz, /readyz and /status (aiohttp, on the bridge's loop).

- /healthz: 200 while the process runs its event loop (a liveness probe: restart if not).
- /readyz: 200 when connected to NATS and every source and no route is stalled; otherwise
  503 with one line per problem, naming the route and the reason.
- /status: JSON of the same facts, per route and stream.
- /metrics: Prometheus text format.

It binds to 127.0.0.1 by default: metrics name streams, routes and queues, which is not
for everyone on the network.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from bridge.errors import BridgeError
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


def build_app(monitor: HealthMonitor, registry: CollectorRegistry) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_request: web.Request) -> web.Response:
        problems = monitor.problems()
        if problems:
            return web.Response(status=503, text="not ready\n" + "".join(f"- {p}\n" for p in problems))
        return web.Response(text="ready\n")

    async def status(_request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(monitor.status(), indent=2) + "\n", content_type="application/json")

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(address: HttpAddress, monitor: HealthMonitor, registry: CollectorRegistry) -> web.AppRunner:
    """Start serving; the caller cleans up with `await runner.cleanup()`."""
    runner = web.AppRunner(build_app(monitor, registry), access_log=None, handle_signals=False)
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
