"""A reverse route switched off and on while the bridge runs (`nats-bridge reverse ... --to`), on
real NATS and RabbitMQ: nothing restarts, nothing is lost or written twice across the switch, a
removed route's durable is gone and stays gone, and garbage in the switch's key changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import textwrap
import time
from collections.abc import Awaitable, Callable

import aio_pika
import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

from bridge.config import load_config_text
from bridge.cutover.reverse_control import format_switch, switch_reverse
from bridge.cutover.reverse_switch import Switch, read_switch, switch_key
from bridge.cutover.status import gather_status
from bridge.cutover.store import PhaseStore
from bridge.errors import BridgeError
from bridge.runner import Bridge, RunSettings
from bridge.verify.command import verify

pytestmark = [pytest.mark.nats, pytest.mark.rabbitmq]


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        await asyncio.sleep(0.1)


def mapping(nats_url: str, amqp: str, service: str, stream: str, s: str) -> str:
    # The reverse route runs in shadow here, so the test needs no phase change.
    return textwrap.dedent(f"""\
        nats: {{servers: ["{nats_url}"]}}
        sources:
          legacy: {{type: rabbitmq, url: "{amqp}"}}
        streams:
          - {{name: {stream}, subjects: ["{s}.>"]}}
        services:
          {service}:
            routes:
              - {{name: forward, source: legacy, from: {{exchange: {s}-in, bindings: ['#']}}, to: "{s}.in.{{rk}}"}}
            reverse:
              - name: back
                stream: {stream}
                filter_subjects: ["{s}.out.>"]
                during: [shadow]
                to: {{source: legacy, exchange: {s}-legacy, routing_key: "{{subject[2:]}}"}}
        """)


async def test_switched_off_on_removed_while_running_loses_and_doubles_nothing(
    rabbit_vhost_url: str,
    nats_url: str,
    jetstream: JetStreamContext,
    unique_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    s, stream, service = unique_name, unique_name.upper(), f"svc-{unique_name}"
    config = load_config_text(mapping(nats_url, rabbit_vhost_url, service, stream, s), "switch.yaml", {})
    durable = f"nats-bridge-reverse-{service}-back"
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel()
    await channel.declare_exchange(f"{s}-in", aio_pika.ExchangeType.TOPIC)
    legacy = await channel.declare_exchange(f"{s}-legacy", aio_pika.ExchangeType.TOPIC)
    queue = await channel.declare_queue(f"{s}-legacy-consumer")
    await queue.bind(legacy, routing_key="#")

    async def depth() -> int:
        declared = await channel.declare_queue(f"{s}-legacy-consumer", passive=True)
        return declared.declaration_result.message_count or 0

    async def publish(first: int, count: int) -> None:
        for i in range(first, first + count):
            await jetstream.publish(f"{s}.out.n{i}", f"m-{i}".encode(), headers={"Nats-Msg-Id": f"m-{i}"})

    bridge = Bridge(config, RunSettings(checkpoints=False))
    task = asyncio.create_task(bridge.run())
    try:

        async def declared() -> bool:
            try:
                await jetstream.stream_info(stream)
            except NotFoundError:
                return False
            return True

        await until(declared, "the bridge declared the stream")
        await publish(0, 50)
        await until(lambda: _is(depth, 50), "the first 50 written to the legacy queue")

        off = await switch_reverse(config, service, "back", Switch.OFF, by="test", reason="moving", wait=15)
        assert off.stopped, format_switch(off)
        assert (off.look.exists, off.look.waiting, off.look.ack_pending) == (True, 0, 0)
        assert off.look.acked_through == 50
        await publish(50, 30)
        await asyncio.sleep(3)  # three phase polls: a route that still ran would have written them
        assert await depth() == 50
        info = await jetstream.consumer_info(stream, durable)
        assert (info.num_pending, info.num_ack_pending) == (30, 0)
        assert task.done() is False  # nothing restarted, nothing stopped but the route

        # `status` shows the reverse leg: off, written through 50, 30 not yet written; and a
        # reverse durable no route of the file declares any more, with what it never wrote.
        await jetstream.add_consumer(
            stream, ConsumerConfig(durable_name=f"nats-bridge-reverse-{service}-gone", ack_policy=AckPolicy.EXPLICIT)
        )
        (status,) = await gather_status(config, jetstream, service=service, interval=0.1)
        (leg,) = status.reverse
        assert (leg.route, leg.switch, leg.runs) == (f"{service}/back", "off", False)
        assert (leg.look.acked_through, leg.look.pending, leg.look.ack_pending) == (50, 30, 0)
        (note,) = status.notes
        assert f"{stream}/nats-bridge-reverse-{service}-gone (80 never written)" in note
        assert status.as_json()["reverse"][0]["switch"] == "off"
        # So does `verify`, beside the forward leg's parity.
        checked = await verify(config, service=service)
        assert checked.reverse[0] == (
            f"reverse {service}/back: stopped (phase shadow, switch off); written to the legacy broker through "
            "stream sequence 50, 30 not yet written, 0 in flight"
        )

        # Garbage in the switch's key: ignored (logged), the route stays off.
        store = PhaseStore(jetstream)
        with caplog.at_level(logging.ERROR, logger="bridge.cutover.controller"):
            await (await jetstream.key_value("nats_bridge_phases")).put(switch_key(service, "back"), b'{"switch": 1}')
            await asyncio.sleep(3)
        assert await depth() == 50
        assert any(switch_key(service, "back") in r.getMessage() for r in caplog.records), caplog.text
        record, rejection = await read_switch(store, service, "back")
        assert record is None
        assert rejection is not None
        assert "switch" in rejection.reason

        on = await switch_reverse(config, service, "back", Switch.ON, by="test", reason="back on", wait=15)
        assert on.record.switch is Switch.ON
        await until(lambda: _is(depth, 80), "the 30 held back written once the route is on again")

        messages = []
        async with queue.iterator(no_ack=True) as iterator:
            async for message in iterator:
                messages.append(message.body.decode())
                if len(messages) == 80:
                    break
        assert messages == [f"m-{i}" for i in range(80)]  # each once, in order, across off and on

        removed = await switch_reverse(config, service, "back", Switch.REMOVED, by="test", reason="gone", wait=15)
        assert removed.stopped, format_switch(removed)
        assert removed.deleted, format_switch(removed)
        await publish(80, 5)
        await asyncio.sleep(3)
        with pytest.raises(NotFoundError):
            await jetstream.consumer_info(stream, durable)  # no bridge made it afresh
        assert await depth() == 0
        with pytest.raises(BridgeError, match="--force"):
            await switch_reverse(config, service, "back", Switch.ON, by="test", reason="again", wait=1)
        assert "deleted" in format_switch(removed)
    finally:
        bridge.stop()
        await asyncio.wait_for(task, 30)
        await connection.close()


async def test_unknown_reverse_route_is_refused_naming_the_known_ones(
    nats_url: str, amqp_url: str, unique_name: str
) -> None:
    s = unique_name
    config = load_config_text(mapping(nats_url, amqp_url, "svc", s.upper(), s), "switch.yaml", {})
    with pytest.raises(BridgeError, match=r"no reverse route 'nope'.*back"):
        await switch_reverse(config, "svc", "nope", Switch.OFF, by="test", reason="x", wait=1)
    with pytest.raises(BridgeError, match="no service 'other'"):
        await switch_reverse(config, "other", "back", Switch.OFF, by="test", reason="x", wait=1)


async def _is(read: Callable[[], Awaitable[int]], wanted: int) -> bool:
    return await read() == wanted
