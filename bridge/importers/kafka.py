"""Kafka topics and their configs -> a mapping file that copies them into JetStream.

Reading (`read_topics`) and mapping (`import_topics`) are apart so the rules are tested
without a broker. Mapping rules:

* **Which topics.** Every topic the cluster lists, or those a `--topics` regex matches as a
  WHOLE name (as Kafka's own pattern subscriptions do); internal topics (`__`-prefixed, and
  `_schemas`) never, since copying offsets or schemas into NATS helps nobody.
* **Services.** One per topic-name group: the part before the first `.` (or `-`/`_` when there
  is no dot), so `orders.events` and `orders.payments` move together as service `orders`.
  One route per topic, reading through the bridge's own consumer group from `earliest`.
* **Streams and subjects.** One stream per topic, `KAFKA_<TOPIC>`, capturing
  `kafka.<topic parts>.*`; the route publishes to `kafka.{topic[0:]}.{partition}`, as
  `mappings/kafka-orders.yaml` does: each dot-separated part of the name is one escaped token
  and the last token is the partition, so per-partition order is visible and filterable, and
  two topics never share a subject (`*` is exactly one token).
* **Consumer groups** (kafka_consumers.py): the groups with committed offsets on the imported
  topics (never the bridge's own) each get a durable consumer, `replaces: {group: ...}`, filtering
  the group's topics, with its offsets and lag in a comment. A JetStream consumer reads one stream,
  so topics one group reads together share a stream (`max_age` the longest when all have one,
  `max_bytes` the sum) and a route, in the service of the first of them.
* **Configs -> stream limits.** `retention.ms` -> `max_age` (-1: none); `retention.bytes` ->
  `max_bytes` multiplied by the partition count, since Kafka's limit is per partition and a
  stream's is for the whole stream (-1: none); `cleanup.policy=delete` -> limits retention.
  `compact` has no stream equivalent: a comment suggests a KV bucket, or keying the subject and
  `max_msgs_per_subject: 1` (set with `nats stream edit`; the mapping file has no such field).
  A retention beyond what JetStream can hold (int64 nanoseconds, int64 bytes; Kafka's own limit
  is int64 milliseconds) is no limit, with a comment saying so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bridge.brokers.kafka import client
from bridge.brokers.kafka.admin import topic_configs
from bridge.brokers.kafka.groups import GroupPosition, committed_groups
from bridge.config.durations import MAX_DURATION, format_duration, parse_duration
from bridge.config.limits import INT64_MAX
from bridge.config.sources import KafkaSource
from bridge.importers.kafka_consumers import Placement, group_consumers, topic_clusters
from bridge.importers.render import MappingDocument
from bridge.routing import escape_token, is_internal_topic

NATS_URL_REFERENCE = "${NATS_URL:-nats://127.0.0.1:4222}"
INTERNAL_TOPICS = frozenset({"_schemas", "_confluent-metrics", "connect-configs", "connect-offsets", "connect-status"})
CONFIG_NAMES = ("retention.ms", "retention.bytes", "cleanup.policy")
DEFAULT_DUPLICATE_WINDOW = timedelta(minutes=2)


@dataclass(frozen=True)
class TopicInfo:
    """What the importer needs to know of one topic."""

    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


def is_skipped_topic(name: str) -> bool:
    """Kafka-internal and tooling topics that no mapping should copy."""
    return is_internal_topic(name) or name in INTERNAL_TOPICS


def select_topics(names: Iterable[str], pattern: str | None) -> list[str]:
    """Topics to import: not internal, and matching `pattern` as a whole name when given."""
    compiled = re.compile(pattern) if pattern is not None else None
    return sorted(
        name
        for name in names
        if not is_skipped_topic(name) and (compiled is None or compiled.fullmatch(name) is not None)
    )


async def read_topics(bootstrap: str, pattern: str | None = None) -> list[TopicInfo]:
    """Partition counts and retention configs of the cluster's topics, via aiokafka's admin client."""
    admin = client.admin(KafkaSource(type="kafka", bootstrap_servers=bootstrap.split(",")), purpose="import")
    await admin.start()
    try:
        names = select_topics(await admin.list_topics(), pattern)
        if not names:
            return []
        described = await admin.describe_topics(names)
        partitions = {item["topic"]: len(item["partitions"]) for item in described}
        configs = await topic_configs(admin, names, CONFIG_NAMES)
    finally:
        await admin.close()
    return [TopicInfo(name, partitions.get(name, 1), configs[name]) for name in names]


async def read_groups(bootstrap: str, topics: Sequence[str]) -> list[GroupPosition]:
    """The legacy consumer groups with committed offsets on `topics` (never the bridge's own)."""
    return await committed_groups(KafkaSource(type="kafka", bootstrap_servers=bootstrap.split(",")), topics)


def _group(topic: str) -> str:
    for separator in (".", "-", "_"):
        if separator in topic:
            return topic.split(separator, 1)[0] or topic
    return topic


def _plain(text: str, fallback: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_") or fallback


def _unique(name: str, taken: set[str]) -> str:
    candidate, count = name, 1
    while candidate.upper() in {t.upper() for t in taken}:
        count += 1
        candidate = f"{name}_{count}"
    taken.add(candidate)
    return candidate


def _int(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def import_topics(topics: Sequence[TopicInfo], bootstrap: str, groups: Sequence[GroupPosition] = ()) -> MappingDocument:
    """A mapping document copying `topics` into JetStream, with a consumer per legacy group in
    `groups`; pure (the rules are in the module docstring)."""
    doc = MappingDocument(data={})
    doc.header = [
        "Generated by `nats-bridge import kafka`. Review before use: each route reads through the bridge's own",
        "consumer group (legacy groups keep their offsets). Comments mark what JetStream cannot express.",
    ]
    streams: list[dict[str, Any]] = []
    services: dict[str, dict[str, Any]] = {}
    service_names: dict[str, str] = {}
    taken_streams: set[str] = set()
    taken_services: set[str] = set()
    placed: dict[str, Placement] = {}
    by_name = {topic.name: topic for topic in topics}
    for cluster in topic_clusters([topic.name for topic in topics], groups):
        members = [by_name[name] for name in cluster]
        stream, notes = _cluster_stream(members, taken_streams)
        index = len(streams)
        streams.append(stream)
        for line in notes:
            doc.note(("streams", index), line)
        readers = sorted({g.group for g in groups if any(t in cluster for t, _ in g.committed)})
        if len(cluster) > 1:
            doc.note(
                ("streams", index),
                f"topics {', '.join(cluster)} share this stream because consumer group(s) {', '.join(readers)} "
                "read them together: a JetStream consumer reads one stream.",
            )
        group = _group(cluster[0])
        if group not in service_names:
            service_names[group] = _unique(_plain(group, "topics"), taken_services)
            services[service_names[group]] = {"description": f"Kafka topics of the '{group}' group.", "routes": []}
        service = services[service_names[group]]
        route_names = {route["name"] for route in service["routes"]}
        route_name = _unique(_plain(cluster[0], "topic"), route_names)
        for name in cluster:
            placed[name] = Placement(service_names[group], len(service["routes"]), stream["name"])
        service["routes"].append(
            {
                "name": route_name,
                "source": "kafka",
                "from": {"topics": cluster, "start": "earliest"},
                "to": "kafka.{topic[0:]}.{partition}",
            }
        )
    doc.data = {
        "version": 1,
        "nats": {"servers": [NATS_URL_REFERENCE], "name": "nats-bridge"},
        "streams": streams,
        "sources": {"kafka": {"type": "kafka", "bootstrap_servers": [f"${{KAFKA_BOOTSTRAP:-{bootstrap}}}"]}},
        "services": services,
    }
    group_consumers(doc, services, placed, groups)
    return doc


def _topic_stream(topic: TopicInfo, taken_streams: set[str]) -> tuple[dict[str, Any], list[str]]:
    parts = ".".join(escape_token(part) for part in topic.name.split("."))
    stream: dict[str, Any] = {
        "name": _unique("KAFKA_" + re.sub(r"[^A-Za-z0-9_-]+", "_", topic.name).upper(), taken_streams),
        "description": f"Copy of Kafka topic '{topic.name}' ({topic.partitions} partitions)",
        "subjects": [f"kafka.{parts}.*"],
        "storage": "file",
    }
    return stream, _translate_configs(topic, stream)


def _cluster_stream(topics: Sequence[TopicInfo], taken_streams: set[str]) -> tuple[dict[str, Any], list[str]]:
    """One stream for topics a group reads together. It keeps what the most generous topic keeps:
    max_age only when every topic has one (the longest), max_bytes only when every topic has one
    (their sum: each topic's share, which a busy topic can now use)."""
    if len(topics) == 1:
        return _topic_stream(topics[0], taken_streams)
    singles = [_topic_stream(topic, set()) for topic in topics]
    stream: dict[str, Any] = {
        "name": _unique(singles[0][0]["name"], taken_streams),
        "description": "Copy of Kafka topics " + ", ".join(f"'{t.name}'" for t in topics),
        "subjects": [single["subjects"][0] for single, _ in singles],
        "storage": "file",
    }
    notes = [
        f"topic '{topic.name}': {line}" for topic, (_, lines) in zip(topics, singles, strict=True) for line in lines
    ]
    ages = [single.get("max_age") for single, _ in singles]
    if all(age is not None for age in ages):
        stream["max_age"] = format_duration(max(parse_duration(str(age)) for age in ages))
        notes.append("max_age: the longest of the topics' (the stream keeps what every topic kept).")
    sizes: list[int] = [single["max_bytes"] for single, _ in singles if "max_bytes" in single]
    if len(sizes) == len(singles) and sum(sizes) <= INT64_MAX:
        stream["max_bytes"] = sum(sizes)
        notes.append("max_bytes: the topics' limits added up (a busy topic can now use another's share).")
    return stream, notes


def _translate_configs(topic: TopicInfo, stream: dict[str, Any]) -> list[str]:
    """Set the stream's limits from the topic's configs; return comments for a person."""
    notes: list[str] = []
    retention_ms = _int(topic.configs.get("retention.ms"))
    if retention_ms is not None and retention_ms > MAX_DURATION // timedelta(milliseconds=1):
        notes.append(f"retention.ms {retention_ms} is longer than JetStream can keep messages (292 years): no max_age.")
    elif retention_ms is not None and retention_ms >= 0:
        age = timedelta(milliseconds=retention_ms)
        kept = max(age, DEFAULT_DUPLICATE_WINDOW)
        stream["max_age"] = format_duration(kept)
        notes.append(
            f"max_age from retention.ms {retention_ms}."
            + (
                f" Kept {format_duration(kept)}: the duplicate window, which must fit in max_age, has to "
                "cover a bridge restart."
                if kept > age
                else ""
            )
        )
    elif retention_ms == -1:
        notes.append("retention.ms -1 (keep forever): no max_age.")
    retention_bytes = _int(topic.configs.get("retention.bytes"))
    if retention_bytes is not None and retention_bytes * max(topic.partitions, 1) > INT64_MAX:
        notes.append(
            f"retention.bytes {retention_bytes} x {topic.partitions} partitions is more than a stream can count "
            "(int64): no max_bytes."
        )
    elif retention_bytes is not None and retention_bytes >= 0:
        stream["max_bytes"] = retention_bytes * topic.partitions
        notes.append(
            f"max_bytes = retention.bytes {retention_bytes} x {topic.partitions} partitions: Kafka's limit is per "
            "partition, a stream's is for the whole stream (a busy partition can now use another's share)."
        )
    policy = {part.strip() for part in topic.configs.get("cleanup.policy", "delete").split(",")}
    if "compact" in policy:
        notes.append(
            f"cleanup.policy {topic.configs.get('cleanup.policy')}: JetStream has no log compaction. To keep the "
            "latest record per key, use a KV bucket, or put the key in the subject (to: "
            "'kafka.{topic[0:]}.{key}') and set max_msgs_per_subject: 1 on the stream (nats stream edit)."
            + (" Retention limits still apply (delete)." if "delete" in policy else " Limits retention meanwhile.")
        )
    return notes
