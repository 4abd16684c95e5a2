"""`nats-bridge traffic` on Kafka: small JSON records for a demo, to the topics the routes name.
Logged in as the bridge is (its TLS and SASL settings too); a demo and smoke-test tool, not a
load generator: bench/ measures performance."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence

from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from bridge.brokers.kafka import client
from bridge.config.routes import FromKafka, RouteConfig
from bridge.config.sources import KafkaSource
from bridge.errors import BridgeError


def demo_topics(name: str, routes: Sequence[tuple[str, RouteConfig]]) -> list[str]:
    """The topics the routes of source `name` list by name, in route order (a regex names no
    topic to write to)."""
    topics: dict[str, None] = {}
    for _, route in routes:
        if route.source == name and isinstance(route.from_, FromKafka):
            topics.update(dict.fromkeys(route.from_.topics))
    return list(topics)


async def send_demo(name: str, source: KafkaSource, topic: str, count: int, *, partitions: int = 3) -> None:
    """Create the topic if needed, then send `count` keyed JSON records to it."""
    admin = client.admin(source, purpose="traffic")
    producer = client.producer(source, purpose="traffic", linger_ms=5, enable_idempotence=True)
    try:
        await admin.start()
        # create_topics reports per-topic errors in its response instead of raising.
        response = await admin.create_topics([NewTopic(topic, partitions, 1)])
        for created, code, *detail in response.topic_errors:
            if code not in (0, TopicAlreadyExistsError.errno):
                raise BridgeError(f"source '{name}': cannot create topic '{created}': error {code} {detail}")
        await producer.start()
        sends = []
        for i in range(count):
            body = json.dumps({"n": i, "sent_at": time.time(), "kind": "demo"}).encode()
            sends.append(
                await producer.send(
                    topic, body, key=f"key-{i % 16}".encode(), headers=[("demo", b"nats-bridge traffic")]
                )
            )
        await asyncio.gather(*sends)
    except KafkaError as error:
        raise BridgeError(f"source '{name}': cannot produce to topic '{topic}': {error}") from None
    finally:
        await producer.stop()
        await admin.close()
