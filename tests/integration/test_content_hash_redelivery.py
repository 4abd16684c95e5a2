"""Messages without an AMQP message_id survive a SIGKILL of the bridge stored exactly once.

Such a message gets the Msg-Id `<service>/<route>/<content hash>`. When the bridge dies with
deliveries unacknowledged, RabbitMQ redelivers them, and a quorum queue adds `x-delivery-count`
to each: the hash must leave that out (and the redelivered flag), or every message that was
stored but not yet acknowledged is stored a second time under a new id.

The producers here publish at the protocol level (tests/integration/amqp_helpers.py), because
every aio-pika publish gets a random message_id from aiormq and never reaches the hash.

The bridge reaches RabbitMQ through a proxy that holds the bridge's bytes to RabbitMQ for a second
before each kill: deliveries still arrive and are stored, their acknowledgements never leave the
proxy, and so every kill leaves messages stored but not acknowledged, however fast the bridge
acknowledges (a kill timed by the stream's count alone found that window empty on a fast run).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aio_pika
import pytest
from amqp_helpers import publish_without_message_id
from kafka_helpers import BridgeProcess, stream_count, wait_for_count
from nats.aio.client import Client as NatsClient
from pamqp import commands as spec
from tcp_proxy import TcpProxy
from test_operations import fetch, metric_samples, value
from test_rabbitmq_bridge import mapping, queue_exists, stored, until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.nats]

TOTAL = 20_000
QUEUE = "nats-bridge.svc.r"  # the route's shadow queue: quorum, the default queue_type


def body(seq: int) -> bytes:
    return json.dumps({"seq": seq, "order": f"o-{seq}", "amount": seq % 997}).encode()


async def test_a_message_published_by_the_helper_carries_no_message_id(rabbit_vhost_url: str) -> None:
    connection = await aio_pika.connect(rabbit_vhost_url)
    try:
        channel = await connection.channel(publisher_confirms=False)
        queue = await channel.declare_queue("plain", exclusive=True)
        properties = spec.Basic.Properties(delivery_mode=2, content_type="application/json", headers={"k": "v"})
        await publish_without_message_id(channel, "", "plain", [body(7)], properties)
        async with asyncio.timeout(10), queue.iterator() as messages:
            message = await anext(aiter(messages))
            await message.ack()
    finally:
        await connection.close()
    assert message.body == body(7)
    assert message.message_id is None, "the message_id property must be absent on the wire"
    assert message.content_type == "application/json"
    assert message.headers == {"k": "v"}


async def duplicates_counted(bridge: BridgeProcess) -> float:
    """The bridge's nats_bridge_messages_duplicate_total for the route (from its /metrics)."""
    status, text = await fetch(await bridge.http_url() + "/metrics")
    assert status == 200, text
    return value(metric_samples(text), "nats_bridge_messages_duplicate_total", service="svc", route="r")


async def settled_count(nc: NatsClient, stream: str, quiet: float = 1.0) -> int:
    """The stream's message count once it has not changed for `quiet` seconds."""
    count, since = await stream_count(nc, stream), time.monotonic()
    async with asyncio.timeout(30):
        while time.monotonic() - since < quiet:
            await asyncio.sleep(0.1)
            now = await stream_count(nc, stream)
            if now != count:
                count, since = now, time.monotonic()
    return count


@pytest.mark.usefixtures("jetstream")  # deletes the test's stream afterwards
async def test_sigkill_twice_mid_flow_stores_each_message_without_message_id_once(
    tmp_path: Path,
    bridge_process: Callable[[Path], BridgeProcess],
    rabbit_vhost_url: str,
    nats_url: str,
    unique_name: str,
    nc: NatsClient,
    request: pytest.FixtureRequest,
) -> None:
    started = time.monotonic()
    stream = unique_name.upper()
    routes = f"""\
        - {{name: r, source: rabbit, from: {{exchange: orders, type: topic, bindings: ["order.#"]}},
            to: "{stream.lower()}.{{rk}}"}}
        """
    proxy, via_proxy = TcpProxy.in_front_of(rabbit_vhost_url)
    request.addfinalizer(proxy.close)
    mapping_path = tmp_path / "m.yaml"
    mapping_path.write_text(mapping(nats_url, via_proxy, stream, routes, duplicate_window="5m"))
    # One BridgeProcess per run, each with its own log: a run's /metrics port is read from it.
    bridges = [bridge_process(mapping_path) for _ in range(4)]
    for bridge in bridges:
        bridge.args = ("--http", "127.0.0.1:0")

    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel(publisher_confirms=False)
    await channel.declare_exchange("orders", aio_pika.ExchangeType.TOPIC, durable=True)
    # A first run only makes the shadow queue and its binding: publishing all messages before
    # the bridge consumes puts the kills where they are meant to be, whatever the machine's speed.
    bridges[0].start()
    await until(lambda: queue_exists(channel, connection, QUEUE))
    assert bridges[0].terminate() == 0, bridges[0].log()
    properties = spec.Basic.Properties(
        delivery_mode=2, content_type="application/json", headers={"producer": "billing"}
    )
    await publish_without_message_id(
        channel, "orders", "order.created", (body(seq) for seq in range(TOTAL)), properties
    )

    # SIGKILL while deliveries are unacknowledged (some stored, some not yet), twice.
    at_kill: list[int] = []
    duplicates: list[float] = []  # per restarted run
    bridges[1].start()
    for run, fraction in ((1, 0.3), (2, 0.6)):
        bridge = bridges[run]
        await wait_for_count(nc, stream, int(TOTAL * fraction), timeout=60, bridges=[bridge])
        proxy.hold_upstream()
        at_kill.append(await settled_count(nc, stream))
        if run > 1:
            duplicates.append(await duplicates_counted(bridge))
        bridge.kill()
        proxy.kill()  # drops the held acknowledgements: RabbitMQ requeues every unacked delivery
        proxy.restore()
        bridges[run + 1].start()
    assert all(count <= TOTAL * 0.8 for count in at_kill), f"a kill came too late to be mid-flow: {at_kill}"

    last = bridges[3]
    await wait_for_count(nc, stream, TOTAL, timeout=90, bridges=[last])
    await asyncio.sleep(3)  # a second copy of anything would be stored by now
    duplicates.append(await duplicates_counted(last))
    assert last.terminate() == 0, last.log()

    # Nothing left in RabbitMQ: with the bridge gone, anything it had not acknowledged is ready
    # again, so an empty queue means every delivery was acknowledged.
    async with asyncio.timeout(15):
        while True:
            declared = (await channel.declare_queue(QUEUE, passive=True)).declaration_result
            if declared.consumer_count == 0:
                break
            await asyncio.sleep(0.2)
    await connection.close()
    assert declared.message_count == 0, f"{declared.message_count} messages left in {QUEUE}"

    records = await stored(nc, stream)
    seqs = Counter(json.loads(payload)["seq"] for _, _, payload in records)
    doubled = sorted(seq for seq, times in seqs.items() if times > 1)
    missing = sorted(set(range(TOTAL)) - set(seqs))
    found = {"stored": len(records), "stored more than once": len(doubled), "missing": len(missing)}
    assert found == {"stored": TOTAL, "stored more than once": 0, "missing": 0}, (
        f"kills at {at_kill}; seqs stored more than once: {doubled[:20]}; missing seqs: {missing[:20]}"
    )
    assert not any("Amqp-Message-Id" in headers for _, headers, _ in records), "a message had a message_id"

    # The kills really caused redeliveries of stored messages, and JetStream dropped them by Msg-Id.
    redelivered = sum("x-delivery-count" in headers for _, headers, _ in records)
    assert all(duplicates), (
        f"a restarted run saw no duplicate PubAck (per run: {duplicates}; kills at {at_kill}; "
        f"{redelivered} stored from a redelivery): the test did not exercise redelivery"
    )
    print(
        f"kills at {at_kill}; duplicates per restarted run {duplicates}; {redelivered} first stored from a "
        f"redelivery; {time.monotonic() - started:.1f}s"
    )
