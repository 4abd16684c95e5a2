"""Scale-out: N `nats-bridge run` processes on one mapping share the work, and a SIGKILL of one of
them loses nothing and stores nothing twice.

- Kafka: the instances join one consumer group, so the group coordinator shares the partitions
  out; a killed member's partitions go to the survivors (after the session timeout), which resume
  from the last commit and de-duplicate by `Nats-Msg-Id` / checkpoints.
- RabbitMQ: the instances consume the same shadow queue as competing consumers; a killed
  instance's unacknowledged deliveries are redelivered to the others and dropped by JetStream as
  duplicates (same `message_id`, inside the duplicate window).
- RabbitMQ with `single_active_consumer: true`: only one instance consumes at a time, the others
  stand by; when the active one dies another takes over by itself and the stream keeps the
  publish order.

Each instance gets its own mapping file with its own `nats.name`, Kafka `client_id` and AMQP
connection name (`?name=` in the URL), so the broker-side views (the group's members, RabbitMQ's
consumers and channels) tell the instances apart. Real brokers, real processes, 100,000 messages
each; every wait is on a condition with a generous deadline (the CI machine has 2 cores and is
shared), and the durations of each phase are printed (`pytest -s` shows them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import textwrap
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiormq
import brokers_local
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError
from aiormq import spec
from kafka_helpers import BridgeProcess, fill_topic, stored_offsets, stream_count, wait_for_count, write_mapping
from nats.aio.client import Client as NatsClient
from nats.js import api as js_api

BridgeFactory = Callable[[Path], BridgeProcess]
TopicFactory = Callable[..., Awaitable[str]]

INSTANCES = ("bridge-a", "bridge-b", "bridge-c")
TOTAL = 100_000
KILL_AT = 30_000  # stored messages before one instance is killed: a good part, far from all
EXCHANGE = "orders"
SHADOW_QUEUE = "nats-bridge.svc.r"  # shadow_queue_name("svc", "r")


class Phases:
    """Wall-clock durations of a test's phases, printed at the end: 100,000 messages through real
    brokers take a while, and these show where a slow CI run spent its time."""

    def __init__(self, test: str) -> None:
        self.test = test
        self.started = self.last = time.monotonic()
        self.marks: list[tuple[str, float]] = []

    def mark(self, what: str) -> None:
        now = time.monotonic()
        self.marks.append((what, now - self.last))
        self.last = now

    def report(self) -> None:
        parts = ", ".join(f"{what} {seconds:.1f}s" for what, seconds in self.marks)
        print(f"\n[scale-out] {self.test}: {parts}; total {time.monotonic() - self.started:.1f}s")


def out_of_place(actual: list[int], expected: list[int]) -> str | None:
    """None when equal, else a short description: pytest's own diff of two 100,000-element lists
    takes minutes and says less."""
    if actual == expected:
        return None
    for index, (got, wanted) in enumerate(zip(actual, expected, strict=False)):
        if got != wanted:
            return f"position {index}: {got} where {wanted} belongs; around it {actual[max(0, index - 3) : index + 4]}"
    return f"{len(actual)} values where {len(expected)} belong"


async def until(
    condition: Callable[[], Awaitable[bool]], what: str, timeout: float, bridges: list[BridgeProcess]
) -> None:
    """Wait for `condition`; fail early if a bridge that should be running died."""
    deadline = time.monotonic() + timeout
    while not await condition():
        for bridge in bridges:
            if not bridge.alive():
                raise AssertionError(f"a bridge exited while waiting for {what}:\n{bridge.log()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout}s")
        await asyncio.sleep(0.2)


# --- Kafka --------------------------------------------------------------------------------------


def kafka_instance_mapping(path: Path, name: str, **kwargs: str) -> Path:
    """write_mapping's file, with this instance's NATS connection name and Kafka client id."""
    write_mapping(path, **kwargs)
    text = path.read_text()
    named = text.replace("nats:\n", f"nats:\n  name: {name}\n", 1)
    named = named.replace("    type: kafka\n", f"    type: kafka\n    client_id: {name}\n", 1)
    assert named.count(name) == 2, f"write_mapping's layout changed; the instance is not named:\n{named}"
    path.write_text(named)
    return path


async def group_members(admin: AIOKafkaAdminClient, group: str) -> tuple[str, dict[str, set[int]]]:
    """The group's state and, per member client id, the partitions the coordinator assigned it
    (no state while the coordinator is not ready to answer: the caller polls)."""
    try:
        (response,) = await admin.describe_consumer_groups([group])
    except KafkaError:
        return "", {}
    (described,) = response.to_object()["groups"]
    members: dict[str, set[int]] = {}
    for member in described["members"]:
        raw = member["member_assignment"]
        partitions = ConsumerProtocolMemberAssignment.decode(raw).partitions() if raw else []
        members.setdefault(member["client_id"], set()).update(tp.partition for tp in partitions)
    return described["state"], members


async def committed_offsets(admin: AIOKafkaAdminClient, group: str) -> dict[int, int] | None:
    """partition -> the group's committed offset; None while the coordinator can't answer."""
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    except KafkaError:
        return None
    return {tp.partition: meta.offset for tp, meta in offsets.items()}


@pytest.mark.timeout(600)
async def test_kafka_three_instances_share_the_partitions_and_a_sigkill_loses_and_doubles_nothing(
    tmp_path: Path,
    bridge_process: BridgeFactory,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    unique_name: str,
    nc: NatsClient,
) -> None:
    phases = Phases("kafka")
    partitions = 6
    topic = await kafka_topic(partitions=partitions)
    stream = unique_name.upper()
    group = f"bridge-{unique_name}"
    bridges = {
        name: bridge_process(
            kafka_instance_mapping(
                tmp_path / f"{name}.yaml",
                name,
                nats_url=nats_url,
                bootstrap=kafka_bootstrap,
                stream=stream,
                topic=topic,
                group=group,
            )
        )
        for name in INSTANCES
    }
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=30_000)
    await admin.start()
    fill: asyncio.Task[None] | None = None
    try:
        for bridge in bridges.values():
            bridge.start()
        everything = set(range(partitions))
        shares: dict[str, set[int]] = {}

        async def shared_by_all_three() -> bool:
            nonlocal shares
            state, shares = await group_members(admin, group)
            return (
                state == "Stable"
                and set(shares) == set(INSTANCES)
                and all(shares.values())
                and set().union(*shares.values()) == everything
            )

        await until(shared_by_all_three, "group of three sharing all partitions", 120, list(bridges.values()))
        phases.mark("3 instances joined")
        # Each instance owns a disjoint share of the partitions: the work is split three ways.
        assert sum(len(share) for share in shares.values()) == partitions, shares

        # Records arrive while the three run, as in production.
        fill = asyncio.create_task(fill_topic(kafka_bootstrap, topic, TOTAL, partitions))
        at_kill = await wait_for_count(nc, stream, KILL_AT, timeout=300, bridges=bridges.values())
        victim = bridges["bridge-b"]
        victim.kill()
        phases.mark(f"stored {at_kill} then SIGKILL bridge-b")
        assert at_kill < TOTAL, "the kill must land mid-run"
        survivors = [bridges["bridge-a"], bridges["bridge-c"]]

        async def survivors_own_everything() -> bool:
            state, members = await group_members(admin, group)
            return (
                state == "Stable"
                and set(members) == {"bridge-a", "bridge-c"}
                and set().union(*members.values()) == everything
            )

        # No LeaveGroup from a SIGKILLed member: the coordinator drops it after the session timeout.
        await until(survivors_own_everything, "survivors owning every partition", 120, survivors)
        phases.mark("bridge-b's partitions taken over")
        await fill
        phases.mark("topic filled")
        await wait_for_count(nc, stream, TOTAL, timeout=300, bridges=survivors)
        phases.mark("all stored")
        produced = {p: TOTAL // partitions + (1 if p < TOTAL % partitions else 0) for p in range(partitions)}

        async def committed_to_the_end() -> bool:
            return await committed_offsets(admin, group) == produced

        # Committed means settled: anything stored twice would have been stored before this.
        await until(committed_to_the_end, "commits at the end of every partition", 120, survivors)
        phases.mark("committed to the end")
        for bridge in survivors:
            assert bridge.terminate() == 0, bridge.log()
        assert await committed_offsets(admin, group) == produced
    finally:
        if fill is not None and not fill.done():
            fill.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fill
        await admin.close()
    stored = await stored_offsets(nc, stream)
    assert sum(len(offsets) for offsets in stored.values()) == TOTAL
    assert sorted(stored) == list(range(partitions))
    for partition, offsets in stored.items():
        problem = out_of_place(offsets, list(range(produced[partition])))
        assert problem is None, f"partition {partition} is not each offset once, in order: {problem}"
    phases.report()


# --- RabbitMQ -----------------------------------------------------------------------------------


def rabbit_instance_mapping(
    path: Path, name: str, *, nats_url: str, amqp_url: str, stream: str, single_active_consumer: bool = False
) -> Path:
    """One instance's mapping: the same route and shadow queue, its own NATS and AMQP connection names."""
    separator = "&" if urllib.parse.urlsplit(amqp_url).query else "?"
    subject = stream.lower()
    sac = ", single_active_consumer: true" if single_active_consumer else ""
    path.write_text(
        textwrap.dedent(f"""\
            nats: {{servers: ["{nats_url}"], name: {name}}}
            streams:
              - {{name: {stream}, subjects: ["{subject}.>"], duplicate_window: 2m}}
            sources:
              rabbit: {{type: rabbitmq, url: "{amqp_url}{separator}name={name}"}}
            services:
              svc:
                routes:
                  - {{name: r, source: rabbit, from: {{exchange: {EXCHANGE}, bindings: ["#"]{sac}}},
                      to: "{subject}.{{rk}}"}}
            """)
    )
    return path


def vhost_of(amqp_url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(amqp_url).path.removeprefix("/")) or "/"


def rabbitmqctl(*args: str) -> list[dict[str, Any]]:
    """`rabbitmqctl ARGS --formatter json` on the local test node. It reads the queue and channel
    processes directly; the management API can't be used, its statistics are off on the test node."""
    proc = subprocess.run(
        [str(brokers_local.BROKERS_SCRIPT), "rabbitmqctl", "-q", *args, "--formatter", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise AssertionError(f"rabbitmqctl {' '.join(args)} exited {proc.returncode}: {proc.stdout}{proc.stderr}")
    result: list[dict[str, Any]] = json.loads(proc.stdout or "[]")
    return result


@dataclass(frozen=True)
class QueueConsumer:
    instance: str  # the AMQP connection name: which bridge process
    active: bool  # single-active-consumer: the one receiving; always true without it
    unacked: int  # deliveries its channel holds unacknowledged right now


_connection_names: dict[tuple[str, str], str] = {}  # (vhost, connection pid) -> AMQP connection name


def queue_consumers(vhost: str, queue: str) -> list[QueueConsumer]:
    """The queue's consumers, each with its bridge instance: consumer -> channel -> connection name.

    A connection's name never changes, so connections are listed only when an unknown one shows
    up: each rabbitmqctl call starts an Erlang VM, a second or more on a loaded 2-core machine.
    """
    consumers = rabbitmqctl("list_consumers", "-p", vhost, "queue_name", "channel_pid", "active")
    channels = {
        c["pid"]: c for c in rabbitmqctl("list_channels", "-p", vhost, "pid", "connection", "messages_unacknowledged")
    }
    if any((vhost, c["connection"]) not in _connection_names for c in channels.values()):
        for connection in rabbitmqctl("list_connections", "pid", "vhost", "client_properties"):
            if connection["vhost"] == vhost:
                properties = {key: value for key, _type, value in connection["client_properties"]}
                _connection_names[(vhost, connection["pid"])] = str(properties.get("connection_name", "?"))
    found = []
    for consumer in consumers:
        if consumer["queue_name"] != queue:
            continue
        channel = channels.get(consumer["channel_pid"], {})
        found.append(
            QueueConsumer(
                instance=_connection_names.get((vhost, channel.get("connection", "")), "?"),
                active=bool(consumer["active"]),
                unacked=int(channel.get("messages_unacknowledged") or 0),
            )
        )
    return found


class ConsumerSampler:
    """Snapshots of the shadow queue's consumers, taken in the background while the bridges run.

    A snapshot takes about a second (three rabbitmqctl calls); sampling beside the test, instead of
    inside its wait loops, keeps the kill close to its mark while still watching the whole run.
    """

    def __init__(self, vhost: str) -> None:
        self.vhost = vhost
        self.snapshots: list[list[QueueConsumer]] = []
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.snapshots.append(await asyncio.to_thread(queue_consumers, self.vhost, SHADOW_QUEUE))
            await asyncio.sleep(0.2)

    def start(self) -> None:
        self._task = asyncio.create_task(self._sample())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def instances_seen_busy(self) -> set[str]:
        """Instances whose channel held unacknowledged deliveries in some snapshot: they got work."""
        return {c.instance for snapshot in self.snapshots for c in snapshot if c.unacked > 0}


def queue_depth(vhost: str, queue: str) -> int:
    """Messages in the queue, ready and unacknowledged."""
    for row in rabbitmqctl("list_queues", "-p", vhost, "name", "messages"):
        if row["name"] == queue:
            return int(row["messages"] or 0)
    raise AssertionError(f"queue {queue} does not exist in vhost {vhost}")


async def declare_exchange(url: str) -> None:
    """The exchange legacy producers publish to; it exists before the bridge starts (the bridge
    never creates a legacy exchange)."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
    finally:
        await connection.close()


async def publish_numbered(url: str, total: int, *, window: int = 2_000) -> None:
    """Publish messages 0..total-1 in order: the body is the number (the sequence), `message_id`
    `id-<n>` (so Msg-Ids are deterministic), persistent. Publisher confirms with `window` awaiting
    at a time: as fast as unconfirmed publishing here, and a refused message fails the test."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        for start in range(0, total, window):
            confirms = await asyncio.gather(
                *(
                    channel.basic_publish(
                        str(i).encode(),
                        exchange=EXCHANGE,
                        routing_key="order.new",
                        properties=spec.Basic.Properties(delivery_mode=2, message_id=f"id-{i}"),
                    )
                    for i in range(start, min(total, start + window))
                )
            )
            assert all(isinstance(confirm, spec.Basic.Ack) for confirm in confirms), "RabbitMQ nacked a publish"
    finally:
        await connection.close()


async def stored_ids_and_bodies(nc: NatsClient, stream: str) -> list[tuple[str, bytes]]:
    """(Nats-Msg-Id, payload) of every message in the stream, in stream order."""
    js = nc.jetstream(timeout=20)
    total = (await js.stream_info(stream)).state.messages
    found: list[tuple[str, bytes]] = []
    subscription = await js.pull_subscribe(
        "", stream=stream, config=js_api.ConsumerConfig(ack_policy=js_api.AckPolicy.NONE)
    )
    while len(found) < total:
        for message in await subscription.fetch(min(2_000, total - len(found)), timeout=20):
            found.append(((message.headers or {})["Nats-Msg-Id"], message.data))
    await subscription.unsubscribe()
    return found


def require_local_rabbitmq() -> None:
    if brokers_local.SOURCES.get("rabbitmq") != "local":
        pytest.fail("this test reads consumers with rabbitmqctl: run it against the local broker of compose/brokers")


async def start_rabbit_instances(
    tmp_path: Path,
    bridge_process: BridgeFactory,
    *,
    nats_url: str,
    amqp_url: str,
    stream: str,
    single_active_consumer: bool,
) -> dict[str, BridgeProcess]:
    """Three instances on one mapping, started together; returns once all three consume the queue."""
    await declare_exchange(amqp_url)
    bridges = {
        name: bridge_process(
            rabbit_instance_mapping(
                tmp_path / f"{name}.yaml",
                name,
                nats_url=nats_url,
                amqp_url=amqp_url,
                stream=stream,
                single_active_consumer=single_active_consumer,
            )
        )
        for name in INSTANCES
    }
    for bridge in bridges.values():
        bridge.start()
    vhost = vhost_of(amqp_url)

    async def all_three_consume() -> bool:
        consumers = await asyncio.to_thread(queue_consumers, vhost, SHADOW_QUEUE)
        return sorted(c.instance for c in consumers) == list(INSTANCES)

    await until(all_three_consume, "three consumers on the shadow queue", 120, list(bridges.values()))
    return bridges


async def finish(
    nc: NatsClient, stream: str, vhost: str, survivors: list[BridgeProcess], phases: Phases
) -> list[tuple[str, bytes]]:
    """Wait until the survivors stored everything and acknowledged it all, stop them, and return
    what the stream holds."""
    await wait_for_count(nc, stream, TOTAL, timeout=400, bridges=survivors)
    phases.mark("all stored")

    async def queue_empty() -> bool:
        return await asyncio.to_thread(queue_depth, vhost, SHADOW_QUEUE) == 0

    # Everything acknowledged: nothing is left to redeliver, so nothing can still be stored twice.
    await until(queue_empty, "empty shadow queue", 120, survivors)
    phases.mark("queue empty")
    for bridge in survivors:
        assert bridge.terminate() == 0, bridge.log()
    assert await asyncio.to_thread(queue_depth, vhost, SHADOW_QUEUE) == 0, "the survivors left messages behind"
    stored = await stored_ids_and_bodies(nc, stream)
    assert all(msg_id == f"svc/r/id-{body.decode()}" for msg_id, body in stored), "each message under its own Msg-Id"
    return stored


@pytest.mark.timeout(600)
async def test_rabbitmq_three_competing_instances_share_the_queue_and_a_sigkill_loses_and_doubles_nothing(
    tmp_path: Path,
    bridge_process: BridgeFactory,
    rabbit_vhost_url: str,
    nats_url: str,
    unique_name: str,
    nc: NatsClient,
) -> None:
    require_local_rabbitmq()
    phases = Phases("rabbitmq competing")
    stream = unique_name.upper()
    vhost = vhost_of(rabbit_vhost_url)
    bridges = await start_rabbit_instances(
        tmp_path,
        bridge_process,
        nats_url=nats_url,
        amqp_url=rabbit_vhost_url,
        stream=stream,
        single_active_consumer=False,
    )
    phases.mark("3 instances consuming")
    sampler = ConsumerSampler(vhost)
    sampler.start()
    publish = asyncio.create_task(publish_numbered(rabbit_vhost_url, TOTAL))
    try:
        await wait_for_count(nc, stream, KILL_AT, timeout=300, bridges=bridges.values())

        # Competing consumers: RabbitMQ hands each its share, so each instance's channel holds
        # unacknowledged deliveries (up to its prefetch) while the queue has messages.
        async def all_three_got_work() -> bool:
            return sampler.instances_seen_busy() == set(INSTANCES)

        await until(all_three_got_work, "deliveries to all three instances", 120, list(bridges.values()))
        bridges["bridge-b"].kill()
        at_kill = await stream_count(nc, stream)
        phases.mark(f"stored {at_kill} then SIGKILL bridge-b")
        assert at_kill < TOTAL, "the kill must land mid-run"
        await publish
        phases.mark("published")
    finally:
        await sampler.stop()
        if not publish.done():
            publish.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publish
    assert all(c.active for snapshot in sampler.snapshots for c in snapshot), "without SAC every consumer is active"
    stored = await finish(nc, stream, vhost, [bridges["bridge-a"], bridges["bridge-c"]], phases)
    problem = out_of_place(sorted(int(body) for _, body in stored), list(range(TOTAL)))
    assert problem is None, f"{len(stored)} stored, not each of {TOTAL} once: {problem}"
    phases.report()


@pytest.mark.timeout(600)
async def test_rabbitmq_single_active_consumer_fails_over_by_itself_and_keeps_publish_order(
    tmp_path: Path,
    bridge_process: BridgeFactory,
    rabbit_vhost_url: str,
    nats_url: str,
    unique_name: str,
    nc: NatsClient,
) -> None:
    require_local_rabbitmq()
    phases = Phases("rabbitmq single-active-consumer")
    stream = unique_name.upper()
    vhost = vhost_of(rabbit_vhost_url)
    bridges = await start_rabbit_instances(
        tmp_path,
        bridge_process,
        nats_url=nats_url,
        amqp_url=rabbit_vhost_url,
        stream=stream,
        single_active_consumer=True,
    )
    phases.mark("3 instances attached")
    sampler = ConsumerSampler(vhost)
    sampler.start()
    publish = asyncio.create_task(publish_numbered(rabbit_vhost_url, TOTAL))
    try:
        await wait_for_count(nc, stream, KILL_AT, timeout=300, bridges=bridges.values())

        async def snapshot_taken() -> bool:
            return bool(sampler.snapshots)

        await until(snapshot_taken, "a snapshot of the queue's consumers", 120, list(bridges.values()))
        # Only one consumes at a time: in every snapshot one consumer is active and the two
        # standing by hold no deliveries at all; and it is the same one throughout.
        before_kill = list(sampler.snapshots)
        for snapshot in before_kill:
            assert len(snapshot) == 3, snapshot
            assert [c.active for c in snapshot].count(True) == 1, snapshot
            assert all(c.unacked == 0 for c in snapshot if not c.active), snapshot
        actives = {c.instance for snapshot in before_kill for c in snapshot if c.active}
        assert len(actives) == 1, f"the active consumer changed without a failure: {actives}"
        (first,) = actives
        assert first in bridges, before_kill
        bridges[first].kill()
        at_kill = await stream_count(nc, stream)
        phases.mark(f"stored {at_kill} then SIGKILL the active {first} ({len(before_kill)} snapshots)")
        await sampler.stop()
        assert at_kill < TOTAL, "the kill must land mid-run"
        survivors = [bridge for name, bridge in bridges.items() if name != first]
        successor: list[QueueConsumer] = []

        async def another_took_over() -> bool:
            nonlocal successor
            consumers = await asyncio.to_thread(queue_consumers, vhost, SHADOW_QUEUE)
            successor = [c for c in consumers if c.active]
            return len(consumers) == 2 and len(successor) == 1 and successor[0].instance != first

        # Nobody tells the survivors: RabbitMQ promotes a waiting consumer when the active one's
        # connection drops, and that bridge simply starts receiving.
        await until(another_took_over, "a new active consumer", 120, survivors)
        phases.mark(f"{successor[0].instance} took over")
        await publish
        phases.mark("published")
    finally:
        await sampler.stop()
        if not publish.done():
            publish.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publish
    stored = await finish(nc, stream, vhost, survivors, phases)
    problem = out_of_place([int(body) for _, body in stored], list(range(TOTAL)))
    assert problem is None, f"{len(stored)} stored, not each of {TOTAL} once in publish order: {problem}"
    phases.report()
