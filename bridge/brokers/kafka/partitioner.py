"""Which partition Kafka's default partitioner gives a key: what a NATS producer must compute to
publish to a `{partition}` subject exactly where the Kafka producer it replaces would have sent
the record (murmur2 of the key bytes, made positive, modulo the partition count)."""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def key_partition(key: bytes, partitions: int) -> int:
    """The partition of `key` among `partitions` (Java client's DefaultPartitioner for a keyed record)."""
    if partitions < 1:
        raise ValueError("a topic has at least one partition")
    return (int(murmur2(key)) & 0x7FFFFFFF) % partitions
