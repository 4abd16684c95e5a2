"""`handoff` for a Kafka group in the shadow phase, on real brokers: the bridge copied a topic of six
partitions, a legacy group processed a different random prefix of each, and the durable made by
the handoff delivers exactly what the group had not processed, from each partition's offset on."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka_helpers import BridgeProcess, fill_topic, wait_for_count, write_mapping
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from test_cutover import cli

from bridge.brokers.kafka.groups import group_position
from bridge.brokers.kafka.ranges import group_offsets
from bridge.config.loader import load_config
from bridge.config.sources import KafkaSource
from bridge.handoff.durable import HandoffRefusedError, position_kafka_durable
from bridge.handoff.kafka_plan import KafkaHandoffPlan, plan_kafka_handoff

PARTITIONS = 6
PER_PARTITION = 60


async def _copied(
    tmp_path: Path,
    nats_url: str,
    kafka_bootstrap: str,
    topic: str,
    name: str,
    bridge_process: Callable[[Path], BridgeProcess],
    nc: NatsClient,
) -> tuple[KafkaSource, str, str]:
    """The topic filled and copied by a bridge that then stopped: (source, stream, bridge group)."""
    stream, group = name.upper(), f"{name}-bridge"
    await fill_topic(kafka_bootstrap, topic, PARTITIONS * PER_PARTITION, PARTITIONS)
    mapping = write_mapping(
        tmp_path / "m.yaml", nats_url=nats_url, bootstrap=kafka_bootstrap, stream=stream, topic=topic, group=group
    )
    bridge = bridge_process(mapping)
    bridge.start()
    await wait_for_count(nc, stream, PARTITIONS * PER_PARTITION, timeout=120)
    assert bridge.terminate() == 0
    source = load_config(mapping).sources["kafka"]
    assert isinstance(source, KafkaSource)
    return source, stream, group


async def _commit(kafka_bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    """The legacy consumer group processed `offsets[p]` records of partition p, then stopped."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in offsets])
        await consumer.commit({TopicPartition(topic, p): offset for p, offset in offsets.items()})
    finally:
        await consumer.stop()


async def _plan(
    nc: NatsClient, source: KafkaSource, stream: str, bridge_group: str, legacy: str, topic: str, **options: bool
) -> KafkaHandoffPlan:
    group = await group_position(source, legacy, [topic])
    stored, _ = await group_offsets(source, bridge_group, purpose="test", seconds=15)
    return await plan_kafka_handoff(
        nc.jetstream(),
        stream=stream,
        durable="legacy-moved",
        filters=[f"{stream.lower()}.>"],
        group=group,
        stored_through=stored,
        **options,
    )


async def _consume_all(nc: NatsClient, stream: str, durable: str) -> list[tuple[int, int]]:
    """What a JetStream consumer of the durable processes: (partition, offset), acked, in order."""
    subscription = await nc.jetstream().pull_subscribe_bind(durable=durable, stream=stream)
    seen = []
    while True:
        try:
            batch = await subscription.fetch(100, timeout=3)
        except TimeoutError:  # nats-py's, or asyncio's when the fetch's deadline ran out first
            break
        for message in batch:
            headers = message.headers or {}
            seen.append((int(headers["Kafka-Partition"]), int(headers["Kafka-Offset"])))
            await message.ack_sync()
    await subscription.unsubscribe()
    return seen


async def test_the_durable_starts_at_each_partitions_committed_offset(
    tmp_path: Path,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: Callable[..., object],
    unique_name: str,
    bridge_process: Callable[[Path], BridgeProcess],
    nc: NatsClient,
) -> None:
    topic = await kafka_topic(partitions=PARTITIONS)  # type: ignore[misc]
    source, stream, bridge_group = await _copied(
        tmp_path, nats_url, kafka_bootstrap, topic, unique_name, bridge_process, nc
    )
    rng = random.Random(unique_name)
    processed = {p: rng.randrange(1, PER_PARTITION) for p in range(PARTITIONS)}
    processed[0], processed[1] = 0, PER_PARTITION  # one partition untouched, one fully processed
    legacy = f"{unique_name}-legacy"
    await _commit(kafka_bootstrap, legacy, topic, processed)

    plan = await _plan(nc, source, stream, bridge_group, legacy, topic)
    assert not plan.refused, plan.why_not()
    lag = sum(PER_PARTITION - offset for offset in processed.values())
    assert plan.lag == lag
    result = await position_kafka_durable(nc.jetstream(), plan, ConsumerConfig(ack_policy=AckPolicy.EXPLICIT))
    assert (result.pending, result.legacy_lag) == (lag, lag)
    assert result.matches
    assert result.acked > 0
    assert result.given_back > 0

    seen = await _consume_all(nc, stream, "legacy-moved")
    expected = {(p, offset) for p, done in processed.items() for offset in range(done, PER_PARTITION)}
    assert Counter(seen) == Counter(expected)  # nothing missing, nothing twice, nothing processed before
    for partition in range(PARTITIONS):
        offsets = [offset for p, offset in seen if p == partition]
        assert offsets == sorted(offsets), f"partition {partition} out of order"
        if processed[partition] < PER_PARTITION:
            assert offsets[0] == processed[partition]


async def test_handoff_refuses_what_it_cannot_do_exactly(
    tmp_path: Path,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: Callable[..., object],
    unique_name: str,
    bridge_process: Callable[[Path], BridgeProcess],
    nc: NatsClient,
) -> None:
    topic = await kafka_topic(partitions=PARTITIONS)  # type: ignore[misc]
    source, stream, bridge_group = await _copied(
        tmp_path, nats_url, kafka_bootstrap, topic, unique_name, bridge_process, nc
    )
    legacy = f"{unique_name}-legacy"

    # a partition the group never committed
    await _commit(kafka_bootstrap, legacy, topic, dict.fromkeys(range(1, PARTITIONS), 10))
    plan = await _plan(nc, source, stream, bridge_group, legacy, topic)
    assert any("never committed an offset" in why and f"{topic}/0" in why for why in plan.why_not())
    with pytest.raises(HandoffRefusedError, match="never committed"):
        await position_kafka_durable(nc.jetstream(), plan, ConsumerConfig())
    assert not plan.refused or not await _has_consumer(nc, stream, "legacy-moved")
    # ... unless told where to start
    plan = await _plan(nc, source, stream, bridge_group, legacy, topic, from_earliest_available=True)
    assert not plan.refused, plan.why_not()

    # the stream no longer keeps the group's position
    await _commit(kafka_bootstrap, legacy, topic, dict.fromkeys(range(PARTITIONS), 5))
    await nc.jetstream().purge_stream(stream, subject=f"{stream.lower()}.3", keep=20)
    plan = await _plan(nc, source, stream, bridge_group, legacy, topic)
    assert [why for why in plan.why_not() if "older than the first record" in why and f"{topic}/3" in why]

    # an active member in the legacy group
    member = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=legacy, enable_auto_commit=False)
    await member.start()
    try:
        await member.getmany(timeout_ms=3000)
        plan = await _plan(nc, source, stream, bridge_group, legacy, topic)
        assert any("still has 1 active member" in why for why in plan.why_not())
    finally:
        await member.stop()

    # the bridge behind the group
    await _commit(kafka_bootstrap, f"{unique_name}-ahead", topic, dict.fromkeys(range(PARTITIONS), PER_PARTITION))
    group = await group_position(source, f"{unique_name}-ahead", [topic])
    behind = await plan_kafka_handoff(
        nc.jetstream(),
        stream=stream,
        durable="x",
        filters=[f"{stream.lower()}.>"],
        group=group,
        stored_through=dict.fromkeys(group.committed, 30),
    )
    assert any("the bridge has stored up to offset 30" in why for why in behind.why_not())


async def _has_consumer(nc: NatsClient, stream: str, durable: str) -> bool:
    consumers = await nc.jetstream().consumers_info(stream)
    return any(info.name == durable for info in consumers)


async def test_the_handoff_command_moves_a_declared_consumer_and_consumers_plan_accepts_its_start(
    tmp_path: Path,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: Callable[..., object],
    unique_name: str,
    bridge_process: Callable[[Path], BridgeProcess],
    nc: NatsClient,
) -> None:
    """`nats-bridge handoff svc CONSUMER FILE` as an operator runs it, after `consumers apply`
    made the durable at the file's default start: --plan changes nothing, then the handoff
    makes it again at the group's positions, and `consumers plan` sees nothing to change."""
    topic = await kafka_topic(partitions=PARTITIONS)  # type: ignore[misc]
    _, stream, _ = await _copied(tmp_path, nats_url, kafka_bootstrap, topic, unique_name, bridge_process, nc)
    legacy = f"{unique_name}-legacy"
    processed = {p: 7 * p for p in range(PARTITIONS)}
    await _commit(kafka_bootstrap, legacy, topic, processed)
    mapping = tmp_path / "m.yaml"
    # A service of its own: phases live in NATS KV, shared by every test on this server.
    service = unique_name
    text = mapping.read_text().replace("\n  svc:\n", f"\n  {service}:\n")
    mapping.write_text(
        text
        + f"""    consumers:
      - name: ledger
        stream: {stream}
        filter_subjects: ["{stream.lower()}.>"]
        replaces: {{group: {legacy}}}
"""
    )
    code, out = await cli("consumers", "apply", str(mapping))
    assert code == 0, out
    code, out = await cli("handoff", service, "ledger", str(mapping), "--plan", "--json")
    assert code == 0, out
    planned = json.loads(out)
    assert planned["result"] is None
    assert planned["plan"]["legacy_lag"] == sum(PER_PARTITION - done for done in processed.values())
    info = await nc.jetstream().consumer_info(stream, "ledger")
    assert info.config.deliver_policy == DeliverPolicy.ALL  # --plan touched nothing

    code, out = await cli("handoff", service, "ledger", str(mapping))
    assert code == 0, out
    assert "vs legacy lag" in out
    assert ": match" in out
    code, out = await cli("consumers", "plan", str(mapping))
    assert code == 0, out  # the handed-off start is not a change to make, nor a refusal

    seen = await _consume_all(nc, stream, "ledger")
    assert Counter(seen) == Counter(
        (p, offset) for p, done in processed.items() for offset in range(done, PER_PARTITION)
    )
    code, out = await cli("handoff", service, "ledger", str(mapping))
    assert code == 2
    assert "has delivered messages already" in out

    # status says where it runs; the retire is not refused for it (only for the missing drain report)
    code, out = await cli("status", str(mapping), "--json", "--interval", "0.2s")
    assert code == 0, out
    [place] = json.loads(out)["services"][0]["consumers"]
    assert (place["consumer"], place["runs"]) == ("ledger", "jetstream")
    assert place["detail"].startswith(f"handed off from group {legacy} at ")
    code, out = await cli("cutover", service, str(mapping), "--to", "drain", "--reason", "producers move")
    assert code == 0, out
    code, out = await cli("handoff", service, "ledger", str(mapping), "--plan")
    assert code == 2
    assert "is in drain, and no reverse route of it writes from stream" in out
    code, out = await cli("cutover", service, str(mapping), "--to", "retired", "--reason", "done")
    assert code == 2
    assert "has not been reported drained yet" in out
    assert "still has consumer(s) on the legacy broker" not in out


async def test_a_service_whose_consumers_were_not_handed_off_is_not_retired(
    tmp_path: Path, nats_url: str, kafka_bootstrap: str, unique_name: str, nc: NatsClient
) -> None:
    stream = unique_name.upper()
    mapping = tmp_path / "m.yaml"
    mapping.write_text(f"""
nats: {{servers: ["{nats_url}"]}}
streams: [{{name: {stream}, subjects: ["{unique_name}.>"]}}]
sources:
  kafka: {{type: kafka, bootstrap_servers: ["{kafka_bootstrap}"]}}
services:
  {unique_name}:
    routes:
      - {{name: copy, source: kafka, from: {{topics: [{unique_name}]}}, to: "{unique_name}.{{partition}}"}}
    consumers:
      - {{name: ledger, stream: {stream}, replaces: {{group: {unique_name}-legacy}}}}
""")
    code, out = await cli("cutover", unique_name, str(mapping), "--to", "drain", "--reason", "producers move")
    assert code == 0, out
    code, out = await cli("cutover", unique_name, str(mapping), "--to", "retired", "--reason", "done")
    assert code == 2
    assert (
        f"service '{unique_name}' still has consumer(s) on the legacy broker: ledger (group '{unique_name}-legacy'"
        in out
    )
    code, out = await cli("status", str(mapping), "--service", unique_name, "--json", "--interval", "0.2s")
    [place] = json.loads(out)["services"][0]["consumers"]
    assert place["runs"] == "legacy"
    # --force retires it anyway (a consumer moved by other means), drained report or not
    code, out = await cli(
        "cutover", unique_name, str(mapping), "--to", "retired", "--reason", "moved by hand", "--force"
    )
    assert code == 0, out
