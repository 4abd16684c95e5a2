"""A Kafka source with every route that reads it, as dry-run asks it (bridge.brokers.base.SourceBroker):
one admin client (or groupless consumer) for all of them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bridge.brokers.base import Look, SampleRead
from bridge.brokers.kafka.demo import demo_topics, send_demo
from bridge.brokers.kafka.legacy import kafka_views
from bridge.brokers.kafka.probe import probe_kafka
from bridge.brokers.kafka.sample import sample_kafka
from bridge.brokers.legacy import LegacyView
from bridge.config.routes import RouteConfig
from bridge.config.sources import KafkaSource


@dataclass(frozen=True, slots=True)
class KafkaCluster:
    """`name` is the source's name in the mapping file."""

    name: str
    config: KafkaSource

    async def probe(
        self, routes: Sequence[tuple[str, RouteConfig]], *, seconds: float, scrub: Callable[[str], str]
    ) -> list[Look]:
        return await probe_kafka(self.name, self.config, routes, seconds=seconds, scrub=scrub)

    async def sample(
        self, routes: Sequence[tuple[str, RouteConfig]], *, count: int, duration: float, seconds: float
    ) -> SampleRead:
        return await sample_kafka(self.name, self.config, routes, count=count, duration=duration, seconds=seconds)

    async def legacy(
        self,
        routes: Sequence[tuple[str, RouteConfig]],
        *,
        every_route: Sequence[tuple[str, RouteConfig]],
        seconds: float,
    ) -> tuple[dict[str, LegacyView], list[str]]:
        return await kafka_views(self.name, self.config, routes, seconds=seconds)

    def demo_places(self, routes: Sequence[tuple[str, RouteConfig]]) -> list[str]:
        return demo_topics(self.name, routes)

    async def send_demo(self, place: str, count: int) -> None:
        await send_demo(self.name, self.config, place, count)
