"""Read-only and clean-up requests on Kafka, made from outside any running bridge: a route's
backlog (end offsets against the bridge group's committed offsets, no group joined), the topics
behind the durability posture (and their configs, which the importer reads too), and the
deletion of the bridge group's offsets when a service is retired."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.admin import DeleteGroupsRequest

from bridge.brokers.base import Backlog
from bridge.brokers.kafka import client
from bridge.brokers.kafka.names import full_match_pattern
from bridge.config.routes import FromKafka
from bridge.config.sources import KafkaSource

BACKLOG_TIMEOUT = 10.0
RETIRE_TIMEOUT = 15.0
GROUP_NOT_EMPTY = 68  # Kafka error code: members (another bridge instance) are still in the group


async def group_backlog(source: KafkaSource, subscription: FromKafka, group: str) -> Backlog:
    """Per partition of the route's topics, the records past `group`'s committed offset."""
    admin = client.admin(source, purpose="status", request_timeout_ms=int(BACKLOG_TIMEOUT * 1000))
    consumer = client.consumer(source, purpose="status", group_id=None, enable_auto_commit=False)
    try:
        await asyncio.wait_for(asyncio.gather(admin.start(), consumer.start()), BACKLOG_TIMEOUT)
        existing = await admin.list_topics()
        if subscription.topics:
            topics = [topic for topic in subscription.topics if topic in existing]
        else:
            regex = full_match_pattern(subscription.topic_pattern or "")
            topics = sorted(t for t in existing if regex.match(t) and not t.startswith("__"))
        if not topics:
            return Backlog(note="no topic of the route exists yet")
        described = await admin.describe_topics(topics)
        partitions = [TopicPartition(item["topic"], p["partition"]) for item in described for p in item["partitions"]]
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        committed = await admin.list_consumer_group_offsets(group)
    except (KafkaError, OSError, TimeoutError) as error:
        return Backlog(error=f"Kafka at {','.join(source.bootstrap_servers)}: {str(error) or type(error).__name__}")
    finally:
        with contextlib.suppress(KafkaError, OSError, TimeoutError, RuntimeError):
            await consumer.stop()
        with contextlib.suppress(KafkaError, OSError, TimeoutError, RuntimeError):
            await admin.close()
    lanes = {}
    for tp in sorted(partitions):
        meta = committed.get(tp)
        position = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
        lanes[f"{tp.topic}/{tp.partition}"] = max(0, ends[tp] - position)
    return Backlog(lanes)


async def delete_group(source: KafkaSource, group: str, attempts: int = 10) -> str:
    """DeleteGroups (aiokafka's admin client has no call for it; the request is in its protocol
    module). Retried while other bridge instances are still leaving the group."""
    admin = client.admin(source, purpose="retire")
    try:
        await asyncio.wait_for(admin.start(), RETIRE_TIMEOUT)
        for attempt in range(attempts):
            coordinator = await admin.find_coordinator(group)
            response = await admin._send_request(
                DeleteGroupsRequest([group]), coordinator
            )  # private: no public DeleteGroups
            ((_, code),) = response.results
            if code == 0:
                return f"deleted consumer group '{group}' and its offsets"
            if code == GROUP_NOT_EMPTY and attempt + 1 < attempts:
                await asyncio.sleep(2.0)
                continue
            error = for_code(code)
            return f"could not delete consumer group '{group}': {error.__name__}"
    except (KafkaError, OSError, TimeoutError) as error:
        return f"could not delete consumer group '{group}': {str(error) or type(error).__name__}"
    finally:
        with contextlib.suppress(KafkaError, OSError, TimeoutError, RuntimeError):
            await admin.close()
    return f"could not delete consumer group '{group}'"


@dataclass(slots=True)
class TopicsDescribed:
    """What `describe_matching` found: per label the existing topics its subscription reads, per
    topic its partitions (aiokafka's describe_topics entries: replicas, isr) and configs."""

    topics: dict[str, list[str]] = field(default_factory=dict)
    partitions: dict[str, list[Mapping[str, Any]]] = field(default_factory=dict)
    configs: dict[str, dict[str, str]] = field(default_factory=dict)


async def describe_matching(
    source: KafkaSource, subscriptions: Mapping[str, FromKafka], config_names: Sequence[str], seconds: float
) -> TopicsDescribed:
    """The topics each subscription (by label) reads today, described with the named topic
    configs, through one admin client. Raises KafkaError, OSError or TimeoutError."""
    admin = client.admin(source, purpose="durability", request_timeout_ms=int(seconds * 1000))
    try:
        await asyncio.wait_for(admin.start(), seconds * 2)
        existing = set(await asyncio.wait_for(admin.list_topics(), seconds))
        found = TopicsDescribed()
        for label, subscription in subscriptions.items():
            if subscription.topics:
                found.topics[label] = [topic for topic in subscription.topics if topic in existing]
            else:
                regex = full_match_pattern(subscription.topic_pattern or "")
                found.topics[label] = sorted(t for t in existing if regex.match(t) and not t.startswith("__"))
        names = sorted({topic for topics in found.topics.values() for topic in topics})
        found.configs = {topic: {} for topic in names}
        if names:
            for item in await asyncio.wait_for(admin.describe_topics(names), seconds):
                found.partitions[item["topic"]] = list(item["partitions"])
            found.configs = await asyncio.wait_for(topic_configs(admin, names, config_names), seconds)
        return found
    finally:
        with contextlib.suppress(KafkaError, OSError, TimeoutError, RuntimeError):
            await admin.close()


async def topic_configs(
    admin: AIOKafkaAdminClient, names: Sequence[str], config_names: Sequence[str]
) -> dict[str, dict[str, str]]:
    """The named configs of each topic in `names` that Kafka describes (a topic it does not, or
    a config without a value, is left empty), on a started admin client."""
    configs: dict[str, dict[str, str]] = {name: {} for name in names}
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, dict.fromkeys(config_names)) for name in names]
    for response in await admin.describe_configs(resources):
        for error_code, _message, _type, name, entries in response.resources:
            if error_code == 0 and name in configs:
                configs[name] = {entry[0]: entry[1] for entry in entries if entry[1] is not None}
    return configs
