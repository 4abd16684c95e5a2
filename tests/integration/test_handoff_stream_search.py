"""Finding a Kafka group's position in a real stream: the stored record with the committed offset,
by direct gets over the consumer's filter, other partitions' records stepped over."""

from __future__ import annotations

import random

from nats.aio.client import Client as NatsClient

from bridge.handoff.search import Behind, Older, Start, first_at_or_after
from bridge.handoff.stream_lanes import kafka_probe


async def _store(
    nc: NatsClient, stream: str, subject: str, records: list[tuple[int, int]]
) -> dict[tuple[int, int], int]:
    """Publish (partition, offset) records as the bridge stores them; their stream sequences."""
    js = nc.jetstream()
    sequences = {}
    for partition, offset in records:
        headers = {"Kafka-Topic": "payments", "Kafka-Partition": str(partition), "Kafka-Offset": str(offset)}
        ack = await js.publish(
            f"{subject}.{partition}", f"{partition}/{offset}".encode(), stream=stream, headers=headers
        )
        sequences[(partition, offset)] = ack.seq
    return sequences


async def _find(nc: NatsClient, stream: str, filters: list[str], partition: int, wanted: int) -> object:
    js = nc.jetstream()
    info = await js.stream_info(stream)
    probe = kafka_probe(js, stream, filters, "payments", partition)
    return await first_at_or_after(probe, info.state.first_seq, info.state.last_seq, wanted, last=None)


async def test_each_partitions_committed_offset_is_found_at_its_sequence(nc: NatsClient, unique_name: str) -> None:
    stream, subject = unique_name.upper(), f"{unique_name}.payments"
    await nc.jetstream().add_stream(name=stream, subjects=[f"{subject}.>"])
    rng = random.Random(7)
    next_offset = dict.fromkeys(range(6), 0)
    records = []
    for _ in range(600):  # six partitions interleaved unevenly, as a group's fetches land
        partition = rng.choice([0, 0, 0, 1, 2, 3, 4, 5])
        records.append((partition, next_offset[partition]))
        next_offset[partition] += 1
    sequences = await _store(nc, stream, subject, records)
    for partition in range(6):
        wanted = rng.randrange(next_offset[partition])
        # one filter for the whole topic: other partitions are stepped over
        assert await _find(nc, stream, [f"{subject}.>"], partition, wanted) == Start(
            sequences[(partition, wanted)], wanted
        )
        # the partition's own subject: one get per probe
        assert await _find(nc, stream, [f"{subject}.{partition}"], partition, wanted) == Start(
            sequences[(partition, wanted)], wanted
        )
    # past what is stored: behind
    assert await _find(nc, stream, [f"{subject}.>"], 1, next_offset[1]) == Behind(None)


async def test_an_offset_older_than_what_the_stream_keeps_is_refused(nc: NatsClient, unique_name: str) -> None:
    stream, subject = unique_name.upper(), f"{unique_name}.payments"
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{subject}.>"])
    sequences = await _store(nc, stream, subject, [(0, offset) for offset in range(50)])
    await js.purge_stream(stream, keep=20)  # retention kept offsets 30..49
    assert await _find(nc, stream, [f"{subject}.>"], 0, 10) == Older(Start(sequences[(0, 30)], 30))
    assert await _find(nc, stream, [f"{subject}.0"], 0, 35) == Start(sequences[(0, 35)], 35)
