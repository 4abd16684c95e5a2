"""`explain` and the routing code agree with RabbitMQ itself, asked the same questions.

For every tricky binding key a queue is bound to a real topic exchange (and, for headers,
a real headers exchange); every tricky routing key is published once; what RabbitMQ
delivered to each queue is compared with bridge.routing and with `explain` on a mapping
file that has one route per binding.
"""

from __future__ import annotations

import asyncio
import textwrap
from typing import Any

import aio_pika
import pytest

from bridge.config import load_config_text
from bridge.explain import explain_amqp
from bridge.routing import headers_match, topic_matches

pytestmark = pytest.mark.rabbitmq

BINDING_KEYS = [
    "#",
    "*",
    "a",
    "a.#",
    "#.a",
    "a.*",
    "*.a",
    "#.#",
    "#.b.#",
    "a.#.b",
    "a.#.#.b",
    "#.*",
    "*.#",
    "*.*",
    "a.*.#",
    "#.*.b",
    "",
    "a..b",
    "a.#.*.b",
]
ROUTING_KEYS = ["", "a", "b", "a.b", "b.a", "a.a", "a.b.c", "a.x.b", "a.x.y.b", "x.b.y", "a..b", ".", "a.", ".a", "x"]

HEADER_BINDINGS: list[dict[str, Any]] = [
    {"x-match": "all", "format": "pdf", "kind": "invoice"},
    {"x-match": "any", "format": "pdf", "kind": "invoice"},
    {"x-match": "all"},
    {"x-match": "any"},
    {"x-match": "all", "x-tenant": "acme", "format": "pdf"},
    {"x-match": "all-with-x", "x-tenant": "acme", "format": "pdf"},
    {"x-match": "any-with-x", "x-tenant": "acme"},
    {"x-match": "all", "flag": None},
]
HEADER_MESSAGES: list[dict[str, Any]] = [
    {},
    {"format": "pdf"},
    {"format": "pdf", "kind": "invoice"},
    {"format": "pdf", "kind": "invoice", "x-tenant": "acme"},
    {"format": "pdf", "x-tenant": "other"},
    {"x-tenant": "acme"},
    {"flag": "anything"},
    {"kind": "invoice", "extra": 1},
]


async def delivered(
    channel: aio_pika.abc.AbstractChannel, queues: list[aio_pika.abc.AbstractQueue]
) -> dict[str, set[str]]:
    """queue name -> message bodies RabbitMQ routed to it."""
    got: dict[str, set[str]] = {queue.name: set() for queue in queues}
    for queue in queues:
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            got[queue.name].add(message.body.decode())
    return got


async def test_topic_routing_and_explain_agree_with_rabbitmq(rabbit_vhost_url: str) -> None:
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange("tricky", aio_pika.ExchangeType.TOPIC)
    queues = []
    for index, key in enumerate(BINDING_KEYS):
        queue = await channel.declare_queue(f"q{index}", exclusive=True)
        await queue.bind(exchange, routing_key=key)
        queues.append(queue)
    for index, key in enumerate(ROUTING_KEYS):
        await exchange.publish(aio_pika.Message(str(index).encode()), routing_key=key)
    await asyncio.sleep(0.3)
    got = await delivered(channel, queues)
    await connection.close()

    routes = "".join(
        f'      - {{name: b{i}, source: r, from: {{exchange: tricky, bindings: ["{key}"]}}, to: "s.x"}}\n'
        for i, key in enumerate(BINDING_KEYS)
    )
    config = load_config_text(
        textwrap.dedent("""\
            sources: {r: {type: rabbitmq, url: "amqp://unused/"}}
            streams: [{name: S, subjects: ["s.>"]}]
            services:
              svc:
                routes:
            """)
        + routes,
        "tricky.yaml",
        {},
    )
    mismatches = []
    for b, binding in enumerate(BINDING_KEYS):
        rabbit = {ROUTING_KEYS[int(body)] for body in got[f"q{b}"]}
        ours = {key for key in ROUTING_KEYS if topic_matches(binding, key)}
        if rabbit != ours:
            mismatches.append((binding, sorted(rabbit), sorted(ours)))
    for key in ROUTING_KEYS:
        explained = {m.route for m in explain_amqp(config, exchange="tricky", routing_key=key).matches}
        rabbit = {f"svc/b{b}" for b in range(len(BINDING_KEYS)) if str(ROUTING_KEYS.index(key)) in got[f"q{b}"]}
        if explained != rabbit:
            mismatches.append((f"explain {key!r}", sorted(rabbit), sorted(explained)))
    assert mismatches == []
    assert got["q0"], "sanity: '#' received everything"


async def test_headers_routing_agrees_with_rabbitmq(rabbit_vhost_url: str) -> None:
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange("hdr", aio_pika.ExchangeType.HEADERS)
    queues = []
    for index, arguments in enumerate(HEADER_BINDINGS):
        queue = await channel.declare_queue(f"h{index}", exclusive=True)
        await queue.bind(exchange, routing_key="", arguments=arguments)
        queues.append(queue)
    for index, headers in enumerate(HEADER_MESSAGES):
        await exchange.publish(aio_pika.Message(str(index).encode(), headers=headers), routing_key="")
    await asyncio.sleep(0.3)
    got = await delivered(channel, queues)
    await connection.close()
    mismatches = []
    for b, arguments in enumerate(HEADER_BINDINGS):
        rabbit = {int(body) for body in got[f"h{b}"]}
        ours = {m for m, headers in enumerate(HEADER_MESSAGES) if headers_match(arguments, headers)}
        if rabbit != ours:
            mismatches.append((arguments, sorted(rabbit), sorted(ours)))
    assert mismatches == []
