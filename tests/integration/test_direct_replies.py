"""The publisher's replies on a real NATS server (bridge/jetstream/direct_replies.py,
bridge/brokers/nats/replies.py): every message reaches the handler, in order, without nats-py's
queue; a handler that raises costs only that message; the subscription's pending count stays at
zero and it still drains and unsubscribes."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from pydantic import SecretStr

from bridge.brokers.nats.client import connect_nats
from bridge.brokers.nats.replies import ReplyHandler, ReplyParser
from bridge.config.nats import NatsConfig
from bridge.jetstream.direct_replies import DirectReplies, listen_for_replies, stop_listening

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


async def test_the_bridges_client_takes_plain_replies_off_its_buffer_and_the_rest_through_nats_py(
    nats_url: str, nc: NatsClient, unique_name: str
) -> None:
    """On the bridge's own NATS client (ReplyParser): plain MSGs take the parser's short path,
    a message with headers (a status) goes through nats-py's path and DirectReplies, and the
    handler sees all of them in the order they were sent."""
    bridge_nc = await connect_nats(NatsConfig(servers=[SecretStr(nats_url)]))
    try:
        parser = bridge_nc._ps
        assert isinstance(parser, ReplyParser)
        short: list[bytes] = []
        route = parser.route

        def spying_route(sid: int, handle: ReplyHandler) -> None:
            def spy(replies: list[tuple[bytes, bytes]]) -> None:
                short.extend(data for _, data in replies)
                handle(replies)

            route(sid, spy)

        parser.route = spying_route  # type: ignore[method-assign]
        answers: list[tuple[str, bytes, dict[str, str] | None]] = []
        prefix = f"_INBOX.{unique_name}."
        subscription = await listen_for_replies(bridge_nc, prefix, lambda *answer: answers.append(answer))
        await bridge_nc.flush()
        for number in range(TOTAL):
            headers = {"Status": "503"} if number % 100 == 50 else None
            await nc.publish(prefix + str(number), str(number).encode(), headers=headers)
        await nc.flush()
        async with asyncio.timeout(10):
            while len(answers) < TOTAL:
                await asyncio.sleep(0.05)

        assert [token for token, _, _ in answers] == [str(n) for n in range(TOTAL)]
        assert [data for _, data, _ in answers] == [str(n).encode() for n in range(TOTAL)]
        with_headers = [token for token, _, headers in answers if headers]
        assert with_headers == [str(n) for n in range(TOTAL) if n % 100 == 50]
        assert len(short) > TOTAL // 2, f"only {len(short)} of {TOTAL} took the short path"
        assert subscription._received == TOTAL
        assert subscription._pending_size == 0
        stop_listening(bridge_nc, subscription)
        assert subscription._id not in parser._routes
    finally:
        await bridge_nc.close()
