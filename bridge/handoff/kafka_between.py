"""What lies in a Kafka partition between two offsets that the bridge would store.

Offsets are not records: a transaction's commit marker takes an offset, an aborted transaction's
records are never read (the bridge reads read_committed), and a route filters some records (a
tombstone with `tombstones: skip`, what a reverse route wrote). A consumer's committed offset
steps past all of those, and so may stand where the stream has nothing: past the bridge's own
committed offset (which stops after the last record it read, before a final marker), or before
the partition's first stored record (a skipped tombstone at offset 0). Neither means the bridge
is behind or the stream lost records, when nothing between the two offsets would have been
stored; only Kafka can say that, so the handoff asks it: read the range, count what the route
copies. Records are read without a group and nothing is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from bridge.brokers.kafka import client
from bridge.brokers.kafka.groups import Partition
from bridge.brokers.kafka.records import kafka_message
from bridge.config.sources import KafkaSource
from bridge.decide import filtered_reason
from bridge.mapping import CompiledRoute

# How many records in [low, high) the route would store; None when Kafka cannot say.
CopiedBetween = Callable[[Partition, int, int], Awaitable[int | None]]
FETCH_MS = 1000


def copied_between(source: KafkaSource, route: CompiledRoute, *, seconds: float) -> CopiedBetween:
    """A CopiedBetween reading `source` for `route`: None when the range starts below what Kafka
    keeps, or the read does not reach `high` within `seconds` (then the handoff refuses as before)."""

    async def count(lane: Partition, low: int, high: int) -> int | None:
        if high <= low:
            return 0
        partition = TopicPartition(*lane)
        consumer = client.consumer(
            source, purpose="handoff", group_id=None, enable_auto_commit=False, isolation_level="read_committed"
        )
        try:
            await asyncio.wait_for(consumer.start(), seconds)
            consumer.assign([partition])
            beginnings = await asyncio.wait_for(consumer.beginning_offsets([partition]), seconds)
            if beginnings[partition] > low:
                return None  # Kafka no longer has all of it: cannot tell what was there
            consumer.seek(partition, low)
            copied, deadline = 0, time.monotonic() + seconds
            # The position steps over markers and aborted records too, so reaching `high` with
            # no copied record means there was none.
            while await consumer.position(partition) < high:
                if time.monotonic() > deadline:
                    return None
                batch = await consumer.getmany(partition, timeout_ms=FETCH_MS)
                for record in batch.get(partition, []):
                    if record.offset < high and filtered_reason(route, kafka_message(record)) is None:
                        copied += 1
        except (KafkaError, OSError, TimeoutError):
            return None
        else:
            return copied
        finally:
            with contextlib.suppress(KafkaError, OSError, TimeoutError, RuntimeError):
                await consumer.stop()

    return count
