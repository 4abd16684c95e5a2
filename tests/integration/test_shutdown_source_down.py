"""SIGTERM while RabbitMQ refuses the bridge or is gone: the process must still stop within drain_timeout.

The RabbitMQ source reconnects by itself (backing off up to 5 s) when its connection dies; the
reconnect loop ran inside the route's reader, so a stop waited for RabbitMQ to come back: a
bridge whose vhost was removed (every login refused) ignored SIGTERM for minutes.

The reader now cancels the fetch that runs the reconnect loop, but a cancellation that meets a
failing connect attempt was swallowed (Python 3.11's asyncio.wait_for, nested in aio-pika's connect
and the source's own, returns the attempt's error instead of the cancellation when both arrive
together), the loop went on retrying, and the stop waited until RabbitMQ was back: the 10-26 s
SIGTERMs of the fault-schedule runs, where RabbitMQ came back after a restart. Here RabbitMQ is
reached through a TCP proxy (tests/tcp_proxy.py) that is killed (connections reset, the port
refusing), so the shared broker is untouched, and SIGTERM is timed to the source's retries: before
the fix 2 or 3 of the 8 bridges hung in each of three runs. The source now bounds its connect with
asyncio.timeout and stops when a failed attempt hides a cancellation; the pipeline cancels a fetch
again while it runs on.
"""

from __future__ import annotations

import asyncio
import signal
import textwrap
import time
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import aio_pika
import pytest
from kafka_helpers import BridgeProcess, stream_count
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from tcp_proxy import TcpProxy
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


# Each bridge is SIGTERMed this long (s) before its source's second connect attempt, which comes 1 s
# after the first one failed (the log line "retrying in 1.0s" says when): the stop's cancellation is
# meant to meet that attempt, which lasts a millisecond or so; the bridges spread over the window.
SIGTERM_BEFORE_RETRY = (0.006, 0.004, 0.003, 0.0025, 0.002, 0.001, 0.0005, 0.0)


def _retry_logged_at(bridge: BridgeProcess) -> float | None:
    """When (epoch seconds) the bridge logged its first "retrying in 1.0s", or None."""
    for line in bridge.log_path.read_text(errors="replace").splitlines():
        if "retrying in 1.0s" in line:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            return stamp.timestamp()
    return None


async def test_sigterm_while_the_rabbitmq_source_retries_its_connection_exits_in_time(
    tmp_path: Path,
    rabbit_vhost_url: str,
    nats_url: str,
    unique_name: str,
    nc: NatsClient,
    jetstream: JetStreamContext,
    bridge_process: Callable[[Path], BridgeProcess],
) -> None:
    """Eight bridges, each reading its own exchange through its own proxy, copy a few hundred
    messages; each proxy is killed and each bridge SIGTERMed as its source retries the connection:
    every one exits 0 within the drain timeout + 5 s, without a traceback."""
    split = urllib.parse.urlsplit(rabbit_vhost_url)
    assert split.hostname is not None
    assert split.port is not None
    stream = unique_name.upper()
    proxies: list[TcpProxy] = []
    bridges: list[BridgeProcess] = []
    connection = await aio_pika.connect(rabbit_vhost_url)
    try:
        channel = await connection.channel()
        for index in range(len(SIGTERM_BEFORE_RETRY)):
            proxy = TcpProxy(split.hostname, split.port)
            proxy.start()
            proxies.append(proxy)
            via = split._replace(netloc=f"{split.username}:{split.password}@127.0.0.1:{proxy.port}").geturl()
            await channel.declare_exchange(f"ex{index}", aio_pika.ExchangeType.FANOUT)
            path = tmp_path / f"m{index}.yaml"
            path.write_text(
                textwrap.dedent(f"""\
                    nats: {{servers: ["{nats_url}"]}}
                    streams: [{{name: {stream}, subjects: ["{stream.lower()}.>"]}}]
                    sources:
                      rabbit: {{type: rabbitmq, url: "{via}", prefetch: 100}}
                    services:
                      svc{index}:
                        routes:
                          - {{name: r, source: rabbit, from: {{exchange: ex{index}, type: fanout}},
                              to: "{stream.lower()}.{index}"}}
                    """)
            )
            bridge = bridge_process(path)
            bridge.start()
            bridges.append(bridge)
        for index in range(len(bridges)):
            queue = f"nats-bridge.svc{index}.r"
            await until(lambda queue=queue: queue_exists(channel, connection, queue), timeout=60)
        for index in range(len(bridges)):
            exchange = await channel.get_exchange(f"ex{index}")
            for n in range(300):
                await exchange.publish(aio_pika.Message(b"m", message_id=f"{index}-{n}"), routing_key="")
        async with asyncio.timeout(60):
            while await stream_count(nc, stream) < 300 * len(bridges):
                await asyncio.sleep(0.1)

        async def outage_then_sigterm(proxy: TcpProxy, bridge: BridgeProcess, before: float) -> tuple[int, float]:
            await asyncio.to_thread(proxy.kill)
            async with asyncio.timeout(30):
                while (logged := _retry_logged_at(bridge)) is None:
                    await asyncio.sleep(0.02)
            await asyncio.sleep(max(0.0, logged + 1.0 - before - time.time()))
            assert bridge.process is not None
            started = time.monotonic()
            bridge.process.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.to_thread(bridge.process.wait, DRAIN_TIMEOUT + 30)
            except Exception:
                bridge.kill()
                raise AssertionError(
                    f"SIGTERM {before * 1000:g} ms before the retry: no exit within {DRAIN_TIMEOUT + 30:g}s "
                    f"(a hang):\n{bridge.log()}"
                ) from None
            return code, time.monotonic() - started

        results = await asyncio.gather(
            *(outage_then_sigterm(p, b, d) for p, b, d in zip(proxies, bridges, SIGTERM_BEFORE_RETRY, strict=True)),
            return_exceptions=True,
        )
    finally:
        await connection.close()
        for proxy in proxies:
            proxy.close()
    failures = [str(result) for result in results if isinstance(result, BaseException)]
    assert not failures, f"{len(failures)} of {len(bridges)} bridges hung:\n" + "\n".join(failures)
    for bridge, before, result in zip(bridges, SIGTERM_BEFORE_RETRY, results, strict=True):
        assert not isinstance(result, BaseException)
        code, took = result
        text = bridge.log_path.read_text(errors="replace")
        context = f"SIGTERM {before * 1000:g} ms before the retry"
        assert took < DRAIN_TIMEOUT + 5, f"{context}: exit took {took:.1f}s\n{bridge.log()}"
        assert code == 0, f"{context}: exit {code}\n{bridge.log()}"
        assert "Traceback" not in text, text[-8000:]
