"""`handoff` for a RabbitMQ queue in cases its first tests did not try, on real brokers: a queue
bound to only part of what the route copies, a queue whose consumer processed everything while
producers keep publishing, a head the bridge never stored, and `--json` without secrets.

Each test's oracle is the legacy queue itself: once the producers have stopped, what it still
holds is exactly what its consumer had not processed, so that is what the durable must deliver."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import aio_pika
from amqp_helpers import publish_without_message_id
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig
from test_cutover import cli
from test_rabbitmq_bridge import RunningBridge, count, queue_exists, until

from bridge.brokers.rabbitmq.queues import QueueState, legacy_queue
from bridge.config import load_config_text
from bridge.config.sources import RabbitMQSource
from bridge.handoff.durable import position_queue_durable
from bridge.handoff.queue_plan import QueueLook, plan_queue_looking
from bridge.plan import compile_plan


def _mapping(nats_url: str, amqp_url: str, stream: str, service: str, consumers: str = "", window: str = "2m") -> str:
    """The route copies every `order.#`; the consumers (YAML list items) replace legacy queues."""
    s = stream.lower()
    text = textwrap.dedent(f"""\
        nats: {{servers: ["{nats_url}"]}}
        streams: [{{name: {stream}, subjects: ["{s}.>"], duplicate_window: {window}}}]
        sources:
          rabbit: {{type: rabbitmq, url: "{amqp_url}", prefetch: 50}}
        services:
          {service}:
            routes:
              - {{name: orders, source: rabbit, from: {{exchange: orders, type: topic, bindings: ["order.#"]}},
                  to: "{s}.{{rk}}"}}
        """)
    if consumers:
        text += "    consumers:\n" + textwrap.indent(textwrap.dedent(consumers), "      ")
    return text


async def _consume_all(nc: NatsClient, stream: str, durable: str) -> list[str]:
    subscription = await nc.jetstream().pull_subscribe_bind(durable=durable, stream=stream)
    seen = []
    while True:
        try:
            batch = await subscription.fetch(100, timeout=3)
        except TimeoutError:  # nats-py's, or asyncio's when its deadline ran out first
            break
        for message in batch:
            seen.append(message.data.decode())
            await message.ack_sync()
    await subscription.unsubscribe()
    return seen


async def _take(connection: aio_pika.abc.AbstractConnection, queue: str, how_many: int) -> list[str]:
    """The legacy consumer processes (acks) `how_many` messages of `queue`, then stops."""
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=1)
    declared = await channel.declare_queue(queue, passive=True)
    taken = []
    for _ in range(how_many):
        message = await declared.get(timeout=10)
        taken.append(message.body.decode())
        await message.ack()
    await channel.close()
    return taken


async def _left_in(connection: aio_pika.abc.AbstractConnection, queue: str) -> list[str]:
    """What `queue` still holds, in order (read and given back: the queue is left as it was)."""
    channel = await connection.channel()
    declared = await channel.declare_queue(queue, passive=True)
    left = []
    while (message := await declared.get(fail=False, no_ack=False)) is not None:
        left.append(message.body.decode())
    await channel.close()  # the unacked messages go back, in order
    return left


async def _publish(exchange: aio_pika.abc.AbstractExchange, bodies: list[tuple[str, str]]) -> None:
    for key, body in bodies:
        await exchange.publish(aio_pika.Message(body.encode(), message_id=body, delivery_mode=2), routing_key=key)


async def test_a_queue_bound_to_part_of_the_route_hands_off_on_its_own_subjects(
    rabbit_vhost_url: str, nats_url: str, unique_name: str, nc: NatsClient, tmp_path: Path
) -> None:
    """The route copies `order.#`; the legacy queue binds only `order.eu.#`, with `order.us` traffic
    interleaved. The durable's filter is the queue's binding: the head search and the depth count
    are on that filter only, so it delivers exactly the eu messages still in the queue."""
    stream, service = unique_name.upper(), unique_name
    s = stream.lower()
    consumers = f"""\
        - name: eu-worker
          stream: {stream}
          filter_subjects: ["{s}.order.eu.>"]
          replaces: {{queue: orders-eu, bindings: ["order.eu.#"]}}
        """
    text = _mapping(nats_url, rabbit_vhost_url, stream, service, consumers)
    mapping = tmp_path / "m.yaml"
    mapping.write_text(text)
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.declare_exchange("orders", aio_pika.ExchangeType.TOPIC)
    legacy = await channel.declare_queue("orders-eu", durable=True)
    await legacy.bind(exchange, "order.eu.#")
    # 150 eu, 450 us interleaved: a depth counted on the whole stream would land far from the head
    bodies = []
    for i in range(150):
        bodies += [(f"order.eu.{i}", f"eu{i:03d}"), *((f"order.us.{i}", f"us{i:03d}-{j}") for j in range(3))]
    running = RunningBridge(text)
    async with running:
        await until(lambda: queue_exists(channel, connection, f"nats-bridge.{service}.orders"), bridge=running)
        await _publish(exchange, bodies)
        await until(lambda: _stored(nc, stream, len(bodies)), bridge=running)
    processed = await _take(connection, "orders-eu", 61)
    assert processed == [f"eu{i:03d}" for i in range(61)]
    left = await _left_in(connection, "orders-eu")

    code, out = await cli("handoff", service, "eu-worker", str(mapping), "--plan", "--json")
    assert code == 0, out
    planned = json.loads(out)
    assert (planned["result"], planned["plan"]["legacy_lag"]) == (None, 89)
    assert "eu-worker" not in [info.name for info in await nc.jetstream().consumers_info(stream)]
    code, out = await cli("handoff", service, "eu-worker", str(mapping), "--json")
    assert code == 0, out
    done = json.loads(out)
    assert done["result"]["matches"], done
    assert done["result"]["durable_pending"] == len(left) == 89
    assert done["result"]["start_sequence"] == planned["plan"]["start_sequence"]
    assert "guest" not in out  # the AMQP URL's credentials are nowhere in the output
    # run again before anyone consumed: the same start, or a refusal; never another place
    code, out = await cli("handoff", service, "eu-worker", str(mapping), "--json")
    assert code in (0, 2), out
    if code == 0:
        assert json.loads(out)["result"]["start_sequence"] == done["result"]["start_sequence"]
    seen = await _consume_all(nc, stream, "eu-worker")
    assert seen == left
    # once consumed, a third run is refused and leaves the durable where it is
    code, out = await cli("handoff", service, "eu-worker", str(mapping))
    assert code == 2, out
    assert "has delivered messages already" in out
    info = await nc.jetstream().consumer_info(stream, "eu-worker")
    assert (info.num_pending, info.num_ack_pending) == (0, 0)
    await connection.close()


async def test_a_queue_processed_to_the_end_then_fed_again_delivers_exactly_the_new_messages(
    rabbit_vhost_url: str, nats_url: str, unique_name: str, nc: NatsClient
) -> None:
    """The legacy consumer processed everything (depth 0) and stopped; producers keep publishing.
    Messages published (and stored) after the handoff read the queue but before it read the
    stream are in the queue, unprocessed: the durable must deliver them, and those after."""
    stream, service = unique_name.upper(), unique_name
    text = _mapping(nats_url, rabbit_vhost_url, stream, service)
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.declare_exchange("orders", aio_pika.ExchangeType.TOPIC)
    legacy = await channel.declare_queue("orders-worker", durable=True)
    await legacy.bind(exchange, "order.#")
    config = load_config_text(text, "m.yaml", {})
    source = config.sources["rabbit"]
    assert isinstance(source, RabbitMQSource)
    filters = [f"{stream.lower()}.>"]
    route = compile_plan(config).route(f"{service}/orders")
    running = RunningBridge(text)
    async with running:
        await until(lambda: queue_exists(channel, connection, f"nats-bridge.{service}.orders"), bridge=running)
        await _publish(exchange, [("order.eu.1", f"a{i:03d}") for i in range(40)])
        await until(lambda: _stored(nc, stream, 40), bridge=running)
        assert len(await _take(connection, "orders-worker", 40)) == 40
        looks: list[QueueState] = []

        async def look() -> QueueLook:
            """The queue as `handoff` reads it; the first look is slow: producers publish meanwhile
            and the bridge stores it before the handoff reads the stream."""
            state = await legacy_queue(source, "orders-worker")
            looks.append(state)
            if len(looks) == 1:
                assert (state.depth, state.head) == (0, None)
                await _publish(exchange, [("order.eu.1", f"b{i:03d}") for i in range(7)])
                await until(lambda: _stored(nc, stream, 47), bridge=running)
            head = route.map(state.head).msg_id if state.head is not None else None
            return QueueLook(state, head, 0)

        plan = await plan_queue_looking(nc.jetstream(), stream=stream, durable="worker", filters=filters, look=look)
        assert [state.depth for state in looks][:2] == [0, 7]
        assert not plan.refused, plan.why_not()
        await position_queue_durable(nc.jetstream(), plan, ConsumerConfig(ack_policy=AckPolicy.EXPLICIT))
        # ... and after the handoff
        await _publish(exchange, [("order.eu.1", f"c{i:03d}") for i in range(5)])
        await until(lambda: _stored(nc, stream, 52), bridge=running)
    left = await _left_in(connection, "orders-worker")
    assert left == [f"b{i:03d}" for i in range(7)] + [f"c{i:03d}" for i in range(5)]
    assert await _consume_all(nc, stream, "worker") == left
    await connection.close()


async def test_a_head_the_bridge_never_stored_is_refused_with_the_reason(
    rabbit_vhost_url: str, nats_url: str, unique_name: str, nc: NatsClient, tmp_path: Path
) -> None:
    """The legacy queue held messages before the bridge's shadow queue existed: its head was
    never copied. The handoff must refuse, not start at the first stored message."""
    stream, service = unique_name.upper(), unique_name
    consumers = f"""\
        - name: worker
          stream: {stream}
          replaces: {{queue: orders-worker}}
        """
    text = _mapping(nats_url, rabbit_vhost_url, stream, service, consumers)
    mapping = tmp_path / "m.yaml"
    mapping.write_text(text)
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.declare_exchange("orders", aio_pika.ExchangeType.TOPIC)
    legacy = await channel.declare_queue("orders-worker", durable=True)
    await legacy.bind(exchange, "order.#")
    await _publish(exchange, [("order.eu.1", f"old{i:02d}") for i in range(10)])  # before the bridge
    running = RunningBridge(text)
    async with running:
        await until(lambda: queue_exists(channel, connection, f"nats-bridge.{service}.orders"), bridge=running)
        await _publish(exchange, [("order.eu.1", f"new{i:02d}") for i in range(30)])
        await until(lambda: _stored(nc, stream, 30), bridge=running)
    await _take(connection, "orders-worker", 4)  # old00..old03 processed; old04 is the head

    code, out = await cli("handoff", service, "worker", str(mapping), "--plan")
    assert code == 2, out
    assert "old04) is not in stream" in out, out
    assert "let the legacy consumer process the queue's older messages" in out, out
    code, out = await cli("handoff", service, "worker", str(mapping), "--json")
    assert code == 2, out
    done = json.loads(out)
    assert done["result"] is None
    assert any("old04" in why for why in done["plan"]["refusals"])
    assert "guest" not in out  # the AMQP URL's credentials are nowhere in the output
    consumers_now = [info.name for info in await nc.jetstream().consumers_info(stream)]
    assert "worker" not in consumers_now
    await connection.close()


async def test_a_head_whose_content_hash_was_stored_before_starts_at_its_own_copy(
    rabbit_vhost_url: str, nats_url: str, unique_name: str, nc: NatsClient, tmp_path: Path
) -> None:
    """Messages without a message_id get a content hash for Msg-Id: the same message published
    again after the duplicate window is stored twice under one Msg-Id. The queue's head is the
    second copy; the first was processed: the durable must start at the second."""
    stream, service = unique_name.upper(), unique_name
    consumers = f"""\
        - name: worker
          stream: {stream}
          replaces: {{queue: orders-worker}}
        """
    text = _mapping(nats_url, rabbit_vhost_url, stream, service, consumers, window="1s")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(text)
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.declare_exchange("orders", aio_pika.ExchangeType.TOPIC)
    legacy = await channel.declare_queue("orders-worker", durable=True)
    await legacy.bind(exchange, "order.#")

    plain = await connection.channel(publisher_confirms=False)

    async def publish(bodies: list[str]) -> None:
        """No message_id (aio-pika would give each one of its own): the Msg-Id is a content hash."""
        await publish_without_message_id(plain, "orders", "order.eu.1", [body.encode() for body in bodies])

    running = RunningBridge(text)
    async with running:
        await until(lambda: queue_exists(channel, connection, f"nats-bridge.{service}.orders"), bridge=running)
        await publish(["same", "b1", "b2", "b3"])
        await until(lambda: _stored(nc, stream, 4), bridge=running)
        await asyncio.sleep(2.5)  # past the stream's duplicate window: the same message is stored again
        await publish(["same", "c1", "c2"])
        await until(lambda: _stored(nc, stream, 7), bridge=running)
    assert await _take(connection, "orders-worker", 4) == ["same", "b1", "b2", "b3"]
    left = await _left_in(connection, "orders-worker")
    assert left == ["same", "c1", "c2"]

    code, out = await cli("handoff", service, "worker", str(mapping), "--json")
    assert code == 0, out
    assert json.loads(out)["result"]["start_sequence"] == 5
    assert await _consume_all(nc, stream, "worker") == left
    assert await _left_in(connection, "orders-worker") == left  # the handoff's looks gave the head back
    await connection.close()


async def _stored(nc: NatsClient, stream: str, wanted: int) -> bool:
    return await count(nc, stream) >= wanted
