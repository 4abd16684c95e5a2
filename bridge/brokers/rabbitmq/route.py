"""A route that reads RabbitMQ, as the features ask it (bridge.brokers.base.RouteBroker)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.brokers.base import Backlog, ReadLimits
from bridge.brokers.handover import QueueHandover
from bridge.brokers.rabbitmq.admin import delete_shadow_queue, queue_depth
from bridge.brokers.rabbitmq.names import shadow_queue_name
from bridge.brokers.rabbitmq.queues import legacy_queue
from bridge.brokers.rabbitmq.ranges import StreamRanges
from bridge.brokers.rabbitmq.source import RabbitMQRouteSource
from bridge.config.consumers import ReplacesConfig
from bridge.config.routes import FromRabbitMQ, RabbitMQMode
from bridge.config.services import ReverseTo
from bridge.config.sources import RabbitMQSource


@dataclass(frozen=True, slots=True)
class RabbitMQRoute:
    """`name` is the source's name in the mapping file. In shadow mode the queue is the bridge's
    own; in queue and stream mode it is the legacy side's, named by the route."""

    name: str
    config: RabbitMQSource
    subscription: FromRabbitMQ
    service: str
    route: str

    @property
    def queue(self) -> str:
        if self.subscription.effective_mode is RabbitMQMode.SHADOW:
            return self.subscription.queue or shadow_queue_name(self.service, self.route)
        assert self.subscription.queue is not None  # the model requires it outside shadow mode
        return self.subscription.queue

    @property
    def vhost(self) -> str:
        return self.config.effective_vhost

    def source(self) -> RabbitMQRouteSource:
        return RabbitMQRouteSource(
            self.name, self.config, self.subscription, self.queue, route=f"{self.service}/{self.route}"
        )

    async def backlog(self) -> Backlog:
        if self.subscription.effective_mode is RabbitMQMode.STREAM:
            return Backlog(note="a stream queue keeps what is read: no backlog figure")
        return await queue_depth(self.config, self.queue)

    async def retire(self, *, delete_offsets: bool) -> str:
        mode = self.subscription.effective_mode
        if mode is not RabbitMQMode.SHADOW:
            return f"left {mode} queue '{self.subscription.queue}' alone: it is the legacy side's"
        return await delete_shadow_queue(self.config, self.queue, self.subscription)

    def fed_by(self, target: ReverseTo, replaces: ReplacesConfig) -> str | None:
        exchange = self.subscription.exchange
        if target.exchange is not None and exchange is not None and target.exchange == exchange:
            return f"exchange '{exchange}'"
        return None

    async def legacy_position(self, replaces: ReplacesConfig, *, seconds: float) -> QueueHandover:
        """The legacy queue's depth and head (its own timeouts: `seconds` is Kafka's), and this
        route's backlog."""
        assert replaces.queue is not None  # the model asks a RabbitMQ route's consumer for a queue
        queue = await legacy_queue(self.config, replaces.queue)
        backlog = await self.backlog()
        return QueueHandover(queue, backlog.total)

    async def legacy_lag(self, replaces: ReplacesConfig) -> int | None:
        if replaces.queue is None:
            return None
        return (await legacy_queue(self.config, replaces.queue, peek=False)).depth

    def ranges(self, *, purpose: str, limits: ReadLimits, strict: bool = False) -> StreamRanges:
        """A stream queue's offsets (nothing to read by position in shadow and queue mode);
        `purpose` and `strict` mean nothing here: a stream read starts at the first offset held."""
        return StreamRanges(self.name, self.config, self.subscription, self.queue, limits=limits)
