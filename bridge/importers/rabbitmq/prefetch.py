"""The live consumers' prefetch counts folded into a definitions export, which never has them.

`import rabbitmq --api URL` reads them from the management API (bridge.brokers.rabbitmq.
management.consumer_prefetch) and adds each queue's as `consumer_details`, the shape `GET
/api/queues/<vhost>/<name>` gives them in, so the importer reads one document either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def with_consumer_prefetch(
    definitions: Mapping[str, Any], prefetch: Mapping[tuple[str, str], list[int]], default_vhost: str = "/"
) -> dict[str, Any]:
    """A copy of `definitions` whose queues with consumers in `prefetch` list their prefetch counts."""
    queues: list[Any] = []
    for item in definitions.get("queues") or []:
        counts = None
        if isinstance(item, Mapping):
            counts = prefetch.get((str(item.get("vhost", default_vhost)), str(item.get("name"))))
        details = [{"prefetch_count": count} for count in counts or []]
        queues.append({**item, "consumer_details": details} if details else item)
    return {**definitions, "queues": queues}
