"""What a Kafka route's legacy side promises: the admin client describes the topics (each
partition's replica set) and their `min.insync.replicas` and `flush.messages`. No consumer, no
group (read-only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka.errors import KafkaError

from bridge.brokers.kafka.admin import describe_matching
from bridge.brokers.legacy import LegacyKind, LegacySource, LegacyView
from bridge.config.routes import FromKafka, RouteConfig
from bridge.config.sources import KafkaSource

KAFKA_CONFIGS = ("min.insync.replicas", "flush.messages")


def legacy_from_kafka(topic: str, partitions: Sequence[Mapping[str, Any]], configs: Mapping[str, str]) -> LegacySource:
    """A topic as the admin API describes it: the smallest partition replica set is its
    replication factor; `min.insync.replicas` and `flush.messages` from its configs."""
    sizes = [len(p.get("replicas") or []) for p in partitions]
    min_insync = configs.get("min.insync.replicas")
    return LegacySource(
        LegacyKind.KAFKA,
        topic,
        copies=min(sizes) if sizes else None,
        min_insync=int(min_insync) if min_insync is not None and min_insync.isdigit() else None,
        fsync_each=configs.get("flush.messages") == "1",
    )


async def kafka_views(
    name: str, source: KafkaSource, routes: Sequence[tuple[str, RouteConfig]], *, seconds: float
) -> tuple[dict[str, LegacyView], list[str]]:
    """Route label (`service/route`) -> what its topics promise, for the routes of source
    `name`, through one admin client; a cluster that does not answer makes every view unknown."""
    mine = {
        f"{service}/{route.name}": route.from_
        for service, route in routes
        if route.source == name and isinstance(route.from_, FromKafka)
    }
    servers = ",".join(source.bootstrap_servers)
    try:
        found = await describe_matching(source, mine, KAFKA_CONFIGS, seconds)
    except (KafkaError, OSError, TimeoutError) as error:
        # Not a problem line of its own: the Kafka probe of dry-run (and status's backlog) says it.
        text = f"Kafka at {servers}: {str(error) or type(error).__name__}"
        return {label: LegacyView(unknown=text) for label in mine}, []
    views = {
        label: LegacyView(
            tuple(legacy_from_kafka(t, found.partitions.get(t, []), found.configs.get(t, {})) for t in names)
        )
        if names
        else LegacyView(unknown="no topic of the route exists yet")
        for label, names in found.topics.items()
    }
    return views, []
