"""SIGTERM while RabbitMQ refuses the bridge: the process must still stop within drain_timeout.

The RabbitMQ source reconnects by itself (backing off up to 30 s) when its connection dies; the
reconnect loop ran inside the route's reader, so a stop waited for RabbitMQ to come back: a
bridge whose vhost was removed (every login refused) ignored SIGTERM for minutes.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import aio_pika
import pytest
from kafka_helpers import BridgeProcess
from test_rabbitmq_bridge import mapping, queue_exists, until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.nats]

DRAIN_TIMEOUT = 10.0  # PipelineSettings.drain_timeout, the README's promise


async def test_sigterm_stops_a_bridge_whose_rabbitmq_refuses_every_reconnect(
    tmp_path: Path,
    rabbit_vhost_url: str,
    rabbitmq_api: Callable[[str, str], None],
    nats_url: str,
    unique_name: str,
    bridge_process: Callable[[Path], BridgeProcess],
) -> None:
    stream = unique_name.upper()
    routes = f"""\
        - {{name: r, source: rabbit, from: {{exchange: ex, type: fanout}}, to: "{stream.lower()}"}}
        """
    path = tmp_path / "m.yaml"
    path.write_text(mapping(nats_url, rabbit_vhost_url, stream, routes))
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel()
    await channel.declare_exchange("ex", aio_pika.ExchangeType.FANOUT)
    bridge = bridge_process(path)
    bridge.start()
    await until(lambda: queue_exists(channel, connection, "nats-bridge.svc.r"), timeout=60)
    await connection.close()
    vhost = urllib.parse.unquote(urllib.parse.urlsplit(rabbit_vhost_url).path.lstrip("/"))
    rabbitmq_api("DELETE", f"/vhosts/{urllib.parse.quote(vhost, safe='')}")
    await bridge.wait_for_log("retrying in", timeout=60)  # it is in the reconnect loop now
    started = time.monotonic()
    code = bridge.terminate(timeout=DRAIN_TIMEOUT + 20)
    took = time.monotonic() - started
    assert took < DRAIN_TIMEOUT + 5, f"SIGTERM took {took:.1f}s\n{bridge.log()}"
    assert code == 0, bridge.log()
