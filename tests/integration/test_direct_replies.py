"""DirectReplies (bridge/jetstream/direct_replies.py) on a real NATS server: every message reaches
the handler, in order, without nats-py's queue; a handler that raises costs only that message;
the subscription's pending count stays at zero and it still drains and unsubscribes."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from bridge.jetstream.direct_replies import DirectReplies

TOTAL = 2_000


async def test_messages_reach_the_handler_in_order_and_a_failing_one_costs_only_itself(
    nc: NatsClient, unique_name: str
) -> None:
    handled: list[int] = []
    done = asyncio.Event()

    def handle(msg: Msg) -> None:
        number = int(msg.data)
        if number == 500:
            raise ValueError("this one fails")
        handled.append(number)
        if number == TOTAL - 1:
            done.set()

    async def never(_msg: Msg) -> None:
        raise AssertionError("nats-py's own callback path must not run")

    subject = f"{unique_name}.replies"
    subscription = await nc.subscribe(subject, cb=never, pending_msgs_limit=-1)
    DirectReplies.install(subscription, handle)
    for number in range(TOTAL):
        await nc.publish(subject, str(number).encode())
    await nc.flush()
    async with asyncio.timeout(10):
        await done.wait()

    assert handled == [n for n in range(TOTAL) if n != 500]
    assert subscription._pending_size == 0
    assert subscription.pending_msgs == 0
    assert nc.is_connected
    async with asyncio.timeout(10):
        await subscription.drain()
    await nc.publish(subject, b"after")
    await nc.flush()
    await asyncio.sleep(0.2)
    assert handled[-1] == TOTAL - 1, "a drained subscription got a message"
