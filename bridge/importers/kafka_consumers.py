"""One JetStream durable consumer per legacy Kafka consumer group: where `import kafka` writes what
takes over from each group that has committed offsets on the imported topics.

A JetStream consumer reads one stream, so the topics one group reads together are copied into
one stream by one route (`topic_clusters`); the group's consumer filters each of its topics
through that route's subject template (bridge.route_shapes, as dry-run will check it), with
`replaces: {group: ...}`. Comments give the group's committed offsets and lag per topic, and
say when it still has members (its readers are running: it is written anyway, as the target
they move to). Pure: the groups are read by bridge.brokers.kafka.groups.committed_groups.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.brokers.kafka.groups import GroupPosition
from bridge.config.routes import RouteConfig
from bridge.importers.consumer_names import consumer_name
from bridge.importers.render import MappingDocument
from bridge.route_shapes import route_shapes
from bridge.routing.filters import consumer_filters

CONSUMERS_HEADER = [
    "Consumers: one durable per legacy consumer group with committed offsets on these topics, in the",
    "service whose route copies them, `replaces:` naming the group (validate and dry-run check the filters",
    "cover its topics). Topics a group reads together share a stream: a JetStream consumer reads one.",
    "deliver_policy is left at all: `nats-bridge handoff` creates each consumer where its group stands.",
    "ack_wait (30s) and max_ack_pending (1000) are JetStream's defaults: a Kafka group commits offsets and",
    "acks nothing. Its members each read whole partitions in order; a JetStream consumer hands messages to",
    "any worker, so where per-partition order matters use max_ack_pending: 1, or one consumer per partition",
    "(filter kafka.<topic>.<partition>).",
]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a topic is copied: the service, the index of its route there, and the stream."""

    service: str
    route: int
    stream: str


def topic_clusters(topics: Sequence[str], groups: Sequence[GroupPosition]) -> list[list[str]]:
    """`topics` in their order, those any one group reads together in one list (transitively: a
    group reading a and b, another b and c, put a, b and c together)."""
    parent = {topic: topic for topic in topics}

    def root(topic: str) -> str:
        while parent[topic] != topic:
            parent[topic] = parent[parent[topic]]
            topic = parent[topic]
        return topic

    for group in groups:
        read = [topic for topic in _topics(group) if topic in parent]
        for other in read[1:]:
            parent[root(other)] = root(read[0])
    clusters: dict[str, list[str]] = {}
    for topic in topics:
        clusters.setdefault(root(topic), []).append(topic)
    return list(clusters.values())


def group_consumers(
    doc: MappingDocument,
    services: Mapping[str, dict[str, Any]],
    placed: Mapping[str, Placement],
    groups: Sequence[GroupPosition],
) -> None:
    """A consumer in `services` for each group that committed on a placed topic, with its comments."""
    for group in sorted(groups, key=lambda g: g.group):
        topics = [topic for topic in _topics(group) if topic in placed]
        if not topics:
            continue
        where = placed[topics[0]]
        service = services[where.service]
        route: dict[str, Any] = service["routes"][where.route]
        consumers: list[dict[str, Any]] = service.setdefault("consumers", [])
        path = ("services", where.service, "consumers", len(consumers))
        taken = {c["name"] for c in consumers if c["stream"] == where.stream}
        consumer: dict[str, Any] = {"name": consumer_name(group.group, taken), "stream": where.stream}
        one = RouteConfig.model_validate({**route, "from": {**route["from"], "topics": topics}})
        consumer["filter_subjects"] = consumer_filters([f.shape for f in route_shapes(where.service, one)]).filters
        replaces: dict[str, Any] = {"group": group.group}
        if len(service["routes"]) > 1:
            replaces["route"] = route["name"]
        if set(topics) != set(route["from"]["topics"]):
            replaces["topics"] = topics
        consumer["replaces"] = replaces
        consumers.append(consumer)
        if CONSUMERS_HEADER[0] not in doc.header:
            doc.header.extend(CONSUMERS_HEADER)
        doc.note(path, f"Takes over from legacy consumer group '{group.group}' (Kafka state {group.state}).")
        if group.members:
            doc.note(
                path,
                f"the group has {len(group.members)} active member(s) ({', '.join(group.members)}): its readers "
                "are running now. Written anyway, as what they move to: create it with `consumers apply` and move "
                "them with `nats-bridge handoff`, which starts it where the group stands.",
            )
        doc.note(
            (*path, "filter_subjects"),
            "filter_subjects: the group's topic(s) "
            + ", ".join(f"'{topic}'" for topic in topics)
            + f" through the route's subject template ({route['to']}).",
        )
        for topic in topics:
            doc.note((*path, "filter_subjects"), _offsets_line(group, topic))


def _topics(group: GroupPosition) -> list[str]:
    """The topics the group committed on, in name order."""
    return sorted({topic for topic, _ in group.committed})


def _offsets_line(group: GroupPosition, topic: str) -> str:
    """`topic 'a': committed p0 12 (lag 3), p1 40 (lag 0); lag 3 in all`."""
    parts: list[str] = []
    total = 0
    for (name, partition), offset in sorted(group.committed.items()):
        if name != topic:
            continue
        lag = group.lag((name, partition)) if (name, partition) in group.ends else None
        total += lag or 0
        shown = "none" if offset is None else str(offset)
        parts.append(f"p{partition} {shown}" + (f" (lag {lag})" if lag is not None else ""))
    return f"topic '{topic}': committed offsets {', '.join(parts)}; lag {total} in all."
