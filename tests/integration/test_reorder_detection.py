"""A reorder is never silent (issue 20, item 1: detection in every mode).

JetStream can store a later record of a lane while refusing or losing an earlier one that was
in flight with it: a stream leader stopping without lame duck mode drops publishes it had
received, a full stream refuses one and has room for the next. The resend of the earlier
record then lands after the later one. The bridge settles a lane in position order, so it sees
it from the PubAck sequences: a record stored at a lower sequence than an earlier one.

Made certain here with a real stream limit: `max_msgs_per_subject: 1` with per-subject
`discard: new`, one subject already holding its message. Offset 0 of a one-partition topic maps
to that subject and is refused; offsets 1 and 2, in flight with it, map to other subjects and
are stored (the test makes the stream: the mapping file's stream keys do not include the
per-subject limit, and the bridge leaves an existing stream's other settings alone). The test
then purges the full subject, the resend of offset 0 is stored after them,
and the bridge must say so: an ERROR naming the lane, the positions and the sequences, the
`messages_reordered_total` metric, and `/status`.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from aiokafka import AIOKafkaProducer
from kafka_helpers import BridgeProcess, stored_records, wait_for_count
from nats.js import api as js_api

pytestmark = [pytest.mark.kafka, pytest.mark.nats, pytest.mark.timeout(180)]

TopicFactory = Callable[..., Awaitable[str]]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


async def _clean_up(bridge: BridgeProcess, nc: nats.NATS, *streams: str) -> None:
    if bridge.alive():
        bridge.kill()
    for stream in streams:
        await nc.jetstream().delete_stream(stream)
    await nc.close()


async def _full_subject_setup(
    tmp_path: Path, nats_url: str, kafka_bootstrap: str, topic: str, unique_name: str, ordering: str
) -> tuple[nats.NATS, str, str, Path]:
    """A stream whose subject `<s>.a` is full (one message per subject, discard new per subject),
    three records keyed a, b, c in one partition, and a mapping sending each to `<s>.<key>`.
    Returns the client, stream, subject prefix and mapping file."""
    stream, subject = unique_name.upper(), unique_name.lower()
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(
        js_api.StreamConfig(
            name=stream,
            subjects=[f"{subject}.>"],
            max_msgs_per_subject=1,
            discard=js_api.DiscardPolicy.NEW,
            discard_new_per_subject=True,
        )
    )
    await js.publish(f"{subject}.a", b"already here")  # the subject offset 0 maps to is full
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for key in (b"a", b"b", b"c"):
            await producer.send_and_wait(topic, value=b"record " + key, key=key, partition=0)
    finally:
        await producer.stop()
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        f'nats:\n  servers: ["{nats_url}"]\n'
        f'streams:\n  - name: {stream}\n    subjects: ["{subject}.>"]\n'
        f'sources:\n  kafka:\n    type: kafka\n    bootstrap_servers: ["{kafka_bootstrap}"]\n'
        "services:\n  svc:\n    routes:\n      - name: copy\n        source: kafka\n"
        f"        ordering: {ordering}\n"
        f'        from: {{topics: ["{topic}"], group: "bridge-{subject}"}}\n'
        f'        to: "{subject}.{{key}}"\n'
    )
    return nc, stream, subject, mapping


async def test_a_record_stored_after_a_later_one_of_its_partition_is_an_error_a_metric_and_a_status_entry(
    tmp_path: Path, nats_url: str, kafka_bootstrap: str, kafka_topic: TopicFactory, unique_name: str
) -> None:
    topic = await kafka_topic(partitions=1)
    nc, stream, subject, mapping = await _full_subject_setup(
        tmp_path, nats_url, kafka_bootstrap, topic, unique_name, "pipelined"
    )
    js = nc.jetstream()
    bridge = BridgeProcess(mapping, tmp_path / "bridge.log", args=("--http", "127.0.0.1:0"))
    bridge.start()
    try:
        base = await bridge.http_url()
        # Offsets 1 and 2 are stored while offset 0 is refused (the subject is full).
        await wait_for_count(nc, stream, 3, 60, bridges=[bridge])
        await bridge.wait_for_log("maximum messages per subject", timeout=30)
        await js.purge_stream(stream, subject=f"{subject}.a")
        await wait_for_count(nc, stream, 3, 60, bridges=[bridge])
        deadline = time.monotonic() + 30
        while "stored a later in-flight publish" not in bridge.log_path.read_text():
            assert time.monotonic() < deadline, f"no reorder ERROR:\n{bridge.log()}"
            assert bridge.alive(), bridge.log()
            await asyncio.sleep(0.2)

        records = await stored_records(nc, stream)
        assert [offset for _, offset, _ in records] == [1, 2, 0], records  # the reorder itself
        seq_of = {offset: seq for _, offset, seq in records}

        errors = [line for line in bridge.log_path.read_text().splitlines() if "ERROR" in line]
        assert len(errors) == 1, errors
        line = errors[0]
        assert f"lane {topic}/0" in line, line
        assert f"position 1 is stored at sequence {seq_of[1]} of stream {stream}" in line, line
        assert f"1 earlier record(s) (positions 0-0, stored at sequences {seq_of[0]}-{seq_of[0]})" in line, line
        assert "lame duck" in line, line

        metrics = await asyncio.to_thread(_get, base + "/metrics")
        wanted = 'nats_bridge_messages_reordered_total{route="copy",service="svc"} 1.0'
        assert wanted in metrics, [m for m in metrics.splitlines() if "reordered" in m]
        status: dict[str, Any] = json.loads(await asyncio.to_thread(_get, base + "/status"))
        route = status["routes"][0]
        assert route["reordered"] == 1, route
        assert f"lane {topic}/0: position 1" in route["last_reorder"], route
        assert bridge.terminate(timeout=60) == 0, bridge.log()
    finally:
        await _clean_up(bridge, nc, stream)


@pytest.mark.parametrize("ordering", ["strict", "batched"])
async def test_records_stored_in_order_through_a_refusal_are_no_reorder(
    ordering: str, tmp_path: Path, nats_url: str, kafka_bootstrap: str, kafka_topic: TopicFactory, unique_name: str
) -> None:
    """The check cannot cry wolf: the same refusal with `ordering: strict` (one publish in flight
    per partition) stores 0, 1, 2 in order, and nothing is reported. So does `ordering: batched`:
    the three go as one atomic batch, refused whole for offset 0, then one at a time. (The stream
    exists without allow_atomic: the bridge allows atomic publishes on it.)"""
    topic = await kafka_topic(partitions=1)
    nc, stream, subject, mapping = await _full_subject_setup(
        tmp_path, nats_url, kafka_bootstrap, topic, unique_name, ordering
    )
    js = nc.jetstream()
    bridge = BridgeProcess(mapping, tmp_path / "bridge.log", args=("--http", "127.0.0.1:0"))
    bridge.start()
    try:
        base = await bridge.http_url()
        await bridge.wait_for_log("maximum messages per subject", timeout=60)
        await js.purge_stream(stream, subject=f"{subject}.a")
        await wait_for_count(nc, stream, 3, 60, bridges=[bridge])
        records = await stored_records(nc, stream)
        assert [offset for _, offset, _ in records] == [0, 1, 2], records
        status: dict[str, Any] = json.loads(await asyncio.to_thread(_get, base + "/status"))
        assert status["routes"][0]["reordered"] == 0, status["routes"][0]
        assert "stored a later in-flight publish" not in bridge.log_path.read_text()
        if ordering == "batched":
            assert (await js.stream_info(stream)).config.allow_atomic, "atomic publishes not allowed"
            assert status["nats"]["atomic_batches"] >= 1, status["nats"]
        assert bridge.terminate(timeout=60) == 0, bridge.log()
    finally:
        await _clean_up(bridge, nc, stream)


@pytest.mark.parametrize("chosen", [True, False], ids=["ordering-batched", "ordering-default"])
async def test_batched_into_a_stream_without_allow_atomic_sends_one_at_a_time_in_order(
    chosen: bool, tmp_path: Path, nats_url: str, kafka_bootstrap: str, kafka_topic: TopicFactory, unique_name: str
) -> None:
    """A stream the mapping file does not declare (so the bridge does not give it allow_atomic)
    refuses atomic batches (err_code 10174): the route says so once and sends there one message at
    a time, every record stored once, in order. A route left to the default ordering reaches no
    replicated stream of the file, so it publishes pipelined from the start, with nothing to say."""
    topic = await kafka_topic(partitions=1)
    stream, subject = unique_name.upper(), unique_name.lower()
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(js_api.StreamConfig(name=stream, subjects=[f"{subject}.>"]))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for n in range(200):
            await producer.send(topic, value=b"record", key=str(n).encode(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        f'nats:\n  servers: ["{nats_url}"]\n'
        f'streams:\n  - name: {stream}_OTHER\n    subjects: ["{subject}-other.>"]\n'
        f'sources:\n  kafka:\n    type: kafka\n    bootstrap_servers: ["{kafka_bootstrap}"]\n'
        "services:\n  svc:\n    routes:\n      - name: copy\n        source: kafka\n"
        + ("        ordering: batched\n" if chosen else "")
        + f'        from: {{topics: ["{topic}"], group: "bridge-{subject}"}}\n'
        f'        to: "{subject}.{{partition}}"\n'
    )
    bridge = BridgeProcess(mapping, tmp_path / "bridge.log", args=("--http", "127.0.0.1:0"))
    bridge.start()
    try:
        await wait_for_count(nc, stream, 200, 60, bridges=[bridge])
        await asyncio.sleep(1)  # anything stored twice would be there now
        records = await stored_records(nc, stream)
        assert [offset for _, offset, _ in records] == list(range(200)), records
        warnings = [line for line in bridge.log_path.read_text().splitlines() if "allow_atomic" in line]
        if chosen:
            assert len(warnings) == 1, warnings
            assert f"'{subject}.0'" in warnings[0], warnings[0]
            assert "sent one at a time" in warnings[0], warnings[0]
        else:
            assert warnings == []
        assert not (await js.stream_info(stream)).config.allow_atomic  # not the bridge's stream: left alone
        status = json.loads(await asyncio.to_thread(_get, await bridge.http_url() + "/status"))
        assert status["routes"][0]["ordering"] == ("batched" if chosen else "pipelined"), status["routes"][0]
        assert bridge.terminate(timeout=60) == 0, bridge.log()
    finally:
        await _clean_up(bridge, nc, stream, f"{stream}_OTHER")
