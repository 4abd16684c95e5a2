"""The cut-over runbook end to end on the example estate (mappings/estate.yaml), against real
RabbitMQ, Kafka and NATS, while traffic keeps flowing.

Three services — `orders` (RabbitMQ topic exchange), `payments` (Kafka topic), `notifications`
(RabbitMQ fanout exchange) — each with a producer publishing numbered messages and a legacy
consumer reading them from the legacy broker (the queue or group its declared consumer
`replaces`). One service at a time, as MIGRATION.md's runbook says: verify; the legacy consumer
stops, `handoff` makes its JetStream durable start where it stopped, and a JetStream consumer
takes over (pull for orders and payments, push with a queue group for notifications); `cutover
--to drain`, the producer switches to NATS, wait for the bridge's drained report, verify,
`cutover --to retired`. Every message is processed exactly once, by the legacy consumer or by
its JetStream successor; each stream holds every message once.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import aio_pika
import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka_helpers import BridgeProcess
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api as js_api

from bridge.cutover.store import PhaseStore

if TYPE_CHECKING:
    from conftest import TopicFactory

pytestmark = [pytest.mark.nats, pytest.mark.kafka, pytest.mark.rabbitmq]

ROOT = Path(__file__).resolve().parents[2]
BridgeFactory = Callable[[Path], BridgeProcess]
RATE = 0.01  # seconds between messages of one producer (about 100/s each)


async def cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        *args,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 240)
    return process.returncode or 0, out.decode()


STREAMS = {"orders": "ORDERS", "payments": "PAYMENTS", "notifications": "NOTIFY"}


def estate_mapping(path: Path, u: str, topic: str) -> tuple[Path, dict[str, str]]:
    """mappings/estate.yaml with every broker-side name made unique to this test."""
    text = (ROOT / "mappings/estate.yaml").read_text()
    for old, new in (
        ("estate.orders", f"{u}.orders"),
        ("estate.payments", f"{u}.payments"),
        ("estate-payments", topic),
        ("payments-ledger", f"{u}-payments-ledger"),
        ("estate.notify", f"{u}.notify"),
        ("ESTATE_", f"{u.upper()}_"),
        ("\n  orders:\n", f"\n  {u}-orders:\n"),
        ("\n  payments:\n", f"\n  {u}-payments:\n"),
        ("\n  notifications:\n", f"\n  {u}-notifications:\n"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    services = {"orders": f"{u}-orders", "payments": f"{u}-payments", "notifications": f"{u}-notifications"}
    return path, services


class Producer:
    """Publishes `<service>:<n>` to the legacy broker until switched to NATS, then to NATS."""

    def __init__(self, name: str, legacy: Callable[[int], object], nats: Callable[[int], object]) -> None:
        self.name = name
        self._legacy = legacy
        self._nats = nats
        self.on_nats = False
        self.sent = 0
        self.stopped = asyncio.Event()

    async def run(self) -> None:
        while not self.stopped.is_set():
            publish = self._nats if self.on_nats else self._legacy
            result = publish(self.sent)
            if asyncio.iscoroutine(result):
                await result
            self.sent += 1
            await asyncio.sleep(RATE)


async def test_the_example_estate_is_cut_over_service_by_service_with_nothing_lost_or_doubled(
    tmp_path: Path,
    nats_url: str,
    rabbit_vhost_url: str,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    unique_name: str,
    nc: NatsClient,
    bridge_process: BridgeFactory,
) -> None:
    u = unique_name
    payments_topic = await kafka_topic(partitions=3)
    mapping, services = estate_mapping(tmp_path / "estate.yaml", u, payments_topic)
    env = {"NATS_URL": nats_url, "AMQP_URL": rabbit_vhost_url, "KAFKA_BOOTSTRAP": kafka_bootstrap}
    js = nc.jetstream(timeout=20)

    # The legacy estate: exchanges, a topic, and a legacy consumer for each service, reading the
    # queue or group the mapping's consumers replace.
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel()
    orders_ex = await channel.declare_exchange(f"{u}.orders", aio_pika.ExchangeType.TOPIC, durable=True)
    notify_ex = await channel.declare_exchange(f"{u}.notify", aio_pika.ExchangeType.FANOUT, durable=True)
    orders_legacy = await channel.declare_queue("orders-fulfilment", durable=True)
    await orders_legacy.bind(orders_ex, "order.*.*")
    notify_legacy = await channel.declare_queue("notify-senders", durable=True)
    await notify_legacy.bind(notify_ex)

    kafka = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await kafka.start()

    def orders_legacy_publish(n: int) -> object:
        return orders_ex.publish(
            aio_pika.Message(f"orders:{n}".encode(), message_id=f"orders-{n}"), routing_key=f"order.eu.{n % 4}"
        )

    def orders_nats_publish(n: int) -> object:
        return js.publish(
            f"{u}.orders.order.eu.{n % 4}", f"orders:{n}".encode(), headers={"Nats-Msg-Id": f"orders-{n}"}
        )

    def payments_legacy_publish(n: int) -> object:
        return kafka.send_and_wait(
            payments_topic,
            f"payments:{n}".encode(),
            key=f"acct-{n % 5}".encode(),
            headers=[("Account", f"acct-{n % 5}".encode())],
        )

    def payments_nats_publish(n: int) -> object:
        headers = {"Nats-Msg-Id": f"payments-{n}", "Account": f"acct-{n % 5}"}
        return js.publish(f"{u}.payments.{n % 3}", f"payments:{n}".encode(), headers=headers)

    def notify_legacy_publish(n: int) -> object:
        return notify_ex.publish(
            aio_pika.Message(f"notifications:{n}".encode(), message_id=f"notify-{n}"), routing_key=""
        )

    def notify_nats_publish(n: int) -> object:
        return js.publish(f"{u}.notify.sent", f"notifications:{n}".encode(), headers={"Nats-Msg-Id": f"notify-{n}"})

    producers = {
        "orders": Producer("orders", orders_legacy_publish, orders_nats_publish),
        "payments": Producer("payments", payments_legacy_publish, payments_nats_publish),
        "notifications": Producer("notifications", notify_legacy_publish, notify_nats_publish),
    }

    # Legacy consumers until their handoff; then JetStream consumers. Each message processed is
    # recorded once, after it is acked, so a message taken back by its broker is not counted.
    received: dict[str, list[str]] = {name: [] for name in producers}
    moved: dict[str, list[str]] = {name: [] for name in producers}
    consuming = await connection.channel()
    await consuming.set_qos(prefetch_count=1)

    def legacy_queue_consumer(name: str) -> Callable[[aio_pika.abc.AbstractIncomingMessage], Awaitable[None]]:
        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            received[name].append(message.body.decode())

        return on_message

    queues = {
        "orders": await consuming.declare_queue("orders-fulfilment", passive=True),
        "notifications": await consuming.declare_queue("notify-senders", passive=True),
    }
    tags = {name: await queue.consume(legacy_queue_consumer(name)) for name, queue in queues.items()}
    legacy_group = AIOKafkaConsumer(
        payments_topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{u}-payments-ledger",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await legacy_group.start()

    stop_payments = asyncio.Event()

    async def read_payments() -> None:
        while not stop_payments.is_set():  # stopped between batches: a commit is never cut short
            batch = await legacy_group.getmany(timeout_ms=200)
            records = [record for part in batch.values() for record in part]
            if records:
                await legacy_group.commit()  # what was fetched is processed once committed
                received["payments"] += [record.value.decode() for record in records]

    bridge = bridge_process(mapping)
    bridge.args = ("--stall-after", "4s")
    bridge.env = env
    bridge.start()
    await bridge.wait_for_log("consuming queue", timeout=60)
    await bridge.wait_for_log("assigned", timeout=60)
    tasks = [asyncio.create_task(p.run()) for p in producers.values()]
    payments_reader = asyncio.create_task(read_payments())
    successors: list[asyncio.Task[None]] = []
    code, out = await cli("consumers", "apply", str(mapping), env=env)
    assert code == 0, out
    try:
        await asyncio.sleep(3)  # shadow: everything flows through the legacy brokers
        for name in ("orders", "payments", "notifications"):
            service = services[name]
            code, out = await cli("verify", str(mapping), "--service", service, env=env)
            assert code == 0, f"verify before {name}:\n{out}"
            # Move the consumer: the legacy one stops, the durable starts where it stopped.
            if name == "payments":
                stop_payments.set()
                await payments_reader
                await legacy_group.stop()
            else:
                await queues[name].cancel(tags[name])
                await asyncio.sleep(0.5)  # the delivery in hand (prefetch 1) is acked and recorded
            consumer = CONSUMERS[name].format(u=u)
            code, out = await cli("handoff", service, consumer, str(mapping), "--wait", "60s", env=env)
            assert code == 0, f"handoff of {name}:\n{out}"
            assert ": match" in out, out
            successors.append(
                asyncio.create_task(jetstream_consumer(nc, name, mapping_stream(u, name), consumer, moved))
            )
            code, out = await cli(
                "cutover", service, str(mapping), "--to", "drain", "--reason", f"{name} producers on NATS",
                "--quiet", "2s", env=env,
            )  # fmt: skip
            assert code == 0, out
            await asyncio.sleep(1.5)  # the bridges follow within a second: the reverse route runs
            producers[name].on_nats = True
            await wait_drained(nc, service, bridge, timeout=90)
            code, out = await cli("verify", str(mapping), "--service", service, env=env)
            assert code == 0, f"verify after draining {name}:\n{out}"
            extra = ("--delete-offsets",) if name == "payments" else ()
            code, out = await cli(
                "cutover", service, str(mapping), "--to", "retired", "--reason", f"{name} moved", "--wait",
                "--timeout", "90s", *extra, env=env,
            )  # fmt: skip
            assert code == 0, out + bridge.log()
            assert bridge.alive(), bridge.log()
        await asyncio.sleep(2)
        # Runbook step 3's end: no legacy consumer is left on orders' queues, so its reverse route
        # is switched off for good while the bridge runs, its durable deleted.
        code, out = await cli(
            "reverse", services["orders"], "to-rabbit", str(mapping), "--to", "removed",
            "--reason", "no legacy consumer", env=env,
        )  # fmt: skip
        assert code == 0, out + bridge.log()
        assert "deleted" in out, out
        assert bridge.alive(), bridge.log()
    finally:
        for producer in producers.values():
            producer.stopped.set()
        await asyncio.gather(*tasks)

    # Every message processed once, by the legacy consumer or its JetStream successor; every
    # stream holds every message once.
    deadline = time.monotonic() + 60
    while any(len(received[n]) + len(moved[n]) < producers[n].sent for n in producers) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    for task in successors:
        task.cancel()
    for name, producer in producers.items():
        expected = [f"{name}:{n}" for n in range(producer.sent)]
        counts = Counter(received[name] + moved[name])
        doubled = sorted(body for body, count in counts.items() if count > 1)
        missing = sorted(set(expected) - set(counts))
        assert not missing, f"{name}: processed by nobody: {missing[:10]}"
        assert not doubled, f"{name}: processed twice: {doubled[:10]}"
        assert received[name], f"{name}: the legacy consumer processed nothing before its handoff"
        assert moved[name], f"{name}: the JetStream consumer processed nothing"
        assert producer.sent > 300, f"{name}: only {producer.sent} sent"
        stored = await stream_bodies(nc, f"{u.upper()}_{STREAMS[name]}")
        counts = Counter(stored)
        assert sorted(counts) == sorted(expected), f"stream of {name}: {len(counts)} distinct of {len(expected)}"
        assert max(counts.values()) == 1, (
            f"stream of {name} holds copies: {[b for b, c in counts.items() if c > 1][:10]}"
        )
    store = PhaseStore(js, create=False)
    for service in services.values():
        record, _ = await store.get(service)
        assert record.phase.value == "retired"
    # The reverse routes still write to the legacy side (for consumers not moved), and the
    # endpoint says how much.
    url = await bridge.http_url()
    async with aiohttp.ClientSession() as session, session.get(f"{url}/status") as response:
        document = await response.json()
    reverse = {entry["service"]: entry for entry in document["reverse_routes"]}
    assert set(reverse) == set(services.values())
    for name, service in services.items():
        assert reverse[service]["running"] is (name != "orders"), reverse[service]  # orders' was removed
        assert reverse[service]["written"] > 0, reverse[service]
        assert reverse[service]["write_failures"] == 0, reverse[service]
    assert {entry["phase"] for entry in document["services"]} == {"retired"}
    assert bridge.terminate() == 0, bridge.log()
    await kafka.stop()
    await connection.close()


async def wait_drained(nc: NatsClient, service: str, bridge: BridgeProcess, timeout: float) -> None:
    store = PhaseStore(nc.jetstream(), create=False)
    deadline = time.monotonic() + timeout
    while True:
        record, _ = await store.get(service)
        if record.drained_at is not None:
            return
        if time.monotonic() > deadline or not bridge.alive():
            raise AssertionError(f"{service} not drained within {timeout}s:\n{bridge.log()}")
        await asyncio.sleep(0.5)


async def stream_bodies(nc: NatsClient, stream: str) -> list[str]:
    js = nc.jetstream(timeout=20)
    total = (await js.stream_info(stream)).state.messages
    bodies: list[str] = []
    subscription = await js.pull_subscribe(
        "", stream=stream, config=js_api.ConsumerConfig(ack_policy=js_api.AckPolicy.NONE)
    )
    while len(bodies) < total:
        batch = await subscription.fetch(min(1000, total - len(bodies)), timeout=20)
        bodies += [message.data.decode() for message in batch]
    await subscription.unsubscribe()
    return bodies


# The consumer each service declares in mappings/estate.yaml (payments' named per test: a Kafka
# group is not per vhost).
CONSUMERS = {"orders": "orders-fulfilment", "payments": "{u}-payments-ledger", "notifications": "notify-senders"}


def mapping_stream(u: str, name: str) -> str:
    return f"{u.upper()}_{STREAMS[name]}"


async def jetstream_consumer(nc: NatsClient, name: str, stream: str, durable: str, moved: dict[str, list[str]]) -> None:
    """The service's new consumer: pull (orders, payments) or push with its queue group (notifications)."""
    js = nc.jetstream(timeout=20)
    if name == "notifications":
        info = await js.consumer_info(stream, durable)
        done = asyncio.Event()

        async def on_message(message: Msg) -> None:
            await message.ack_sync()
            moved[name].append(message.data.decode())

        subscription = await nc.subscribe(
            info.config.deliver_subject or "", queue=info.config.deliver_group or "", cb=on_message
        )
        try:
            await done.wait()
        finally:
            await subscription.unsubscribe()
        return
    pull = await js.pull_subscribe_bind(durable=durable, stream=stream)
    try:
        while True:
            try:
                batch = await pull.fetch(100, timeout=1)
            except TimeoutError:  # nats-py's, or asyncio's when the fetch's deadline ran out first
                continue
            for message in batch:
                await message.ack_sync()
                moved[name].append(message.data.decode())
    finally:
        await pull.unsubscribe()
