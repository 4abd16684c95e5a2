"""`handoff` in the drain phase, on real brokers: the service's producers publish to NATS and a
reverse route writes their messages to the legacy exchange or topic, while some legacy producer
messages are still there too. The legacy consumer processed a prefix of that mix and stopped;
the handoff (run while the bridge and its reverse route run, NATS producers publishing before
and after it) makes a durable that delivers exactly what the legacy consumer had not processed
and the NATS messages it never got — nothing it processed, nothing twice.
"""

from __future__ import annotations

import asyncio
import random
import textwrap
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import aio_pika
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError
from test_handoff_kafka import _commit
from test_reverse_switch import until

from bridge.config import load_config_text
from bridge.config.services import Phase
from bridge.cutover.reverse_switch import Switch, read_switch
from bridge.cutover.store import PhaseStore
from bridge.errors import BridgeError
from bridge.handoff.command import format_handoff, handoff
from bridge.handoff.drain_plan import DrainHandoffPlan
from bridge.runner import Bridge, RunSettings

pytestmark = [pytest.mark.nats]


async def stream_count(js: JetStreamContext, stream: str) -> int:
    try:
        return (await js.stream_info(stream)).state.messages
    except NotFoundError:
        return 0


async def consume_all(js: JetStreamContext, stream: str, durable: str) -> list[str]:
    """What the service on its JetStream consumer processes: bodies, acked, in delivery order."""
    subscription = await js.pull_subscribe_bind(durable=durable, stream=stream)
    seen = []
    try:
        while True:
            try:
                batch = await subscription.fetch(200, timeout=3)
            except TimeoutError:  # nats-py's, or asyncio's when the fetch's deadline ran out first
                return seen
            for message in batch:
                seen.append(message.data.decode())
                await message.ack_sync()
    finally:
        await subscription.unsubscribe()


async def to_drain(js: JetStreamContext, service: str) -> None:
    await PhaseStore(js).change(service, Phase.DRAIN, by="test", reason="producers publish to NATS")


def rabbit_mapping(nats_url: str, amqp: str, service: str, stream: str, s: str, consumer: str) -> str:
    return textwrap.dedent(f"""\
        nats: {{servers: ["{nats_url}"]}}
        sources:
          legacy: {{type: rabbitmq, url: "{amqp}"}}
        streams:
          - {{name: {stream}, subjects: ["{s}.>"]}}
        services:
          {service}:
            routes:
              - {{name: orders, source: legacy, from: {{exchange: {s}-orders, type: topic, bindings: ["order.#"]}},
                  to: "{s}.{{rk}}"}}
            reverse:
              - name: back
                stream: {stream}
                to: {{source: legacy, exchange: {s}-orders, routing_key: "{{subject[1:]}}"}}
            consumers:
              - name: {consumer}
                stream: {stream}
                filter_subjects: ["{s}.order.>"]
                replaces: {{queue: {consumer}}}
        """)


@pytest.mark.rabbitmq
@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
async def test_rabbitmq_queue_fed_by_a_reverse_route_is_handed_off_exactly(
    rabbit_vhost_url: str, nats_url: str, jetstream: JetStreamContext, unique_name: str, queue_type: str
) -> None:
    s, stream, service, worker = unique_name, unique_name.upper(), f"svc-{unique_name}", f"{unique_name}-worker"
    text = rabbit_mapping(nats_url, rabbit_vhost_url, service, stream, s, worker)
    config = load_config_text(text, "drain.yaml", {})
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.declare_exchange(f"{s}-orders", aio_pika.ExchangeType.TOPIC)
    legacy = await channel.declare_queue(worker, durable=True, arguments={"x-queue-type": queue_type})
    await legacy.bind(exchange, "order.#")

    async def depth() -> int:
        declared = await channel.declare_queue(worker, passive=True)
        return declared.declaration_result.message_count or 0

    async def legacy_publish(first: int, count: int) -> None:
        for i in range(first, first + count):
            body = f"L{i:03d}"
            await exchange.publish(aio_pika.Message(body.encode(), message_id=body), routing_key=f"order.eu.{i % 3}")

    async def nats_publish(first: int, count: int) -> None:
        for i in range(first, first + count):
            body = f"N{i:03d}"
            await jetstream.publish(f"{s}.order.us.{i % 4}", body.encode(), headers={"Nats-Msg-Id": body})

    bridge = Bridge(config, RunSettings(checkpoints=False))
    task = asyncio.create_task(bridge.run())
    try:
        await until(lambda: _exists(jetstream, stream), "the stream declared")
        await asyncio.sleep(1)  # the shadow queue bound
        await legacy_publish(0, 60)
        await until(lambda: _at(stream_count(jetstream, stream), 60), "60 legacy messages copied")
        await to_drain(jetstream, service)
        await nats_publish(0, 50)
        await legacy_publish(60, 10)  # a legacy producer not yet moved, between NATS messages
        await nats_publish(50, 30)
        await until(lambda: _at(depth(), 150), "the queue holds every legacy and reverse-written message")

        # The legacy consumer processes a prefix of the mix, then stops.
        processed = []
        worker_channel = await connection.channel()
        queue = await worker_channel.declare_queue(worker, passive=True)
        for _ in range(97):
            message = await queue.get(timeout=10)
            processed.append(message.body.decode())
            await message.ack()
        await worker_channel.close()
        await nats_publish(80, 10)  # still written to the queue: the reverse route runs

        await until(lambda: _at(depth(), 150 - 97 + 10), "the last NATS messages written")
        planned = await handoff(config, service, worker, plan_only=True)
        assert isinstance(planned.plan, DrainHandoffPlan)
        assert planned.result is None
        done = await handoff(config, service, worker)
        report = format_handoff(done)
        assert isinstance(done.plan, DrainHandoffPlan), report
        assert done.result is not None, report
        assert done.result.matches, report
        assert done.plan.lag == 63
        await nats_publish(90, 10)  # after the handoff: the durable gets them (and the reverse route, on again)

        seen = await consume_all(jetstream, stream, worker)
    finally:
        bridge.stop()
        await asyncio.wait_for(task, 30)
        await connection.close()

    everything = [f"L{i:03d}" for i in range(70)] + [f"N{i:03d}" for i in range(100)]
    expected = Counter(everything) - Counter(processed)
    assert Counter(seen) == expected  # nothing processed, nothing missing, nothing twice
    assert seen[0] not in processed
    # The switch the handoff set off is back on.
    record, _ = await read_switch(PhaseStore(jetstream), service, "back")
    assert record is not None
    assert record.switch is Switch.ON


@pytest.mark.kafka
async def test_kafka_group_fed_by_a_reverse_route_is_handed_off_exactly(
    kafka_bootstrap: str,
    kafka_topic: Callable[..., Awaitable[str]],
    nats_url: str,
    jetstream: JetStreamContext,
    unique_name: str,
) -> None:
    s, stream, service, group = unique_name, unique_name.upper(), f"svc-{unique_name}", f"{unique_name}-legacy"
    topic = await kafka_topic(partitions=3)
    text = textwrap.dedent(f"""\
        nats: {{servers: ["{nats_url}"]}}
        sources:
          kafka: {{type: kafka, bootstrap_servers: ["{kafka_bootstrap}"]}}
        streams:
          - {{name: {stream}, subjects: ["{s}.>"]}}
        services:
          {service}:
            routes:
              - {{name: ledger, source: kafka, from: {{topics: [{topic}]}}, to: "{s}.p.{{partition}}"}}
            reverse:
              - name: back
                stream: {stream}
                to: {{source: kafka, topic: {topic}, key: "{{header:Account}}"}}
            consumers:
              - name: ledger
                stream: {stream}
                filter_subjects: ["{s}.p.*"]
                replaces: {{group: {group}}}
        """)
    config = load_config_text(text, "drain.yaml", {})
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()

    async def legacy_publish(first: int, count: int) -> None:
        for i in range(first, first + count):
            await producer.send_and_wait(topic, f"L{i:03d}".encode(), key=f"a{i % 7}".encode())

    async def nats_publish(first: int, count: int) -> None:
        for i in range(first, first + count):
            body = f"N{i:03d}"
            headers = {"Nats-Msg-Id": body, "Account": f"a{i % 7}"}
            await jetstream.publish(f"{s}.p.{i % 3}", body.encode(), headers=headers)

    bridge = Bridge(config, RunSettings(checkpoints=False))
    task = asyncio.create_task(bridge.run())
    try:
        await until(lambda: _exists(jetstream, stream), "the stream declared")
        await legacy_publish(0, 90)
        await until(lambda: _at(stream_count(jetstream, stream), 90), "90 legacy records copied")
        await to_drain(jetstream, service)
        await nats_publish(0, 60)
        await legacy_publish(90, 15)
        await nats_publish(60, 45)
        records = await _read_topic(kafka_bootstrap, topic, 90 + 15 + 105)

        # The legacy group processed a different random prefix of each partition, then stopped.
        rng = random.Random(unique_name)
        by_partition: dict[int, list[str]] = {}
        for partition, _, body in records:
            by_partition.setdefault(partition, []).append(body)
        offsets = {p: rng.randrange(0, len(bodies) + 1) for p, bodies in by_partition.items()}
        processed = [body for p, bodies in by_partition.items() for body in bodies[: offsets[p]]]
        await _commit(kafka_bootstrap, group, topic, offsets)
        await nats_publish(105, 10)

        done = await handoff(config, service, "ledger", wait=60)
        report = format_handoff(done)
        assert isinstance(done.plan, DrainHandoffPlan), report
        assert not done.plan.refused, report
        assert done.result is not None, report
        assert done.result.matches, report
        await nats_publish(115, 5)
        seen = await consume_all(jetstream, stream, "ledger")
    finally:
        bridge.stop()
        await asyncio.wait_for(task, 30)
        await producer.stop()

    everything = [f"L{i:03d}" for i in range(105)] + [f"N{i:03d}" for i in range(120)]
    assert Counter(seen) == Counter(everything) - Counter(processed)  # exactly what the group had not done


@pytest.mark.rabbitmq
async def test_drain_handoff_without_a_reverse_route_feeding_the_queue_is_refused(
    rabbit_vhost_url: str, nats_url: str, jetstream: JetStreamContext, unique_name: str
) -> None:
    s, stream, service, worker = unique_name, unique_name.upper(), f"svc-{unique_name}", f"{unique_name}-worker"
    text = rabbit_mapping(nats_url, rabbit_vhost_url, service, stream, s, worker)
    text = text.replace(f"exchange: {s}-orders, routing_key", f"exchange: {s}-elsewhere, routing_key")
    config = load_config_text(text, "drain.yaml", {})
    await jetstream.add_stream(name=stream, subjects=[f"{s}.>"])
    await to_drain(jetstream, service)
    with pytest.raises(BridgeError, match=r"no reverse route of it writes .* hand consumers off in the shadow phase"):
        await handoff(config, service, worker, plan_only=True)


async def _exists(js: JetStreamContext, stream: str) -> bool:
    try:
        await js.stream_info(stream)
    except NotFoundError:
        return False
    return True


async def _at(read: Awaitable[int], wanted: int) -> bool:
    return await read >= wanted


async def _read_topic(bootstrap: str, topic: str, count: int) -> list[tuple[int, int, str]]:
    """(partition, offset, body) of the first `count` records, read without a group, per partition in order."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or [])]
        if not partitions:
            partitions = [TopicPartition(topic, p) for p in range(3)]
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        found: list[tuple[int, int, str]] = []
        deadline = time.monotonic() + 60
        while len(found) < count and time.monotonic() < deadline:
            batches = await reader.getmany(timeout_ms=500)
            for tp, batch in batches.items():
                found += [(tp.partition, r.offset, r.value.decode()) for r in batch]
        assert len(found) == count, f"{len(found)} of {count} records in {topic}"
        return sorted(found)
    finally:
        await reader.stop()


@pytest.mark.rabbitmq
async def test_drain_handoff_refuses_a_queue_that_gained_messages_or_still_has_consumers(
    rabbit_vhost_url: str, nats_url: str, jetstream: JetStreamContext, unique_name: str
) -> None:
    """The queue holds copies the reverse route wrote from sequence 3 on, and one message someone
    else put there: its depth and head no longer tell what was processed, so no durable is made."""
    s, stream, service, worker = unique_name, unique_name.upper(), f"svc-{unique_name}", f"{unique_name}-worker"
    config = load_config_text(rabbit_mapping(nats_url, rabbit_vhost_url, service, stream, s, worker), "d.yaml", {})
    await jetstream.add_stream(name=stream, subjects=[f"{s}.>"])
    for i in range(5):
        await jetstream.publish(f"{s}.order.us.1", f"N{i}".encode(), headers={"Nats-Msg-Id": f"N{i}"})
    # The reverse route's durable wrote (acked) all five.
    durable = f"nats-bridge-reverse-{service}-back"
    await jetstream.add_consumer(stream, ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT))
    pull = await jetstream.pull_subscribe_bind(durable=durable, stream=stream)
    for message in await pull.fetch(5, timeout=5):
        await message.ack_sync()
    await pull.unsubscribe()
    await to_drain(jetstream, service)
    connection = await aio_pika.connect(rabbit_vhost_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(worker, durable=True)
        for sequence in (3, 4, 5):
            headers = {"nats-bridge-stream-seq": f"{stream}:{sequence}", "nats-bridge-origin": "nats"}
            await channel.default_exchange.publish(aio_pika.Message(b"copy", headers=headers), routing_key=worker)
        await channel.default_exchange.publish(aio_pika.Message(b"intruder"), routing_key=worker)

        gained = await handoff(config, service, worker)
        assert gained.result is None
        (why,) = gained.plan.why_not()
        assert f"queue '{worker}' holds 4 message(s), but the reverse route wrote 3 from its head (sequence 3)" in why
        assert "lost or gained messages another way" in why

        async def hold(_message: aio_pika.abc.AbstractIncomingMessage) -> None:
            """A legacy consumer still attached: it takes messages and never acks them."""

        tag = await queue.consume(hold, no_ack=False)
        attached = await handoff(config, service, worker, plan_only=True)
        assert any("still has 1 consumer(s)" in why for why in attached.plan.why_not()), attached.plan.why_not()
        await queue.cancel(tag)
    finally:
        await connection.close()
    with pytest.raises(NotFoundError):
        await jetstream.consumer_info(stream, worker)  # refused: no durable made
    record, _ = await read_switch(PhaseStore(jetstream), service, "back")
    assert record is not None
    assert record.switch is Switch.ON  # held off for the look, then on again
