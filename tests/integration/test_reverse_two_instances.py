"""Two bridge instances (or `run --workers 2`) run the same reverse route: the legacy broker must
still receive the stream's messages in the stream's order, and when the writing bridge stops or
dies the other takes over and goes on in order.

Every instance of a mapping file runs its reverse routes, all pulling from the one durable. Two
pullers each holding a batch wrote them at the same time, interleaved: 110 of 3,000 messages out
of order before routes wrote under a lease (bridge/reverse/lease.py).
"""

from __future__ import annotations

import asyncio
import itertools
import time

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from test_reverse_routes import drained, rabbit, read_queue, until

from bridge.config.services import ReverseRouteConfig, ReverseTo
from bridge.reverse.lease import RouteLease, lease_holder, lease_key
from bridge.reverse.route import ReverseRoute

pytestmark = [pytest.mark.nats, pytest.mark.rabbitmq]

MESSAGES = 1_500


def inversions(bodies: list[str]) -> int:
    numbers = [int(body.split("-")[1]) for body in bodies]
    return sum(1 for a, b in itertools.pairwise(numbers) if a > b)


async def legacy_queue(url: str) -> tuple[aio_pika.abc.AbstractConnection, AbstractChannel]:
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange("legacy.orders", aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue("legacy-consumer", durable=True)
    await queue.bind(exchange, routing_key="orders.#")
    return connection, channel


def route_of(stream: str, s: str, url: str, js: JetStreamContext, *, ttl: float = 10.0) -> ReverseRoute:
    """The route as a bridge runs it, its lease in a bucket of the test's own (a bucket's ttl is its own)."""
    config = ReverseRouteConfig(
        name="to-legacy",
        stream=stream,
        filter_subjects=[f"{s}.orders.>"],
        to=ReverseTo(source="rabbit", exchange="legacy.orders", routing_key="{subject[1:]}"),
    )
    lease = RouteLease(js, lease_key(stream, config.durable_name("svc")), ttl=ttl, retry=0.2, bucket=f"leases_{s}")
    return ReverseRoute("svc", config, rabbit(url), js, batch=64, lease=lease)


async def publish(js: JetStreamContext, s: str, first: int, count: int) -> None:
    for i in range(first, first + count):
        await js.publish(f"{s}.orders.eu", f"body-{i}".encode(), headers={"Nats-Msg-Id": f"o-{i}"})


async def test_two_instances_write_in_the_streams_order_and_hand_over_when_the_writer_stops(
    rabbit_vhost_url: str, nats_url: str, jetstream: JetStreamContext, unique_name: str
) -> None:
    s, stream = unique_name, unique_name.upper()
    await jetstream.add_stream(name=stream, subjects=[f"{s}.>"])
    connection, channel = await legacy_queue(rabbit_vhost_url)
    second = NatsClient()
    await second.connect(nats_url)
    one = route_of(stream, s, rabbit_vhost_url, jetstream)
    two = route_of(stream, s, rabbit_vhost_url, second.jetstream())
    tasks = {one: asyncio.create_task(one.run()), two: asyncio.create_task(two.run())}
    try:
        await publish(jetstream, s, 0, MESSAGES)
        await until(lambda: drained(jetstream, one), "first half written")
        writer, standby = (one, two) if one.stats.written else (two, one)
        assert (writer.stats.written, standby.stats.written) == (MESSAGES, 0)  # one writer at a time
        # Each tells who writes (/status, the reverse_route_writing metric), and status reads the lease.
        assert (writer.stats.writing, standby.stats.writing) == (True, False)
        assert writer.stats.writer == standby.stats.writer == writer.lease.holder
        holder = await lease_holder(jetstream, writer.lease.key, bucket=f"leases_{s}")
        assert holder == writer.lease.holder
        # The writer's bridge is stopped: it lets its lease go and the other takes over at once.
        writer.stop()
        await asyncio.wait_for(tasks[writer], 30)
        await publish(jetstream, s, MESSAGES, MESSAGES)
        await until(lambda: drained(jetstream, one), "second half written", timeout=30)
        assert standby.stats.written == MESSAGES
        assert (writer.stats.writing, standby.stats.writing) == (False, True)
        assert await lease_holder(jetstream, writer.lease.key, bucket=f"leases_{s}") == standby.lease.holder
        standby.stop()
        await asyncio.wait_for(tasks[standby], 30)
        assert await lease_holder(jetstream, writer.lease.key, bucket=f"leases_{s}") is None  # released
        bodies = [m.body.decode() for m in await read_queue(channel, "legacy-consumer", 2 * MESSAGES)]
        assert sorted(bodies, key=lambda b: int(b.split("-")[1])) == [f"body-{i}" for i in range(2 * MESSAGES)]
        assert inversions(bodies) == 0
    finally:
        for route, task in tasks.items():
            route.stop()
            await asyncio.wait_for(task, 30)
        await second.close()
        await connection.close()
        await jetstream.delete_key_value(f"leases_{s}")


async def test_a_standby_takes_over_when_the_writers_nats_connection_dies(
    rabbit_vhost_url: str, nats_url: str, jetstream: JetStreamContext, unique_name: str
) -> None:
    """The writing bridge vanishes without releasing its lease: the standby waits for the lease to
    expire (2 s here), then writes what is left, in order."""
    s, stream = unique_name, unique_name.upper()
    await jetstream.add_stream(name=stream, subjects=[f"{s}.>"])
    connection, channel = await legacy_queue(rabbit_vhost_url)
    doomed = NatsClient()
    await doomed.connect(nats_url, allow_reconnect=False)
    writer = route_of(stream, s, rabbit_vhost_url, doomed.jetstream(), ttl=2.0)
    standby = route_of(stream, s, rabbit_vhost_url, jetstream, ttl=2.0)
    writing = asyncio.create_task(writer.run())
    standing: asyncio.Task[None] | None = None
    try:
        await publish(jetstream, s, 0, 200)
        await until(lambda: drained(jetstream, writer), "written by the first bridge")
        standing = asyncio.create_task(standby.run())
        await asyncio.sleep(1.0)  # the standby has tried to take the lease by now
        assert (writer.stats.written, standby.stats.written) == (200, 0)
        # The first bridge's NATS connection dies: no release, no renewal, nothing written any more.
        doomed._transport._io_writer.transport.abort()  # type: ignore[union-attr]
        died = time.monotonic()
        # Its last pull request (fetch timeout 1 s) lapses first: one still open on the server would
        # take the next messages to the dead client, back only after ack_wait (60 s), as after any crash.
        await asyncio.sleep(1.5)
        await publish(jetstream, s, 200, 200)
        await until(lambda: drained(jetstream, standby), "the rest written by the standby", timeout=60)
        took = time.monotonic() - died
        assert standby.stats.written == 200
        assert writer.stats.written == 200
        assert 1.0 < took < 10.0, f"the standby took over after {took:.1f}s (lease ttl 2 s)"
        bodies = [m.body.decode() for m in await read_queue(channel, "legacy-consumer", 400)]
        assert bodies == [f"body-{i}" for i in range(400)]
    finally:
        for route, task in ((writer, writing), (standby, standing)):
            route.stop()
            if task is not None:
                await asyncio.wait_for(task, 30)
        await doomed.close()
        await connection.close()
        await jetstream.delete_key_value(f"leases_{s}")
