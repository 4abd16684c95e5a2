"""Sample traffic for a mapping file's sources, so a new user can watch messages arrive.

`nats-bridge traffic FILE` produces small JSON messages to every Kafka topic a route of FILE
reads (topic lists only: a regex names no topic to write to). It is a demo and smoke-test
tool, not a load generator: bench/ measures performance.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from bridge.brokers.kafka import client
from bridge.config.model import BridgeConfig
from bridge.config.routes import FromKafka
from bridge.config.sources import KafkaSource
from bridge.errors import BridgeError


@dataclass(frozen=True, slots=True)
class TrafficTarget:
    source: str
    config: KafkaSource  # its TLS and SASL settings too: the demo logs in as the bridge does
    topic: str

    @property
    def bootstrap_servers(self) -> tuple[str, ...]:
        return tuple(self.config.bootstrap_servers)


def kafka_targets(config: BridgeConfig) -> list[TrafficTarget]:
    """Every Kafka topic named by a route's topic list, once."""
    targets: dict[tuple[str, str], TrafficTarget] = {}
    for _service, route in config.routes():
        source = config.sources[route.source]
        if isinstance(source, KafkaSource) and isinstance(route.from_, FromKafka):
            for topic in route.from_.topics:
                targets[(route.source, topic)] = TrafficTarget(route.source, source, topic)
    return list(targets.values())


async def produce_kafka(target: TrafficTarget, count: int, *, partitions: int = 3) -> None:
    """Create the topic if needed, then send `count` keyed JSON records to it."""
    admin = client.admin(target.config, purpose="traffic")
    producer = client.producer(target.config, purpose="traffic", linger_ms=5, enable_idempotence=True)
    try:
        await admin.start()
        # create_topics reports per-topic errors in its response instead of raising.
        response = await admin.create_topics([NewTopic(target.topic, partitions, 1)])
        for topic, code, *detail in response.topic_errors:
            if code not in (0, TopicAlreadyExistsError.errno):
                raise BridgeError(f"source '{target.source}': cannot create topic '{topic}': error {code} {detail}")
        await producer.start()
        sends = []
        for i in range(count):
            body = json.dumps({"n": i, "sent_at": time.time(), "kind": "demo"}).encode()
            sends.append(
                await producer.send(
                    target.topic, body, key=f"key-{i % 16}".encode(), headers=[("demo", b"nats-bridge traffic")]
                )
            )
        await asyncio.gather(*sends)
    except KafkaError as error:
        raise BridgeError(f"source '{target.source}': cannot produce to topic '{target.topic}': {error}") from None
    finally:
        await producer.stop()
        await admin.close()


async def produce_all(config: BridgeConfig, count: int) -> list[TrafficTarget]:
    """Send `count` records to each Kafka topic the mapping reads; return where they went."""
    targets = kafka_targets(config)
    for target in targets:
        await produce_kafka(target, count)
    return targets
