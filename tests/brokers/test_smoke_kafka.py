"""Kafka through the real broker: fresh topic, produce with key and headers, consume from earliest."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def test_produce_consume(
    kafka_bootstrap: str, kafka_topic: Callable[..., Awaitable[str]], unique_name: str
) -> None:
    topic = await kafka_topic(partitions=2)
    assert topic == unique_name

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            topic, b"value-1", key=b"key-1", headers=[("x-source", b"smoke"), ("x-n", b"1")]
        )
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{unique_name}-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=60)
    finally:
        await consumer.stop()

    assert record.topic == topic
    assert (record.partition, record.offset) == (sent.partition, sent.offset)
    assert record.key == b"key-1"
    assert record.value == b"value-1"
    assert list(record.headers) == [("x-source", b"smoke"), ("x-n", b"1")]
