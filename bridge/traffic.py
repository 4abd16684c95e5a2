"""Sample traffic for a mapping file's sources, so a new user can watch messages arrive.

`nats-bridge traffic FILE` produces small JSON messages to every Kafka topic a route of FILE
reads (topic lists only: a regex names no topic to write to). It is a demo and smoke-test
tool, not a load generator: bench/ measures performance. The brokers write
(`SourceBroker.send_demo`, bridge/brokers/kafka/demo.py); this module says where.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.brokers import SourceBroker, source_broker
from bridge.config.model import BridgeConfig


@dataclass(frozen=True, slots=True)
class TrafficTarget:
    source: str
    broker: SourceBroker  # its TLS and SASL settings too: the demo logs in as the bridge does
    topic: str


def demo_targets(config: BridgeConfig) -> list[TrafficTarget]:
    """Every Kafka topic named by a route's topic list, once, in route order."""
    targets: dict[tuple[str, str], TrafficTarget] = {}
    for service, route in config.routes():
        broker = source_broker(route.source, config.sources[route.source])
        for topic in broker.demo_places([(service, route)]):
            targets.setdefault((route.source, topic), TrafficTarget(route.source, broker, topic))
    return list(targets.values())


async def produce_all(config: BridgeConfig, count: int) -> list[TrafficTarget]:
    """Send `count` records to each Kafka topic the mapping reads; return where they went."""
    targets = demo_targets(config)
    for target in targets:
        await target.broker.send_demo(target.topic, count)
    return targets
