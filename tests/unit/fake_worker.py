"""A stand-in for `python -m bridge run FILE` under `run --workers N`, for the supervisor's unit tests.

It keeps the worker's side of the contract (bridge.workers.child: its index, its port through
the pipe) and serves the four paths like a bridge, with no broker behind it. The environment
says how it behaves: FAKE_UNHEALTHY=K makes worker K answer 503 naming a route; FAKE_EXIT=N is
its exit code when stopped; FAKE_CRASH=K makes worker K exit 4 at once. SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from aiohttp import web

from bridge.operations.http import HttpAddress
from bridge.workers.child import port_announcer, worker_index


async def main() -> int:
    index = worker_index(os.environ)
    if os.environ.get("FAKE_CRASH") == str(index):
        print(f"worker={index} crashing at start", file=sys.stderr, flush=True)
        return 4
    healthy = os.environ.get("FAKE_UNHEALTHY") != str(index)

    async def probe(_request: web.Request) -> web.Response:
        if healthy:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="not ready\n- route svc/r: stalled for 61s\n")

    async def status(_request: web.Request) -> web.Response:
        return web.json_response({"pid": os.getpid(), "worker": index})

    async def metrics(_request: web.Request) -> web.Response:
        text = (
            "# HELP nats_bridge_messages_received_total Messages read from the route's source.\n"
            "# TYPE nats_bridge_messages_received_total counter\n"
            f'nats_bridge_messages_received_total{{service="svc",route="r"}} {index * 10}.0\n'
        )
        return web.Response(text=text, content_type="text/plain")

    app = web.Application()
    for path in ("/healthz", "/readyz"):
        app.router.add_get(path, probe)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    announce = port_announcer(os.environ)
    assert announce is not None, "started without the supervisor's pipe"
    announce(HttpAddress("127.0.0.1", runner.addresses[0][1]))
    print(json.dumps({"message": "up", "worker": index}), flush=True)
    print(f"worker={index} " + "x" * 200_000, file=sys.stderr, flush=True)  # one long line
    await stop.wait()
    await runner.cleanup()
    print(json.dumps({"message": "stopped", "worker": index}), flush=True)
    return int(os.environ.get("FAKE_EXIT", "0"))


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
