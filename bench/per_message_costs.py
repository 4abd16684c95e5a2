"""What one message costs in the pieces issue 17 reworked, measured alone (no broker).

    .venv/bin/python bench/per_message_costs.py

- publish: nats-py's `Client.publish` with the bridge's seven Kafka headers against
  `bridge.jetstream.wire` (`hpub_command` + `send`), both into a client that records its
  commands instead of writing them (tests/unit/test_jetstream_wire.py's `Recorded`);
- values: a 12-field `TemplateContext` as a frozen dataclass against the `@per_message` class;
- mapping: `CompiledRoute.map` and `decide` of one Kafka record on a one-route mapping;
- fast map (bridge.fast_map): the same route with its FastMap taken away (the general path: a
  header dict, then `wire.header_block`) against the route as it runs (the block made from the
  route's and the lane's text), for one Kafka record and one AMQP delivery: `map`, `decide`,
  and `hpub_command` of the mapped message; and the subject alone, `SubjectTemplate.render`
  over a TemplateContext against `SubjectShape.render` from the origin.

Medians of 5 rounds, µs per call. The machine is shared: compare the figures of one run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "unit"))

from nats.aio.client import Client as NatsClient  # noqa: E402
from test_jetstream_wire import BRIDGE_HEADERS, Recorded  # noqa: E402

from bridge.config import load_config_text  # noqa: E402
from bridge.decide import DecideContext, decide  # noqa: E402
from bridge.jetstream import wire  # noqa: E402
from bridge.mapping import CompiledRoute, template_context  # noqa: E402
from bridge.message import AmqpOrigin, KafkaOrigin, SourceMessage  # noqa: E402
from bridge.routing.subject_shape import SubjectShape  # noqa: E402
from bridge.routing.templates import TemplateContext  # noqa: E402

ROUNDS = 5
CALLS = 100_000  # per round
MAPPING = """
sources:
  k: {type: kafka, bootstrap_servers: ["127.0.0.1:9092"]}
streams: [{name: ORDERS, subjects: ["orders.>"]}]
services:
  svc:
    routes: [{name: r, source: k, from: {topics: [orders]}, to: "orders.{topic}"}]
"""
AMQP_MAPPING = """
sources:
  r: {type: rabbitmq, url: "amqp://r/"}
streams: [{name: EVENTS, subjects: ["events.>"]}]
services:
  svc:
    routes: [{name: r, source: r, from: {exchange: x, bindings: ["#"]}, to: "events.{rk}", msg_id: auto}]
"""
REPLY = "_INBOX.abcdefghijklmnopqrstuv.12345"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FrozenContext:
    """TemplateContext's fields, as the frozen dataclass it was."""

    exchange: str | None = None
    queue: str | None = None
    routing_key: str | None = None
    topic: str | None = None
    partition: int | None = None
    key: bytes | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    offset: int | None = None
    message_id: str | None = None
    timestamp: int | None = None
    content_hash: str | None = None
    auto: str | None = None


def per_call(run: Callable[[], object]) -> float:
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(CALLS):
            run()
        rounds.append((time.perf_counter() - started) / CALLS * 1e6)
    return statistics.median(rounds)


async def publish_costs() -> tuple[float, float]:
    client = Recorded()
    client._status = NatsClient.CONNECTED
    client._flush_queue = asyncio.Queue()
    client._flush_queue.put_nowait(asyncio.get_running_loop().create_future())  # a flush already asked
    payload = b"x" * 100
    reply = "_INBOX.abc.123"

    async def timed(one: Callable[[], object]) -> float:
        rounds = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            for _ in range(CALLS):
                await one()  # type: ignore[misc]
            rounds.append((time.perf_counter() - started) / CALLS * 1e6)
            client.commands.clear()
        return statistics.median(rounds)

    theirs = await timed(lambda: client.publish("orders.created", payload, reply=reply, headers=dict(BRIDGE_HEADERS)))
    ours = await timed(
        lambda: wire.send(client, wire.hpub_command("orders.created", reply, BRIDGE_HEADERS, payload), len(payload))
    )
    return theirs, ours


def main() -> None:
    theirs, ours = asyncio.run(publish_costs())
    print(
        f"publish, 7 headers, 100 B   nats-py Client.publish {theirs:6.2f} µs   "
        f"wire {ours:6.2f} µs   {ours / theirs:.2f}x"
    )
    frozen = per_call(lambda: FrozenContext(topic="t", partition=1, key=b"k", offset=5, timestamp=7, headers={}))
    plain = per_call(lambda: TemplateContext(topic="t", partition=1, key=b"k", offset=5, timestamp=7, headers={}))
    print(
        f"TemplateContext(...)        frozen dataclass {frozen:6.2f} µs   "
        f"@per_message {plain:6.2f} µs   {plain / frozen:.2f}x"
    )
    config = load_config_text(MAPPING, "m.yaml", {})
    service, route_config = next(iter(config.routes()))
    route = CompiledRoute.of(config, service, route_config)
    message = SourceMessage(KafkaOrigin("orders", 3, 123456, b"customer-42", 1733400000000), b"x" * 100, ())
    context = DecideContext()
    print(
        f"one Kafka record            CompiledRoute.map {per_call(lambda: route.map(message)):6.2f} µs   "
        f"decide {per_call(lambda: decide(route, message, context)):6.2f} µs"
    )
    fast_map_costs(route, message, "one Kafka record ")
    amqp = load_config_text(AMQP_MAPPING, "m.yaml", {})
    service, amqp_config = next(iter(amqp.routes()))
    origin = AmqpOrigin("x", "3", None, {"delivery_mode": 2, "message_id": "s100-12345"})
    fast_map_costs(
        CompiledRoute.of(amqp, service, amqp_config), SourceMessage(origin, b"x" * 100, ()), "one AMQP delivery"
    )
    msg_id_costs(SourceMessage(origin, b"x" * 100, ()))
    print("command: .venv/bin/python bench/per_message_costs.py")


def msg_id_costs(message: SourceMessage) -> None:
    """A Msg-Id template of the origin's fields (bench/peers.py's `{message_id}`): rendered through
    its context, as before routing.text_shape, and by its shape, as `CompiledRoute.msg_id` does now."""
    config = load_config_text(AMQP_MAPPING.replace("msg_id: auto", 'msg_id: "{message_id}"'), "m.yaml", {})
    service, route_config = next(iter(config.routes()))
    route = CompiledRoute.of(config, service, route_config)
    assert route.msg_id_shape is not None
    slow = per_call(lambda: route.msg_id(message, route.context(message)))
    fast = per_call(lambda: route.msg_id(message))
    print(
        f"one AMQP delivery msg_id '{{message_id}}' template {slow:6.2f} µs  shape {fast:6.2f} µs   "
        f"{fast / slow:.2f}x  (context included)"
    )


def fast_map_costs(route: CompiledRoute, message: SourceMessage, what: str) -> None:
    """The route as it runs (FastMap) against the general path (its FastMap taken away)."""
    general = dataclasses.replace(route)
    object.__setattr__(general, "fast", None)
    context = DecideContext()
    for step, timed in (
        ("map", lambda r: lambda: r.map(message)),
        ("decide", lambda r: lambda: decide(r, message, context)),
        (
            "hpub_command",
            lambda r: lambda out=r.map(message): wire.hpub_command(out.subject, REPLY, out.headers, out.payload),
        ),
    ):
        slow, fast = per_call(timed(general)), per_call(timed(route))
        print(f"{what} {step:<13} general {slow:6.2f} µs   fast map {fast:6.2f} µs   {fast / slow:.2f}x")
    shape = SubjectShape.of(route.subject)
    assert shape is not None
    slow = per_call(lambda: route.subject.render(template_context(message, with_headers=False)))
    fast = per_call(lambda: shape.render(message.origin))
    print(
        f"{what} subject       template {slow:6.2f} µs  shape {fast:6.2f} µs   {fast / slow:.2f}x  (context included)"
    )


if __name__ == "__main__":
    main()
