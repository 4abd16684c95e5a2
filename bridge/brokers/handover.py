"""What a handoff reads of a route's legacy consumer, per broker (value types): the features plan
from it (bridge.handoff), the route's broker reads it (RouteBroker.legacy_position)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.brokers.kafka.groups import GroupPosition, Partition
from bridge.brokers.rabbitmq.queues import QueueState


@dataclass(frozen=True, slots=True)
class GroupHandover:
    """A legacy Kafka group as it stands, and the next offset the bridge's own group committed
    per partition: what the stream holds for certain."""

    group: GroupPosition
    stored: dict[Partition, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueueHandover:
    """A legacy queue as it stands (its depth and head), and what still waits in the bridge's
    own shadow queue: copies of messages not yet in the stream."""

    queue: QueueState
    shadow_backlog: int


Handover = GroupHandover | QueueHandover
