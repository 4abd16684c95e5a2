"""`dry-run --connect` on Kafka: an admin client reads the cluster's topic list, and each route's
topics (or pattern) are checked against it. No consumer is created, so no group is joined and
no offset is committed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from aiokafka.errors import KafkaError

from bridge.brokers.base import Level, Look
from bridge.brokers.kafka import client
from bridge.brokers.kafka.names import full_match_pattern
from bridge.config.routes import FromKafka, RouteConfig
from bridge.config.sources import KafkaSource


async def probe_kafka(
    name: str,
    source: KafkaSource,
    routes: Sequence[tuple[str, RouteConfig]],
    *,
    seconds: float,
    scrub: Callable[[str], str],
) -> list[Look]:
    """Read one Kafka cluster's topic list and check the routes' topics against it."""
    servers = ",".join(source.bootstrap_servers)
    subject = f"kafka source '{name}'"
    admin = client.admin(source, purpose="dry-run", request_timeout_ms=int(seconds * 1000))
    try:
        await asyncio.wait_for(admin.start(), seconds * 2)
        topics = set(await asyncio.wait_for(admin.list_topics(), seconds))
    except (KafkaError, OSError, TimeoutError) as error:
        text = scrub(str(error) or type(error).__name__)
        return [Look(Level.ERROR, "connect", subject, f"cannot reach Kafka at {servers}: {text}")]
    finally:
        with contextlib.suppress(KafkaError, OSError, TimeoutError, RuntimeError):
            await admin.close()
    looks = [Look(Level.INFO, "connect", subject, f"reachable at {servers}")]
    for service, route in routes:
        if route.source != name or not isinstance(route.from_, FromKafka):
            continue
        looks += _route_topics(f"{service}/{route.name}", route.from_, topics)
    return looks


def _route_topics(label: str, subscription: FromKafka, topics: set[str]) -> list[Look]:
    """A topic list: each topic exists or not (an error); a pattern: what it matches (a warning
    when nothing yet: the consumer picks topics up as they are created)."""
    if subscription.topics:
        return [
            Look(Level.INFO, "exists", label, f"topic '{topic}' exists")
            if topic in topics
            else Look(Level.ERROR, "exists", label, f"topic '{topic}' does not exist")
            for topic in subscription.topics
        ]
    regex = full_match_pattern(subscription.topic_pattern or "")
    matched = sorted(topic for topic in topics if regex.match(topic) and not topic.startswith("__"))
    if matched:
        shown = ", ".join(matched[:5]) + (" ..." if len(matched) > 5 else "")
        return [Look(Level.INFO, "exists", label, f"topic_pattern matches {shown}")]
    return [Look(Level.WARNING, "exists", label, f"topic_pattern '{subscription.topic_pattern}' matches no topic yet")]
