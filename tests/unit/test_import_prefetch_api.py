"""`import rabbitmq --api`: the consumers' prefetch counts read from the management API's /consumers,
per queue, with the login in a header and never in an error text."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bridge.brokers.http import HttpLookError
from bridge.brokers.rabbitmq.management import consumer_prefetch

CONSUMERS = [
    {"queue": {"name": "payments", "vhost": "/"}, "prefetch_count": 7},
    {"queue": {"name": "payments", "vhost": "/"}, "prefetch_count": 3},
    {"queue": {"name": "audit", "vhost": "ops"}, "prefetch_count": 0},
    {"channel_details": {}, "prefetch_count": 5},  # no queue: not counted
]


@pytest.fixture
async def api() -> AsyncIterator[str]:
    async def consumers(request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(b"ops:secret").decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": "not_authorised"}, status=401)
        return web.json_response(CONSUMERS)

    app = web.Application()
    app.router.add_get("/api/consumers", consumers)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://ops:secret@127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_prefetch_counts_per_queue(api: str) -> None:
    assert await consumer_prefetch(api) == {("/", "payments"): [7, 3], ("ops", "audit"): [0]}


async def test_a_refused_login_is_one_line_without_the_password(api: str) -> None:
    with pytest.raises(HttpLookError) as caught:
        await consumer_prefetch(api.replace("secret", "wrong"))
    assert "HTTP 401" in str(caught.value)
    assert "wrong" not in str(caught.value)
