"""`nats-bridge verify` against real brokers, after a real `nats-bridge run`.

Each test lets the bridge copy something, checks that verify calls it clean (exit 0) with the
exact counts per lane, then damages the stream the way a real fault would — a message gone,
a message stored twice — and checks that verify names exactly those positions (exit 1).
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from kafka_helpers import BridgeProcess, fill_topic, stored_records, wait_for_count
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js import api as js_api

from bridge.brokers.kafka.records import kafka_message
from bridge.config import load_config
from bridge.mapping import CompiledRoute
from bridge.verify import DoubledRun, LaneParity, RouteParity, VerifyReport, verify, verify_command

BridgeFactory = Callable[[Path], BridgeProcess]
TopicFactory = Callable[..., Awaitable[str]]


def _by_lane(route: RouteParity) -> dict[str, LaneParity]:
    return {lane.lane: lane for lane in route.lanes}


async def _verify(mapping: Path) -> VerifyReport:
    report = await verify(load_config(mapping, env={}))
    assert report.errors == [], report.as_json()
    return report


async def _stored(js: JetStreamContext, stream: str) -> list[tuple[int, dict[str, str]]]:
    """(stream sequence, headers) of every message in the stream, in order."""
    total = (await js.stream_info(stream)).state.messages
    found: list[tuple[int, dict[str, str]]] = []
    config = js_api.ConsumerConfig(ack_policy=js_api.AckPolicy.NONE, headers_only=True)
    subscription = await js.pull_subscribe("", stream=stream, config=config)
    while len(found) < total:
        for message in await subscription.fetch(min(500, total - len(found)), timeout=20):
            found.append((message.metadata.sequence.stream, dict(message.headers or {})))
    await subscription.unsubscribe()
    return found


def _republishable(headers: dict[str, str] | None) -> dict[str, str]:
    """A stored message's headers without the server's `Nats-Batch-*` (the default `ordering:
    batched` stores them): republished with them, JetStream takes it for a broken batch (README,
    Order)."""
    return {name: value for name, value in (headers or {}).items() if not name.startswith("Nats-Batch-")}


async def _store_again(js: JetStreamContext, stream: str, seq: int, msg_id: str) -> None:
    """Publish a second copy of the message at `seq`, as a bridge that lost its dedup would."""
    original = await js.get_msg(stream, seq)
    headers = _republishable(original.headers)
    headers["Nats-Msg-Id"] = msg_id
    assert original.subject is not None
    ack = await js.publish(original.subject, original.data or b"", headers=headers)
    assert not ack.duplicate


async def _run_bridge(
    bridge_process: BridgeFactory, mapping: Path, nc: NatsClient, stream: str, count: int, dlq: tuple[str, int] | None
) -> None:
    """`nats-bridge run` until the stream (and dead-letter stream) hold `count` (and n), then SIGTERM:
    it drains and commits before it exits."""
    bridge = bridge_process(mapping)
    bridge.start()
    await wait_for_count(nc, stream, count, timeout=120, bridges=[bridge])
    if dlq is not None:
        await wait_for_count(nc, dlq[0], dlq[1], timeout=60, bridges=[bridge])
    await asyncio.sleep(1)  # anything extra would arrive now
    assert bridge.terminate() == 0, bridge.log()


# --------------------------------------------------------------------------- Kafka


async def _committed(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}


def _kafka_mapping(path: Path, *, nats_url: str, bootstrap: str, stream: str, topic: str, group: str) -> Path:
    s = stream.lower()
    path.write_text(
        textwrap.dedent(f"""\
            nats: {{servers: ["{nats_url}"]}}
            streams:
              - {{name: {stream}, subjects: ["{s}.>"]}}
            dead_letters: {{stream: {stream}_DLQ, subject_prefix: "{s}-dlq"}}
            sources:
              kafka: {{type: kafka, bootstrap_servers: ["{bootstrap}"]}}
            services:
              svc:
                routes:
                  - name: copy
                    source: kafka
                    from: {{topics: ["{topic}"], group: "{group}", tombstones: skip}}
                    to: "{s}.{{partition}}.{{key}}"
            """)
    )
    return path


async def _bridged_topic(
    tmp_path: Path,
    bridge_process: BridgeFactory,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    unique_name: str,
    nc: NatsClient,
) -> tuple[Path, str, str]:
    """A 2-partition topic with 21 records each, copied by a real bridge run:
    partition 0 ends with a keyless record (its `{key}` subject cannot be rendered: dead-lettered),
    partition 1 with a tombstone (`tombstones: skip`: not expected at all)."""
    topic = await kafka_topic(partitions=2)
    stream = unique_name.upper()
    await fill_topic(kafka_bootstrap, topic, 40, 2)  # offsets 0..19 on each partition, keys k<i>
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"no key", partition=0)  # p0 offset 20
        await producer.send_and_wait(topic, None, key=b"gone", partition=1)  # p1 offset 20
    finally:
        await producer.stop()
    mapping = _kafka_mapping(
        tmp_path / "m.yaml",
        nats_url=nats_url,
        bootstrap=kafka_bootstrap,
        stream=stream,
        topic=topic,
        group=f"bridge-{unique_name}",
    )
    await _run_bridge(bridge_process, mapping, nc, stream, 40, (f"{stream}_DLQ", 1))
    return mapping, topic, stream


@pytest.mark.kafka
@pytest.mark.nats
async def test_kafka_copy_by_a_real_bridge_run_verifies_clean(
    tmp_path: Path,
    bridge_process: BridgeFactory,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    unique_name: str,
    nc: NatsClient,
    jetstream: JetStreamContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mapping, topic, stream = await _bridged_topic(
        tmp_path, bridge_process, nats_url, kafka_bootstrap, kafka_topic, unique_name, nc
    )
    group = f"bridge-{unique_name}"
    committed_before = await _committed(kafka_bootstrap, group)
    assert committed_before == {(topic, 0): 21, (topic, 1): 21}
    report = await _verify(mapping)
    assert await _committed(kafka_bootstrap, group) == committed_before, "verify commits nothing"
    (route,) = report.routes
    assert (route.route, route.kind, route.error) == ("svc/copy", "kafka", None)
    assert route.streams == [stream]
    assert (route.stored, route.dead_lettered) == (40, 1)
    lanes = _by_lane(route)
    assert set(lanes) == {f"{topic}/0", f"{topic}/1"}
    p0, p1 = lanes[f"{topic}/0"], lanes[f"{topic}/1"]
    # Partition 0: offsets 0..20 committed; 20 stored once, the keyless record dead-lettered.
    assert (p0.first, p0.last) == (0, 20), json.dumps(report.as_json())
    assert (p0.expected, p0.stored_once, p0.dead_lettered, p0.not_expected) == (21, 20, 1, 0)
    # Partition 1: offsets 0..20; the skipped tombstone is not expected and not stored.
    assert (p1.first, p1.last) == (0, 20)
    assert (p1.expected, p1.stored_once, p1.dead_lettered, p1.not_expected) == (20, 20, 0, 1)
    for lane in (p0, p1):
        assert lane.missing == []
        assert lane.doubled == []
        assert (lane.unmatched, lane.outside) == (0, 0)
    assert report.ok
    assert report.exit_code == 0

    code = await asyncio.to_thread(verify_command, mapping, "svc", True)
    document = json.loads(capsys.readouterr().out)
    assert code == 0
    assert document["ok"] is True
    assert document["routes"][0]["lanes"][0]["missing"] == ""


@pytest.mark.kafka
@pytest.mark.nats
async def test_kafka_verify_names_the_deleted_offset_missing_and_the_republished_one_doubled(
    tmp_path: Path,
    bridge_process: BridgeFactory,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    unique_name: str,
    nc: NatsClient,
    jetstream: JetStreamContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mapping, topic, stream = await _bridged_topic(
        tmp_path, bridge_process, nats_url, kafka_bootstrap, kafka_topic, unique_name, nc
    )
    seqs = {(partition, offset): seq for partition, offset, seq in await stored_records(nc, stream)}
    assert await jetstream.delete_msg(stream, seqs[(0, 3)])
    await _store_again(jetstream, stream, seqs[(1, 5)], "a-different-id")

    report = await _verify(mapping)
    (route,) = report.routes
    lanes = _by_lane(route)
    p0, p1 = lanes[f"{topic}/0"], lanes[f"{topic}/1"]
    assert p0.missing == [(3, 3)]
    assert p0.missing_count == 1
    assert p0.doubled == []
    assert (p0.expected, p0.stored_once, p0.dead_lettered) == (21, 19, 1)
    assert p1.missing == []
    assert p1.doubled == [DoubledRun(5, 5, 2)]
    assert (p1.expected, p1.stored_once) == (20, 19)
    assert (route.missing_count, route.doubled_count) == (1, 1)
    assert not report.ok
    assert report.exit_code == 1

    code = await asyncio.to_thread(verify_command, mapping, None, True)
    document = json.loads(capsys.readouterr().out)
    assert code == 1
    lanes_json = {lane["lane"]: lane for lane in document["routes"][0]["lanes"]}
    assert lanes_json[f"{topic}/0"]["missing"] == "3"
    assert lanes_json[f"{topic}/1"]["doubled"] == [{"first": 5, "last": 5, "copies": 2}]

    code = await asyncio.to_thread(verify_command, mapping, None, False)
    text = capsys.readouterr().out
    assert code == 1
    assert "5 x2" in text
    assert "1 missing, 1 doubled" in text


async def _records(bootstrap: str, topic: str, partitions: int, per_partition: int) -> list[ConsumerRecord[Any, Any]]:
    """Every record of the topic, read without a group (assign + seek): nothing committed."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, partition) for partition in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found: list[ConsumerRecord[Any, Any]] = []
        deadline = time.monotonic() + 30
        while len(found) < partitions * per_partition:
            assert time.monotonic() < deadline, f"read {len(found)} records of {topic}"
            for batch in (await consumer.getmany(*tps, timeout_ms=1000)).values():
                found.extend(batch)
    finally:
        await consumer.stop()
    return found


async def _commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit `offsets` for `group`, as the bridge does once JetStream stored everything below."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


@pytest.mark.kafka
@pytest.mark.nats
async def test_kafka_verify_names_the_records_stored_after_a_later_offset_out_of_order(
    tmp_path: Path,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    unique_name: str,
    jetstream: JetStreamContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 20, item 1: verify checks order too. The stream holds partition 0's records with
    offset 10 stored before 5-9 (the fault the bridge's reorder detection names live: an earlier
    publish refused, a later one stored, the earlier one's resend after it), each exactly once,
    and the group committed past them all: verify must name 5-9 out of order, nothing missing
    or doubled, and exit 1. Partition 1, interleaved with it in the stream, is in order."""
    topic = await kafka_topic(partitions=2)
    stream = unique_name.upper()
    group = f"bridge-{unique_name}"
    await fill_topic(kafka_bootstrap, topic, 40, 2)  # offsets 0..19 on each partition
    mapping = _kafka_mapping(
        tmp_path / "m.yaml", nats_url=nats_url, bootstrap=kafka_bootstrap, stream=stream, topic=topic, group=group
    )
    config = load_config(mapping, env={})
    ((service, route_config),) = config.routes()
    route = CompiledRoute.compile(service, route_config)  # the bridge's own subjects, headers and Msg-Ids
    await jetstream.add_stream(name=stream, subjects=[f"{stream.lower()}.>"])
    by_lane = {(r.partition, r.offset): r for r in await _records(kafka_bootstrap, topic, 2, 20)}
    p0 = [*range(5), 10, *range(5, 10), *range(11, 20)]
    for p0_offset, p1_offset in zip(p0, range(20), strict=True):
        for partition, offset in ((0, p0_offset), (1, p1_offset)):
            outbound = route.map(kafka_message(by_lane[(partition, offset)]))
            assert outbound.headers["Kafka-Offset"] == str(offset)
            assert outbound.headers["Bridge-Route"] == "svc/copy"
            ack = await jetstream.publish(outbound.subject, outbound.payload, headers=dict(outbound.headers))
            assert ack.stream == stream
            assert not ack.duplicate
    await _commit(kafka_bootstrap, group, {TopicPartition(topic, 0): 20, TopicPartition(topic, 1): 20})

    code = await asyncio.to_thread(verify_command, mapping, None, True)
    document = json.loads(capsys.readouterr().out)
    assert code == 1, document
    assert document["ok"] is False
    (route_json,) = document["routes"]
    assert route_json["error"] is None
    assert (route_json["missing_count"], route_json["doubled_count"], route_json["out_of_order_count"]) == (0, 0, 5)
    lanes = {lane["lane"]: lane for lane in route_json["lanes"]}
    reordered, in_order = lanes[f"{topic}/0"], lanes[f"{topic}/1"]
    assert (reordered["first"], reordered["last"]) == (0, 19)
    assert reordered["out_of_order"] == "5-9"
    assert reordered["out_of_order_ranges"] == [[5, 9]]
    assert reordered["out_of_order_count"] == 5
    assert (reordered["expected"], reordered["stored_once"]) == (20, 20)
    for lane in (reordered, in_order):
        assert (lane["missing_count"], lane["doubled_count"]) == (0, 0)
    assert (in_order["out_of_order"], in_order["out_of_order_count"]) == ("", 0)

    code = await asyncio.to_thread(verify_command, mapping, None, False)
    text = capsys.readouterr().out
    assert code == 1
    assert f"out of order svc/copy {topic}/0: 5-9" in text
    assert "0 missing, 0 doubled, 5 out of order" in text


# --------------------------------------------------------------------------- RabbitMQ


def _rabbit_mapping(path: Path, *, nats_url: str, amqp_url: str, stream: str, route: str, window: str = "2m") -> Path:
    s = stream.lower()
    path.write_text(
        textwrap.dedent(f"""\
            nats: {{servers: ["{nats_url}"]}}
            streams:
              - {{name: {stream}, subjects: ["{s}.>"], duplicate_window: {window}}}
            dead_letters: {{stream: {stream}_DLQ, subject_prefix: "{s}-dlq"}}
            sources:
              rabbit: {{type: rabbitmq, url: "{amqp_url}", prefetch: 100}}
            services:
              svc:
                routes:
                  - {route}
            """)
    )
    return path


@pytest.mark.rabbitmq
@pytest.mark.nats
async def test_stream_queue_route_verifies_clean_then_reports_the_gaps(
    tmp_path: Path,
    bridge_process: BridgeFactory,
    rabbit_vhost_url: str,
    nats_url: str,
    unique_name: str,
    nc: NatsClient,
    jetstream: JetStreamContext,
) -> None:
    stream = unique_name.upper()
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel()
    await channel.declare_queue("events", durable=True, arguments={"x-queue-type": "stream"})
    for i in range(30):
        await channel.default_exchange.publish(aio_pika.Message(f"e{i}".encode()), routing_key="events")
    await connection.close()
    route = (
        "{name: events, source: rabbit, from: {queue: events, mode: stream, stream_offset: first}, "
        f'to: "{stream.lower()}.events"}}'
    )
    mapping = _rabbit_mapping(
        tmp_path / "m.yaml", nats_url=nats_url, amqp_url=rabbit_vhost_url, stream=stream, route=route
    )
    await _run_bridge(bridge_process, mapping, nc, stream, 30, None)

    report = await _verify(mapping)
    (parity,) = report.routes
    assert (parity.route, parity.kind, parity.error) == ("svc/events", "rabbitmq-stream", None)
    (lane,) = parity.lanes
    assert lane.lane == "events"
    assert (lane.first, lane.last) == (0, 29)
    assert (lane.expected, lane.stored_once, lane.missing, lane.doubled) == (30, 30, [], [])
    assert report.exit_code == 0

    offsets = {int(headers["Amqp-Stream-Offset"]): seq for seq, headers in await _stored(jetstream, stream)}
    assert sorted(offsets) == list(range(30))
    for offset in (0, 10, 11, 12):
        assert await jetstream.delete_msg(stream, offsets[offset])

    report = await _verify(mapping)
    (lane,) = report.routes[0].lanes
    assert (lane.first, lane.last) == (0, 29), "stream_offset: first: the range starts at the queue's first offset"
    assert lane.missing == [(0, 0), (10, 12)]
    assert lane.missing_count == 4
    assert (lane.expected, lane.stored_once, lane.doubled) == (30, 26, [])
    assert report.exit_code == 1


@pytest.mark.rabbitmq
@pytest.mark.nats
async def test_queue_route_verify_reports_a_msg_id_stored_twice(
    tmp_path: Path,
    bridge_process: BridgeFactory,
    rabbit_vhost_url: str,
    nats_url: str,
    unique_name: str,
    nc: NatsClient,
    jetstream: JetStreamContext,
) -> None:
    stream = unique_name.upper()
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel()
    await channel.declare_queue("work", durable=True)
    for i in range(20):
        await channel.default_exchange.publish(aio_pika.Message(f"w{i}".encode(), message_id=f"m-{i}"), "work")
    await connection.close()
    route = f'{{name: drain, source: rabbit, from: {{queue: work}}, to: "{stream.lower()}.work"}}'
    mapping = _rabbit_mapping(
        tmp_path / "m.yaml", nats_url=nats_url, amqp_url=rabbit_vhost_url, stream=stream, route=route, window="1s"
    )
    await _run_bridge(bridge_process, mapping, nc, stream, 20, None)

    report = await _verify(mapping)
    (parity,) = report.routes
    assert (parity.route, parity.kind, parity.error) == ("svc/drain", "rabbitmq-queue", None)
    assert parity.lanes == []
    assert (parity.stored, parity.distinct_ids, parity.doubled_ids) == (20, 20, [])
    assert parity.note is not None
    assert "Completeness needs the bridge's own accounting" in parity.note
    assert "Order cannot be checked either" in parity.note
    assert report.exit_code == 0

    # Past the 1 s duplicate window, the same Msg-Id is stored again (a redelivery after an outage).
    by_id = {headers["Nats-Msg-Id"]: seq for seq, headers in await _stored(jetstream, stream)}
    deadline = time.monotonic() + 30
    while True:
        original = await jetstream.get_msg(stream, by_id["svc/drain/m-7"])
        assert original.subject is not None
        ack = await jetstream.publish(original.subject, original.data or b"", headers=_republishable(original.headers))
        if not ack.duplicate:
            break
        assert time.monotonic() < deadline, "the duplicate window never passed"
        await asyncio.sleep(0.5)

    report = await _verify(mapping)
    (parity,) = report.routes
    assert parity.doubled_ids == [("svc/drain/m-7", 2)]
    assert (parity.stored, parity.distinct_ids) == (21, 20)
    assert report.exit_code == 1


# --------------------------------------------------------------------------- cannot check


@pytest.mark.nats
async def test_verify_exits_2_when_it_cannot_check_and_says_why(
    tmp_path: Path, nats_url: str, unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = unique_name.upper()
    route = f'{{name: drain, source: rabbit, from: {{queue: work}}, to: "{stream.lower()}.work"}}'
    # The stream was never created (the bridge never ran): nothing to compare.
    never_ran = _rabbit_mapping(
        tmp_path / "m.yaml", nats_url=nats_url, amqp_url="amqp://guest:guest@127.0.0.1:1/", stream=stream, route=route
    )
    report = await verify(load_config(never_ran, env={}))
    (parity,) = report.routes
    assert parity.error == f"stream {stream} does not exist on the server"
    assert report.exit_code == 2
    assert not report.ok

    # NATS is not there at all.
    down = tmp_path / "down.yaml"
    down.write_text(never_ran.read_text().replace(nats_url, "nats://127.0.0.1:1"))
    report = await verify(load_config(down, env={}))
    assert report.routes == []
    assert len(report.errors) == 1
    assert report.errors[0].startswith("cannot connect to NATS at nats://127.0.0.1:1")
    assert report.exit_code == 2

    # A service the file does not have, and a file that does not load.
    code = await asyncio.to_thread(verify_command, never_ran, "billing", True)
    document = json.loads(capsys.readouterr().out)
    assert code == 2
    assert document["errors"] == ["no service 'billing' in the mapping file (services: svc)"]
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\nservices: {}\nsourcs: {}\n")
    code = await asyncio.to_thread(verify_command, broken, None, False)
    assert code == 2
    assert "sourcs" in capsys.readouterr().err


# --------------------------------------------------------------------------- --repair


@pytest.mark.kafka
@pytest.mark.nats
async def test_verify_repair_copies_the_lost_records_again_with_their_ids_once_jetstream_forgets_them(
    tmp_path: Path,
    bridge_process: BridgeFactory,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    unique_name: str,
    nc: NatsClient,
    jetstream: JetStreamContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 20, item 3: JetStream lost acknowledged records the group has long committed past.
    `verify --repair` reads exactly those offsets from Kafka and publishes them again, mapped by
    the route (same subject, headers and Nats-Msg-Id). While JetStream still remembers a lost
    record's id (its duplicate window; a deleted message leaves its id behind, a rolled-back
    store does not) it cannot be stored under that id: --repair says so and exits 1; once the
    window has passed, it stores them, and the second check is clean (exit 0). A record the
    route dead-letters (p0's keyless offset 20) is not copied anew."""
    topic = await kafka_topic(partitions=2)
    stream = unique_name.upper()
    await fill_topic(kafka_bootstrap, topic, 40, 2)
    mapping = _kafka_mapping(
        tmp_path / "m.yaml",
        nats_url=nats_url,
        bootstrap=kafka_bootstrap,
        stream=stream,
        topic=topic,
        group=f"bridge-{unique_name}",
    )
    mapping.write_text(
        mapping.read_text().replace(
            f'subjects: ["{stream.lower()}.>"]}}', f'subjects: ["{stream.lower()}.>"], duplicate_window: 2s}}'
        )
    )
    assert "duplicate_window: 2s" in mapping.read_text()
    await _run_bridge(bridge_process, mapping, nc, stream, 40, None)
    before = {(p, o): (seq) for p, o, seq in await stored_records(nc, stream)}
    original = {
        key: await jetstream.get_msg(stream, seq) for key, seq in before.items() if key in {(0, 3), (1, 7), (1, 8)}
    }
    for key in ((0, 3), (1, 7), (1, 8)):
        assert await jetstream.delete_msg(stream, before[key])

    code = await asyncio.to_thread(verify_command, mapping, None, True, True)
    document = json.loads(capsys.readouterr().out)
    assert code == 1, document
    repaired = {lane["lane"]: lane for lane in document["repair"]["lanes"]}
    assert repaired[f"{topic}/0"]["missing"] == "3"
    assert repaired[f"{topic}/1"]["missing"] == "7-8"
    remembered = repaired[f"{topic}/0"]["id_still_remembered"] + repaired[f"{topic}/1"]["id_still_remembered"]
    assert remembered == [3, 7, 8], document["repair"]

    await asyncio.sleep(3)  # the 2 s duplicate window passes: JetStream forgets the lost ids
    code = await asyncio.to_thread(verify_command, mapping, None, False, True)
    text = capsys.readouterr().out
    assert code == 0, text
    assert f"repaired svc/copy {topic}/0: 1 of the missing 3 copied again" in text
    assert f"repaired svc/copy {topic}/1: 2 of the missing 7-8 copied again" in text
    records = await stored_records(nc, stream)
    assert sorted((p, o) for p, o, _ in records) == sorted(before), "each record once, the lost ones again"
    for key, message in original.items():
        seq = next(seq for p, o, seq in records if (p, o) == key)
        again = await jetstream.get_msg(stream, seq)
        assert again.subject == message.subject
        assert again.data == message.data
        assert (again.headers or {}).get("Nats-Msg-Id") == (message.headers or {}).get("Nats-Msg-Id")

    code = await asyncio.to_thread(verify_command, mapping, None, False, True)
    assert code == 0
    assert "repair: nothing was missing" in capsys.readouterr().out


@pytest.mark.rabbitmq
@pytest.mark.nats
async def test_verify_repair_copies_a_stream_queues_lost_offsets_again(
    tmp_path: Path,
    bridge_process: BridgeFactory,
    rabbit_vhost_url: str,
    nats_url: str,
    unique_name: str,
    nc: NatsClient,
    jetstream: JetStreamContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same for a RabbitMQ stream queue: the lost offsets are read from the queue (a stream
    keeps what is read) and stored again with their ids; the second check is clean."""
    stream = unique_name.upper()
    connection = await aio_pika.connect(rabbit_vhost_url)
    channel = await connection.channel()
    await channel.declare_queue("events", durable=True, arguments={"x-queue-type": "stream"})
    for i in range(30):
        await channel.default_exchange.publish(aio_pika.Message(f"e{i}".encode()), routing_key="events")
    await connection.close()
    route = (
        "{name: events, source: rabbit, from: {queue: events, mode: stream, stream_offset: first}, "
        f'to: "{stream.lower()}.events"}}'
    )
    mapping = _rabbit_mapping(
        tmp_path / "m.yaml", nats_url=nats_url, amqp_url=rabbit_vhost_url, stream=stream, route=route, window="1s"
    )
    await _run_bridge(bridge_process, mapping, nc, stream, 30, None)
    offsets = {int(headers["Amqp-Stream-Offset"]): seq for seq, headers in await _stored(jetstream, stream)}
    for offset in (0, 10, 11, 12):
        assert await jetstream.delete_msg(stream, offsets[offset])
    await asyncio.sleep(2.5)  # past the 1 s duplicate window: JetStream forgot the lost ids

    code = await asyncio.to_thread(verify_command, mapping, None, True, True)
    document = json.loads(capsys.readouterr().out)
    assert code == 0, document
    (lane,) = document["repair"]["lanes"]
    assert (lane["lane"], lane["missing"], lane["republished"]) == ("events", "0, 10-12", 4), lane
    stored = {int(headers["Amqp-Stream-Offset"]) for _, headers in await _stored(jetstream, stream)}
    assert stored == set(range(30))
    assert (await jetstream.stream_info(stream)).state.messages == 30
