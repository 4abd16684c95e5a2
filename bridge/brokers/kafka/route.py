"""A route that reads Kafka, as the features ask it (bridge.brokers.base.RouteBroker)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.brokers.base import Backlog, ReadLimits
from bridge.brokers.handover import GroupHandover
from bridge.brokers.kafka.admin import delete_group, group_backlog
from bridge.brokers.kafka.groups import group_position
from bridge.brokers.kafka.names import default_group
from bridge.brokers.kafka.ranges import KafkaRanges, group_offsets
from bridge.brokers.kafka.source import KafkaTopicSource
from bridge.config.consumers import ReplacesConfig
from bridge.config.routes import FromKafka
from bridge.config.services import ReverseTo
from bridge.config.sources import KafkaSource


@dataclass(frozen=True, slots=True)
class KafkaRoute:
    """`name` is the source's name in the mapping file; the group is the route's own."""

    name: str
    config: KafkaSource
    subscription: FromKafka
    service: str
    route: str

    @property
    def group(self) -> str:
        return self.subscription.group or default_group(self.service, self.route)

    @property
    def vhost(self) -> None:
        """Kafka has no vhosts."""
        return None

    def source(self) -> KafkaTopicSource:
        return KafkaTopicSource(self.name, self.config, self.subscription, self.group)

    async def backlog(self) -> Backlog:
        return await group_backlog(self.config, self.subscription, self.group)

    async def retire(self, *, delete_offsets: bool) -> str:
        if not delete_offsets:
            return f"kept consumer group '{self.group}' and its offsets (retire with --delete-offsets to remove them)"
        return await delete_group(self.config, self.group)

    def fed_by(self, target: ReverseTo, replaces: ReplacesConfig) -> str | None:
        topics = replaces.topics or self.subscription.topics
        if target.topic is not None and target.topic in topics:
            return f"topic '{target.topic}'"
        return None

    async def legacy_position(self, replaces: ReplacesConfig, *, seconds: float) -> GroupHandover:
        assert replaces.group is not None  # the model asks a Kafka route's consumer for a group
        topics = replaces.topics or self.subscription.topics
        group = await group_position(self.config, replaces.group, topics, seconds=seconds)
        stored, _ = await group_offsets(self.config, self.group, purpose="handoff", seconds=seconds)
        return GroupHandover(group, stored)

    async def legacy_lag(self, replaces: ReplacesConfig) -> int | None:
        if replaces.group is None:
            return None
        group = await group_position(self.config, replaces.group, replaces.topics or self.subscription.topics)
        return sum(group.lag(lane) or 0 for lane in group.committed)

    def ranges(self, *, purpose: str, limits: ReadLimits, strict: bool = False) -> KafkaRanges:
        return KafkaRanges(self.config, self.subscription, self.group, purpose=purpose, limits=limits, strict=strict)
