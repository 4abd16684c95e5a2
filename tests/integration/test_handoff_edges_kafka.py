"""`handoff` for a Kafka group in cases its first tests did not try, on real brokers: committed
offsets that point at records the bridge never stored (tombstones it skips, transaction markers,
aborted transactions), and one group reading two topics into one stream.

The oracle is Kafka itself: what the group has not processed is every record at or after its
committed offset, as the bridge reads it (read_committed, tombstones skipped); the durable must
deliver exactly those, each partition from its own offset on, and nothing else."""

from __future__ import annotations

import json
import random
import textwrap
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from aiokafka import AIOKafkaProducer
from kafka_helpers import BridgeProcess, wait_for_count
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig
from test_cutover import cli
from test_handoff_kafka import _commit, _has_consumer

from bridge.brokers.kafka.groups import group_position
from bridge.brokers.kafka.ranges import group_offsets
from bridge.config.loader import load_config
from bridge.config.sources import KafkaSource
from bridge.handoff.durable import HandoffRefusedError, position_kafka_durable
from bridge.handoff.kafka_between import copied_between
from bridge.handoff.kafka_plan import KafkaHandoffPlan, plan_kafka_handoff
from bridge.headers import ORIGIN_HEADER
from bridge.plan import compile_plan


def _mapping(path: Path, nats_url: str, bootstrap: str, stream: str, topics: Sequence[str], extra: str = "") -> Path:
    """One route copying `topics` into `stream`, a subject per topic and partition, in a service
    named like the stream (phases are shared by every test on the server), whose consumer
    `ledger` replaces the group `<stream>-cli`."""
    s = stream.lower()
    path.write_text(
        textwrap.dedent(f"""\
            nats: {{servers: ["{nats_url}"]}}
            streams: [{{name: {stream}, subjects: ["{s}.>"]}}]
            sources:
              kafka: {{type: kafka, bootstrap_servers: ["{bootstrap}"]}}
            services:
              {s}:
                routes:
                  - name: copy
                    source: kafka
                    from: {{topics: {list(topics)}, group: "{s}-bridge"{extra}}}
                    to: "{s}.{{topic}}.{{partition}}"
                consumers:
                  - {{name: ledger, stream: {stream}, filter_subjects: ["{s}.>"], replaces: {{group: {s}-cli}}}}
            """)
    )
    return path


async def _copy(
    mapping: Path, bridge_process: Callable[[Path], BridgeProcess], nc: NatsClient, stream: str, stored: int
) -> None:
    """Run the bridge until it stored `stored` records, then stop it."""
    bridge = bridge_process(mapping)
    bridge.start()
    await wait_for_count(nc, stream, stored, timeout=120)
    assert bridge.terminate() == 0


async def _plan(
    nc: NatsClient, mapping: Path, legacy: str, topics: list[str], filters: list[str], **options: bool
) -> KafkaHandoffPlan:
    """The plan as `handoff` makes it (with what Kafka says of offsets the stream has nothing for)."""
    config = load_config(mapping)
    source = config.sources["kafka"]
    assert isinstance(source, KafkaSource)
    stream = config.streams[0].name
    group = await group_position(source, legacy, topics)
    stored, _ = await group_offsets(source, f"{stream.lower()}-bridge", purpose="test", seconds=15)
    return await plan_kafka_handoff(
        nc.jetstream(), stream=stream, durable=legacy, filters=filters, group=group, stored_through=stored,
        copied=copied_between(source, compile_plan(config).route(f"{stream.lower()}/copy"), seconds=15), **options,
    )  # fmt: skip


async def _hand_off(nc: NatsClient, plan: KafkaHandoffPlan) -> list[tuple[int, int]]:
    assert not plan.refused, plan.why_not()
    result = await position_kafka_durable(nc.jetstream(), plan, ConsumerConfig(ack_policy=AckPolicy.EXPLICIT))
    assert result.acked == plan.to_ack  # what `--plan` said it would ack
    return await _consume_all(nc, plan.stream, plan.durable)


async def test_offsets_at_records_the_bridge_skipped_start_at_the_next_stored_record(
    tmp_path: Path,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: Callable[..., object],
    unique_name: str,
    bridge_process: Callable[[Path], BridgeProcess],
    nc: NatsClient,
) -> None:
    """`tombstones: skip`: partition 0 starts with a tombstone and a record a reverse route wrote
    (origin marker), and has a tombstone at offset 10; partition 1 ends with five tombstones. A
    group committed at a skipped record resumes at the next stored one: not refused (the start
    of the partition is not "older than the stream keeps"), nothing before it delivered."""
    topic = await kafka_topic(partitions=2)  # type: ignore[misc]
    stream = unique_name.upper()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for offset in range(20):
            value = None if offset in (0, 10) else f"p0-{offset}".encode()
            # offset 1: what a reverse route wrote, never copied back
            headers = [(ORIGIN_HEADER, b"reverse")] if offset == 1 else []
            await producer.send_and_wait(topic, value, key=b"k", partition=0, headers=headers)
        for offset in range(20):
            await producer.send_and_wait(
                topic, None if offset >= 15 else f"p1-{offset}".encode(), key=b"k", partition=1
            )
    finally:
        await producer.stop()
    mapping = _mapping(tmp_path / "m.yaml", nats_url, kafka_bootstrap, stream, [topic], ", tombstones: skip")
    await _copy(mapping, bridge_process, nc, stream, 17 + 15)
    stored = {0: [o for o in range(20) if o not in (0, 1, 10)], 1: list(range(15))}
    filters = [f"{stream.lower()}.>"]

    for name, committed in (("nothing", {0: 0, 1: 17}), ("middle", {0: 10, 1: 3}), ("one", {0: 1, 1: 15})):
        legacy = f"{unique_name}-{name}"
        await _commit(kafka_bootstrap, legacy, topic, committed)
        plan = await _plan(nc, mapping, legacy, [topic], filters)
        seen = await _hand_off(nc, plan)
        expected = [(p, o) for p, offsets in stored.items() for o in offsets if o >= committed[p]]
        assert Counter(seen) == Counter(expected), name
        assert [o for p, o in seen if p == 0] == sorted(o for p, o in expected if p == 0), name


async def test_offsets_past_transaction_markers_and_aborted_records(
    tmp_path: Path,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: Callable[..., object],
    unique_name: str,
    bridge_process: Callable[[Path], BridgeProcess],
    nc: NatsClient,
) -> None:
    """A transactional topic: each commit marker takes an offset, an aborted transaction's records
    are never read (read_committed). Committed offsets point past markers, at a marker, or at an
    aborted record: the durable starts at the next record the bridge stored."""
    topic = await kafka_topic(partitions=1)  # type: ignore[misc]
    stream = unique_name.upper()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"{unique_name}-tx")
    await producer.start()
    try:
        for batch, commit in (("a", True), ("b", True), ("x", False), ("c", True)):
            async with producer.transaction() if commit else _aborted(producer):
                for i in range(5):
                    await producer.send(topic, f"{batch}{i}".encode(), partition=0)
    finally:
        await producer.stop()
    # a0..a4 at 0..4, marker 5; b0..b4 at 6..10, marker 11; x0..x4 aborted at 12..16, marker 17;
    # c0..c4 at 18..22, marker 23
    stored = [*range(5), *range(6, 11), *range(18, 23)]
    mapping = _mapping(tmp_path / "m.yaml", nats_url, kafka_bootstrap, stream, [topic])
    await _copy(mapping, bridge_process, nc, stream, len(stored))
    filters = [f"{stream.lower()}.>"]
    for committed in (6, 5, 11, 14, 17, 24):
        legacy = f"{unique_name}-at{committed}"
        await _commit(kafka_bootstrap, legacy, topic, {0: committed})
        plan = await _plan(nc, mapping, legacy, [topic], filters)
        seen = await _hand_off(nc, plan)
        assert seen == [(0, o) for o in stored if o >= committed], committed

    # the command: exit 0, the durable's count beside the lag in records (markers are no records)
    await _commit(kafka_bootstrap, f"{unique_name}-cli", topic, {0: 6})
    code, out = await cli("handoff", unique_name, "ledger", str(mapping), "--json")
    assert code == 0, out
    done = json.loads(out)
    assert (done["result"]["durable_pending"], done["result"]["legacy_lag"]) == (10, 18)
    assert (done["result"]["legacy_records"], done["result"]["matches"]) == (10, True)
    # again before anyone consumed: the same start, or a refusal; never another place
    code, out = await cli("handoff", unique_name, "ledger", str(mapping), "--json")
    assert code in (0, 2), out
    if code == 0:
        assert json.loads(out)["result"]["start_sequence"] == done["result"]["start_sequence"]
    assert await _consume_all(nc, stream, "ledger") == [(0, o) for o in stored if o >= 6]


class _aborted:  # noqa: N801 - used like `producer.transaction()`
    """A transaction that is aborted at the end of its block."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    async def __aenter__(self) -> None:
        await self.producer.begin_transaction()

    async def __aexit__(self, *_exc: object) -> None:
        await self.producer.abort_transaction()


async def test_one_group_over_two_topics_into_one_stream(
    tmp_path: Path,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: Callable[..., object],
    unique_name: str,
    bridge_process: Callable[[Path], BridgeProcess],
    nc: NatsClient,
) -> None:
    """Two topics copied into one stream, the durable filtered per topic: one topic's partitions
    processed to different prefixes, the other fully processed; then a group that never committed
    on the second topic is refused, unless told to start it at the earliest record kept."""
    first = await kafka_topic(partitions=3)  # type: ignore[misc]
    second = await kafka_topic(partitions=2)  # type: ignore[misc]
    stream = unique_name.upper()
    s = stream.lower()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for i in range(120):  # interleaved, so each topic's records are spread over the stream
            await producer.send(first, f"f{i}".encode(), partition=i % 3)
            await producer.send(second, f"s{i}".encode(), partition=i % 2)
        await producer.flush()
    finally:
        await producer.stop()
    mapping = _mapping(tmp_path / "m.yaml", nats_url, kafka_bootstrap, stream, [first, second])
    await _copy(mapping, bridge_process, nc, stream, 240)
    filters = [f"{s}.{first}.>", f"{s}.{second}.>"]
    ends = {(first, p): 40 for p in range(3)} | {(second, p): 60 for p in range(2)}
    rng = random.Random(unique_name)

    legacy = f"{unique_name}-both"
    committed = {p: rng.randrange(1, 40) for p in range(3)}
    await _commit(kafka_bootstrap, legacy, first, committed)
    await _commit(kafka_bootstrap, legacy, second, {0: 60, 1: 60})
    plan = await _plan(nc, mapping, legacy, [first, second], filters)
    assert plan.lag == sum(40 - c for c in committed.values())
    seen = await _topic_offsets(nc, plan)
    assert Counter(seen) == Counter((first, p, o) for p, c in committed.items() for o in range(c, 40))

    legacy = f"{unique_name}-half"
    await _commit(kafka_bootstrap, legacy, first, committed)
    plan = await _plan(nc, mapping, legacy, [first, second], filters)
    assert sorted(why.split(":")[0] for why in plan.why_not()) == [f"{second}/0", f"{second}/1"]
    try:
        await position_kafka_durable(nc.jetstream(), plan, ConsumerConfig())
        raise AssertionError("a refused plan was carried out")
    except HandoffRefusedError:
        pass
    assert not await _has_consumer(nc, stream, legacy)
    plan = await _plan(nc, mapping, legacy, [first, second], filters, from_earliest_available=True)
    seen = await _topic_offsets(nc, plan)
    expected = [(first, p, o) for p, c in committed.items() for o in range(c, 40)]
    expected += [(second, p, o) for p in range(2) for o in range(ends[second, p])]
    assert Counter(seen) == Counter(expected)


async def _consume_all(nc: NatsClient, stream: str, durable: str) -> list[tuple[int, int]]:
    """What a JetStream consumer of the durable processes: (partition, offset), acked, in order."""
    return [(partition, offset) for _, partition, offset in await _read(nc, stream, durable)]


async def _read(nc: NatsClient, stream: str, durable: str) -> list[tuple[str, int, int]]:
    """(topic, partition, offset) of each message the durable delivers, acked, until it is idle.
    A fetch that times out says so as asyncio's TimeoutError (nats-py's subclasses it)."""
    subscription = await nc.jetstream().pull_subscribe_bind(durable=durable, stream=stream)
    seen: list[tuple[str, int, int]] = []
    while True:
        try:
            batch = await subscription.fetch(100, timeout=3)
        except TimeoutError:
            break
        for message in batch:
            headers = message.headers or {}
            seen.append((headers["Kafka-Topic"], int(headers["Kafka-Partition"]), int(headers["Kafka-Offset"])))
            await message.ack_sync()
    await subscription.unsubscribe()
    return seen


async def _topic_offsets(nc: NatsClient, plan: KafkaHandoffPlan) -> list[tuple[str, int, int]]:
    """Hand off, then what the durable delivers: (topic, partition, offset), each partition in order."""
    assert not plan.refused, plan.why_not()
    result = await position_kafka_durable(nc.jetstream(), plan, ConsumerConfig(ack_policy=AckPolicy.EXPLICIT))
    assert result.acked == plan.to_ack
    seen = await _read(nc, plan.stream, plan.durable)
    for lane in {(topic, p) for topic, p, _ in seen}:
        offsets = [o for topic, p, o in seen if (topic, p) == lane]
        assert offsets == sorted(offsets), lane
    return seen
