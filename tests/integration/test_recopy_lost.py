"""When JetStream loses messages it acknowledged, the bridge copies them again from Kafka.

JetStream acknowledges before fsync by default, and a store restored from a backup (or a
power loss) forgets acknowledged writes; the KV checkpoints roll back with it, while Kafka's
committed offsets do not. Simulated exactly: a NATS store copied at 1,000 of 2,000 copied
records and restored, then 1,000 more produced. The bridge used to resume at the group's
commit and leave the 1,000 lost records out for good (2,000 of 3,000 in the stream).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import nats
import pytest
from kafka_helpers import (
    BridgeProcess,
    describe_duplicates,
    fill_topic,
    stored_records,
    wait_for_count,
    write_mapping,
)
from private_nats import PrivateNatsServer

from bridge.config import load_config
from bridge.verify import verify

if TYPE_CHECKING:
    from conftest import TopicFactory

pytestmark = [pytest.mark.kafka, pytest.mark.nats]


async def _copy_until(bridge: BridgeProcess, url: str, stream: str, count: int) -> None:
    client = await nats.connect(url)
    try:
        bridge.start()
        await wait_for_count(client, stream, count, timeout=120, bridges=[bridge])
        assert bridge.terminate() == 0, bridge.log()
    finally:
        await client.close()


def _private_nats_and_mapping(
    tmp_path: Path, bootstrap: str, topic: str, unique_name: str
) -> tuple[PrivateNatsServer, str, Path]:
    """A started nats-server of the test's own (its store is what gets rolled back), and a mapping
    copying `topic` into a stream on it."""
    server = PrivateNatsServer(tmp_path / "nats")
    server.start()
    stream = unique_name.upper()
    mapping = write_mapping(
        tmp_path / "m.yaml",
        nats_url=server.url,
        bootstrap=bootstrap,
        stream=stream,
        topic=topic,
        group=f"bridge-{unique_name}",
    )
    return server, stream, mapping


def _assert_each_record_once(records: list[tuple[int, int, int]], partitions: int, per_partition: int) -> None:
    keys = sorted((partition, offset) for partition, offset, _ in records)
    assert keys == [(p, o) for p in range(partitions) for o in range(per_partition)], describe_duplicates(records)


async def test_records_a_restored_nats_store_lost_are_copied_again_once(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: TopicFactory, unique_name: str
) -> None:
    partitions, batch = 2, 1000
    topic = await kafka_topic(partitions=partitions)
    server, stream, mapping = _private_nats_and_mapping(tmp_path, kafka_bootstrap, topic, unique_name)
    logs = tmp_path / "bridge.log"
    await fill_topic(kafka_bootstrap, topic, batch, partitions)
    await _copy_until(BridgeProcess(mapping, logs), server.url, stream, batch)
    server.stop()
    backup = tmp_path / "backup"
    shutil.copytree(server.store_dir / "js", backup)
    server.start()
    await fill_topic(kafka_bootstrap, topic, batch, partitions)
    await _copy_until(BridgeProcess(mapping, logs), server.url, stream, 2 * batch)
    server.stop()
    shutil.rmtree(server.store_dir / "js")
    shutil.copytree(backup, server.store_dir / "js")  # the store as it was at 1,000
    server.start()
    await fill_topic(kafka_bootstrap, topic, batch, partitions)
    last = BridgeProcess(mapping, tmp_path / "after-restore.log")
    try:
        await _copy_until(last, server.url, stream, 3 * batch)
        client = await nats.connect(server.url)
        try:
            records = await stored_records(client, stream)
        finally:
            await client.close()
        # The copies made again land after later records on purpose and say so (Bridge-Recopied):
        # verify counts them, and does not call them out of order.
        report = await verify(load_config(mapping, env={}))
    finally:
        if last.alive():
            last.kill()
        server.stop()
    _assert_each_record_once(records, partitions, 3 * batch // partitions)
    text = last.log_path.read_text()
    assert "JetStream lost acknowledged messages" in text, last.log()
    # Each partition names its lost range: the 500 records per partition copied before the copy
    # of the store was taken survived, the next 500 were lost.
    for partition in range(partitions):
        assert f"{topic}/{partition}: 500 record(s) the group committed are in no stream (offsets 500-999)" in text
    (route,) = report.routes
    assert (route.missing_count, route.doubled_count, route.out_of_order_count) == (0, 0, 0), report.as_json()
    assert report.exit_code == 0, report.as_json()
    assert "1000 stored record(s) carry Bridge-Recopied" in (route.note or ""), route.note


async def _count_when_up(url: str, stream: str, count: int) -> None:
    client = await nats.connect(url)
    try:
        await wait_for_count(client, stream, count, timeout=120)
    finally:
        await client.close()


async def test_a_running_bridge_seeing_jetstream_forget_acknowledged_records_exits_1_and_its_restart_copies_them(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: TopicFactory, unique_name: str
) -> None:
    """The bridge never restarts between the copy and the loss: only the reconnect can tell. A
    graceful NATS restart (store intact) must not be taken for a loss; the rolled-back store must
    be: ERROR, exit 1, and the supervisor's restart copies the lost records again, once."""
    partitions, batch = 2, 600  # 300 a partition: a fetch (500 records) runs past the end of a lost range
    topic = await kafka_topic(partitions=partitions)
    server, stream, mapping = _private_nats_and_mapping(tmp_path, kafka_bootstrap, topic, unique_name)
    running = BridgeProcess(mapping, tmp_path / "running.log")
    restarted = BridgeProcess(mapping, tmp_path / "restarted.log")
    try:
        await fill_topic(kafka_bootstrap, topic, batch, partitions)
        running.start()
        await _count_when_up(server.url, stream, batch)
        await asyncio.sleep(3)  # settled and checkpointed (every 0.5 s): the copy holds a checkpoint
        server.stop()  # graceful: the store keeps everything it acknowledged
        backup = tmp_path / "backup"
        shutil.copytree(server.store_dir / "js", backup)
        server.start()
        await fill_topic(kafka_bootstrap, topic, batch, partitions)
        await _count_when_up(server.url, stream, 2 * batch)
        assert running.alive(), running.log()
        assert "JetStream lost acknowledged messages" not in running.log_path.read_text()
        server.stop(kill=True)  # a power loss: back to the copy taken at 1,000
        shutil.rmtree(server.store_dir / "js")
        shutil.copytree(backup, server.store_dir / "js")
        server.start()
        code = await asyncio.to_thread(running.process.wait, 90) if running.process else None
        text = running.log_path.read_text()
        assert code == 1, running.log()
        assert "JetStream lost acknowledged messages: stream " + stream in text, running.log()
        await fill_topic(kafka_bootstrap, topic, batch, partitions)
        restarted.start()
        await _count_when_up(server.url, stream, 3 * batch)
        client = await nats.connect(server.url)
        try:
            await asyncio.sleep(2)  # anything copied twice would be there now
            records = await stored_records(client, stream)
        finally:
            await client.close()
        assert restarted.terminate() == 0, restarted.log()
        # Exactly the lost records say they were copied again; the new ones read right after
        # them in the same fetch do not (they were marked too, before the mark ended with its range).
        report = await verify(load_config(mapping, env={}))
    finally:
        for bridge in (running, restarted):
            if bridge.alive():
                bridge.kill()
        server.stop()
    _assert_each_record_once(records, partitions, 3 * batch // partitions)
    assert "copying them again" in restarted.log_path.read_text(), restarted.log()
    (route,) = report.routes
    assert (route.missing_count, route.doubled_count, route.out_of_order_count) == (0, 0, 0), report.as_json()
    assert f"{batch} stored record(s) carry Bridge-Recopied" in (route.note or ""), route.note
