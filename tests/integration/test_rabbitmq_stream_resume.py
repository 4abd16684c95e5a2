"""A stream route that starts at `next` (the default) and loses its connection before its first
delivery, against the real brokers: what was written while it was away is read, not passed over.

Before bridge.brokers.rabbitmq.stream_position, the reconnect asked for `next` again and the
messages written in between were never read (nor dead-lettered): a loss in a valid file.
"""

from __future__ import annotations

import asyncio
import logging
import textwrap
import urllib.parse

import aio_pika
import pytest
from nats.aio.client import Client as NatsClient
from test_rabbitmq_bridge import RunningBridge, count, stored, until
from test_reverse_routes import management

pytestmark = [pytest.mark.rabbitmq, pytest.mark.nats]


def mapping(nats_url: str, amqp_url: str, stream: str) -> str:
    s = stream.lower()
    return textwrap.dedent(f"""\
        nats: {{servers: ["{nats_url}"]}}
        streams:
          - name: {stream}
            subjects: ["{s}.>"]
        sources:
          rabbit: {{type: rabbitmq, url: "{amqp_url}"}}
        services:
          svc:
            routes:
              - {{name: r, source: rabbit, from: {{queue: events, mode: stream}}, to: "{s}.events"}}
        """)


async def close_connections(api_url: str, vhost: str) -> int:
    """Close every connection of `vhost` from RabbitMQ's side; how many there were."""
    listed = await asyncio.to_thread(management, api_url, "GET", "/connections")
    found = [c for c in listed if c.get("vhost") == vhost]
    for connection in found:
        name = urllib.parse.quote(connection["name"], safe="")
        await asyncio.to_thread(management, api_url, "DELETE", f"/connections/{name}")
    return len(found)


async def publish(amqp_url: str, bodies: list[str]) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for body in bodies:
            await channel.default_exchange.publish(aio_pika.Message(body.encode()), routing_key="events")
    finally:
        await connection.close()


async def test_a_reconnect_before_the_first_delivery_reads_what_was_written_meanwhile(
    rabbit_vhost_url: str,
    rabbitmq_api_url: str | None,
    nats_url: str,
    unique_name: str,
    nc: NatsClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if rabbitmq_api_url is None:
        pytest.fail("this test closes the route's connection through the management API (RABBITMQ_API_URL)")
    stream = unique_name.upper()
    vhost = urllib.parse.unquote(urllib.parse.urlsplit(rabbit_vhost_url).path.removeprefix("/"))
    watcher = await aio_pika.connect(rabbit_vhost_url)
    try:
        channel = await watcher.channel()
        await channel.declare_queue("events", durable=True, arguments={"x-queue-type": "stream"})
        await publish(rabbit_vhost_url, ["before-0", "before-1"])  # before the route starts at `next`
    finally:
        await watcher.close()
    running = RunningBridge(mapping(nats_url, rabbit_vhost_url, stream))
    caplog.set_level(logging.INFO, logger="bridge.brokers.rabbitmq.source")

    def attaches() -> int:
        return sum("consuming queue 'events'" in record.getMessage() for record in caplog.records)

    async def attached(times: int) -> bool:
        return attaches() >= times

    async with running:
        await until(lambda: attached(1), bridge=running)
        # RabbitMQ closes the route's connection before anything reached it; it reconnects after a
        # pause of a second, and these are written meanwhile.
        assert await close_connections(rabbitmq_api_url, vhost) >= 1
        await publish(rabbit_vhost_url, [f"meanwhile-{i}" for i in range(5)])
        assert attaches() == 1, "the route attached again before the messages were written: no test"
        await until(lambda: attached(2), bridge=running)
        await publish(rabbit_vhost_url, [f"after-{i}" for i in range(5)])

        async def all_stored() -> bool:
            return await count(nc, stream) >= 10

        await until(all_stored, timeout=30, bridge=running)
        await asyncio.sleep(1)  # nothing more, and nothing twice
        bodies = [payload.decode() for _, _, payload in await stored(nc, stream)]
    # Everything written since the first attach, once and in order; before it, at most what arrived
    # within the pin's margin (the two `before` ones here), each once.
    assert bodies[-10:] == [f"meanwhile-{i}" for i in range(5)] + [f"after-{i}" for i in range(5)]
    assert bodies[:-10] in ([], ["before-1"], ["before-0", "before-1"]), bodies
