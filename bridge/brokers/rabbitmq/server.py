"""A RabbitMQ source with every route that reads it, as dry-run asks it
(bridge.brokers.base.SourceBroker): one connection for all of them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bridge.brokers.base import Look, SampleRead
from bridge.brokers.legacy import LegacyView
from bridge.brokers.rabbitmq.legacy import rabbit_views
from bridge.brokers.rabbitmq.probe import probe_rabbitmq
from bridge.brokers.rabbitmq.sample import sample_rabbitmq
from bridge.config.routes import RouteConfig
from bridge.config.sources import RabbitMQSource
from bridge.errors import BridgeError


@dataclass(frozen=True, slots=True)
class RabbitMQServer:
    """`name` is the source's name in the mapping file (a URL and a vhost)."""

    name: str
    config: RabbitMQSource

    async def probe(
        self, routes: Sequence[tuple[str, RouteConfig]], *, seconds: float, scrub: Callable[[str], str]
    ) -> list[Look]:
        return await probe_rabbitmq(self.name, self.config, routes, seconds=seconds, scrub=scrub)

    async def sample(
        self, routes: Sequence[tuple[str, RouteConfig]], *, count: int, duration: float, seconds: float
    ) -> SampleRead:
        return await sample_rabbitmq(self.name, self.config, routes, count=count, duration=duration, seconds=seconds)

    async def legacy(
        self,
        routes: Sequence[tuple[str, RouteConfig]],
        *,
        every_route: Sequence[tuple[str, RouteConfig]],
        seconds: float,
    ) -> tuple[dict[str, LegacyView], list[str]]:
        return await rabbit_views(self.name, self.config, routes, every_route=every_route, seconds=seconds)

    def demo_places(self, routes: Sequence[tuple[str, RouteConfig]]) -> list[str]:
        return []  # `traffic` is the Kafka quickstart's demo: it writes no AMQP messages

    async def send_demo(self, place: str, count: int) -> None:
        raise BridgeError(f"source '{self.name}': `traffic` writes demo records to Kafka topics only")
