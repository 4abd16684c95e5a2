"""What a RabbitMQ route's legacy side promises, from the management API (read-only).

A passive declare answers alike for a classic and a quorum queue, so queue types, members and
which legacy queues are bound to a shadowed exchange come from the management API
(`sources.<name>.management`). Without it a queue route's legacy side is unknown; a stream
route reads a stream queue by definition, so that one is known either way. Queues behind
exchange-to-exchange bindings are not followed. Credentials travel in headers, never in a URL
that is printed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bridge.brokers.http import HttpLookError
from bridge.brokers.legacy import LegacyKind, LegacySource, LegacyView
from bridge.brokers.rabbitmq.management import ManagementApi
from bridge.brokers.rabbitmq.names import shadow_queue_name
from bridge.config.routes import FromRabbitMQ, RabbitMQMode, RouteConfig
from bridge.config.sources import RabbitMQSource
from bridge.routing import ExchangeType
from bridge.routing.shapes import binding_words, intersects


def legacy_from_management(queue: Mapping[str, Any]) -> LegacySource:
    """A queue as RabbitMQ's management API lists it (`type`, `durable`, `members` of a quorum
    queue or stream, `slave_nodes` of a mirrored classic queue)."""
    kind = {"quorum": LegacyKind.QUORUM, "stream": LegacyKind.STREAM}.get(
        str(queue.get("type", "classic")), LegacyKind.CLASSIC
    )
    members, mirrors = queue.get("members"), queue.get("slave_nodes")
    copies: int | None = None
    if isinstance(members, list) and members:
        copies = len(members)
    elif kind is LegacyKind.CLASSIC:
        copies = 1 + (len(mirrors) if isinstance(mirrors, list) else 0)
    return LegacySource(kind, str(queue.get("name", "")), durable=queue.get("durable") is not False, copies=copies)


def _takes(subscription: FromRabbitMQ, key: str) -> bool:
    """Whether a legacy queue bound with `key` can receive what the route copies."""
    if subscription.type in (ExchangeType.FANOUT, ExchangeType.HEADERS):
        return True  # every message (fanout), or arguments too varied to compare: assume it may
    words = tuple(binding_words(key, subscription.type))
    return any(intersects(tuple(binding_words(mine, subscription.type)), words) for mine in subscription.bindings)


async def rabbit_views(
    name: str,
    source: RabbitMQSource,
    routes: Sequence[tuple[str, RouteConfig]],
    *,
    every_route: Sequence[tuple[str, RouteConfig]],
    seconds: float,
) -> tuple[dict[str, LegacyView], list[str]]:
    """Route label (`service/route`) -> what its legacy side promises, for the routes of source
    `name`; and the problems. `every_route` of the file names the bridge's own shadow queues,
    which are never a legacy one."""
    mine = [
        (f"{service}/{route.name}", route.from_)
        for service, route in routes
        if route.source == name and isinstance(route.from_, FromRabbitMQ)
    ]
    views: dict[str, LegacyView] = {}
    if source.management is None:
        for label, subscription in mine:
            if subscription.effective_mode is RabbitMQMode.STREAM:
                views[label] = LegacyView((LegacySource(LegacyKind.STREAM, subscription.queue or ""),))
            else:
                views[label] = LegacyView(
                    unknown=f"AMQP cannot tell a queue's type; set sources.{name}.management (the management API)"
                )
        return views, []
    ours = {
        route.from_.queue or shadow_queue_name(service, route.name)
        for service, route in every_route
        if isinstance(route.from_, FromRabbitMQ) and route.from_.effective_mode is RabbitMQMode.SHADOW
    }
    async with ManagementApi(source, seconds) as api:
        try:
            queues = await api.queues()
        except HttpLookError as error:
            return {label: LegacyView(unknown=str(error)) for label, _ in mine}, [str(error)]
        bindings: dict[str, list[Mapping[str, Any]] | str] = {}
        for label, subscription in mine:
            if subscription.effective_mode is not RabbitMQMode.SHADOW:
                queue = queues.get(subscription.queue or "")
                views[label] = (
                    LegacyView((legacy_from_management(queue),))
                    if queue is not None
                    else LegacyView(unknown=f"queue '{subscription.queue}' is not in the management API's list")
                )
                continue
            exchange = subscription.exchange or ""
            if exchange not in bindings:
                try:
                    bindings[exchange] = await api.exchange_bindings(exchange)
                except HttpLookError as error:
                    bindings[exchange] = str(error)
            bound = bindings[exchange]
            if isinstance(bound, str):
                views[label] = LegacyView(unknown=bound)
                continue
            names = sorted(
                {
                    str(b.get("destination"))
                    for b in bound
                    if b.get("destination_type") == "queue"
                    and str(b.get("destination")) not in ours
                    and not str(b.get("destination")).startswith("nats-bridge.")
                    and _takes(subscription, str(b.get("routing_key", "")))
                }
            )
            views[label] = LegacyView(tuple(legacy_from_management(queues.get(q, {"name": q})) for q in names))
    return views, []
