"""`ordering: batched` with more lanes than nats-server keeps atomic batches open per stream.

nats-server refuses a stream's 51st open atomic batch (`max_batch_inflight_per_stream`, 50 by
default). A Kafka topic with 64 partitions read by one bridge into one stream has 64 lanes, each
with a batch in flight under load. That limit counts batches open on the server (first message
seen, commit not yet), and the publisher writes each batch whole, commit included, in one go on
its one connection: the server sees them one after another, not 64 at once. Checked here: every
record is stored once, in partition order, and no publish is refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import pytest
from kafka_helpers import BridgeProcess, describe_duplicates, fill_topic, stored_records, wait_for_count, write_mapping

pytestmark = [pytest.mark.kafka, pytest.mark.nats, pytest.mark.timeout(240)]

TopicFactory = Callable[..., Awaitable[str]]
PARTITIONS = 64
PER_PARTITION = 300


async def test_sixty_four_partitions_batched_into_one_stream_store_every_record_once_in_order(
    tmp_path: Path, nats_url: str, kafka_bootstrap: str, kafka_topic: TopicFactory, unique_name: str
) -> None:
    topic = await kafka_topic(partitions=PARTITIONS)
    stream = unique_name.upper()
    total = PARTITIONS * PER_PARTITION
    await fill_topic(kafka_bootstrap, topic, total, PARTITIONS)  # the backlog: every lane has a full batch
    mapping = write_mapping(
        tmp_path / "m.yaml",
        nats_url=nats_url,
        bootstrap=kafka_bootstrap,
        stream=stream,
        topic=topic,
        group=f"bridge-{unique_name}",
        ordering="batched",
    )
    bridge = BridgeProcess(mapping, tmp_path / "bridge.log")
    nc = await nats.connect(nats_url)
    try:
        bridge.start()
        await wait_for_count(nc, stream, total, timeout=180, bridges=[bridge])
        assert bridge.terminate(timeout=60) == 0, bridge.log()
        records = await stored_records(nc, stream)
        assert len(records) == total, describe_duplicates(records)
        by_partition: dict[int, list[int]] = {}
        for partition, offset, _ in records:  # in stream order
            by_partition.setdefault(partition, []).append(offset)
        assert sorted(by_partition) == list(range(PARTITIONS))
        for partition, offsets in by_partition.items():
            assert offsets == list(range(PER_PARTITION)), f"partition {partition} out of order or incomplete"
        text = bridge.log_path.read_text()
        assert "publish failed" not in text, [line for line in text.splitlines() if "publish failed" in line][:5]
        assert "ERROR" not in text, bridge.log()
    finally:
        if bridge.alive():
            bridge.kill()
        await nc.jetstream().delete_stream(stream)
        await nc.close()
