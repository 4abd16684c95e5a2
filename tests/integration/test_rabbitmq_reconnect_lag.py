"""A RabbitMQ outage longer than a few seconds: the route resumes soon after the broker is back.

The source's reconnect loop doubled its wait up to 30 s, so an outage of 17 s left the route idle
another 14 s after RabbitMQ answered again (attempts at 0, 1, 3, 7, 15 and 31 s), and a 40 s one up
to 30 s: lag on every shadow route, and the fault-schedule suite saw a route still waiting when it
checked the streams (CI, seed 465268269: a graceful RabbitMQ restart, 620 messages "lost" that the
bridge would have copied 2 s later). The wait now stops doubling at 5 s.

RabbitMQ is reached through a TCP proxy (tests/tcp_proxy.py) that is killed and restored, so the
shared broker is untouched while the messages published meanwhile wait in the shadow queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aio_pika
import pytest
from kafka_helpers import BridgeProcess, stream_count
from nats.aio.client import Client as NatsClient
from tcp_proxy import TcpProxy
from test_rabbitmq_bridge import fanout_mapping, queue_exists, until

from bridge.brokers.rabbitmq.client import MAX_RECONNECT_DELAY

pytestmark = [pytest.mark.rabbitmq, pytest.mark.nats]

OUTAGE = 17.0  # past the old 1+2+4+8 s of waits: the old loop's next attempt came 14 s after the return
RESUME_BOUND = MAX_RECONNECT_DELAY + 3.0  # the last wait, plus a connect, a declare and a publish


async def test_a_route_resumes_within_seconds_of_rabbitmq_coming_back_after_a_long_outage(
    tmp_path: Path,
    rabbit_vhost_url: str,
    nats_url: str,
    unique_name: str,
    nc: NatsClient,
    bridge_process: Callable[[Path], BridgeProcess],
) -> None:
    proxy, via = TcpProxy.in_front_of(rabbit_vhost_url)
    stream = unique_name.upper()
    path = fanout_mapping(tmp_path / "m.yaml", nats_url, via, stream)
    connection = await aio_pika.connect(rabbit_vhost_url)  # straight to RabbitMQ, never through the proxy
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange("ex", aio_pika.ExchangeType.FANOUT)
        bridge = bridge_process(path)
        bridge.start()
        await until(lambda: queue_exists(channel, connection, "nats-bridge.svc.r"), timeout=60)
        for n in range(100):
            await exchange.publish(aio_pika.Message(b"before", message_id=f"before-{n}"), routing_key="")
        async with asyncio.timeout(60):
            while await stream_count(nc, stream) < 100:
                await asyncio.sleep(0.1)

        await asyncio.to_thread(proxy.kill)
        await bridge.wait_for_log("retrying in", timeout=30)
        for n in range(100):  # wait in the shadow queue while the bridge cannot reach RabbitMQ
            await exchange.publish(aio_pika.Message(b"during", message_id=f"during-{n}"), routing_key="")
        await asyncio.sleep(OUTAGE)
        await asyncio.to_thread(proxy.restore)
        back = time.monotonic()
        async with asyncio.timeout(60):
            while await stream_count(nc, stream) < 200:
                await asyncio.sleep(0.1)
        resumed_after = time.monotonic() - back
        assert resumed_after < RESUME_BOUND, (
            f"the route copied the messages held during a {OUTAGE:g}s outage {resumed_after:.1f}s after RabbitMQ "
            f"was back (bound {RESUME_BOUND:g}s):\n{bridge.log()}"
        )
        assert bridge.alive(), bridge.log()
        waits = [line for line in bridge.log_path.read_text().splitlines() if "retrying in" in line]
        assert len(waits) >= 4, "\n".join(waits)  # the outage really spanned several attempts
        assert "reconnected to RabbitMQ" in bridge.log_path.read_text()
        assert await stream_count(nc, stream) == 200
    finally:
        await connection.close()
        proxy.close()
