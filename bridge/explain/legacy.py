"""The message routed as RabbitMQ routes it through a definitions export, and compared with the routes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.brokers import route_broker
from bridge.config.model import BridgeConfig
from bridge.config.routes import FromRabbitMQ, RabbitMQMode, RouteConfig
from bridge.explain.outcome import amqp_miss_reason
from bridge.explain.types import Definitions, LegacyRouting, Mismatch, RouteOutcome
from bridge.importers.topology_paths import Routed, Tap
from bridge.importers.topology_routing import CHOOSING_TYPES, feeding_exchanges, route_message
from bridge.routing import ExchangeType


def route_vhost(config: BridgeConfig, service: str, route: RouteConfig) -> str | None:
    """The RabbitMQ vhost the route reads (None for Kafka), as its broker says."""
    return route_broker(config, service, route).vhost


def _taps(config: BridgeConfig, vhost: str) -> list[Tap]:
    """The bridge's shadow queues in `vhost`, bound as `run` binds them (bridge.brokers.rabbitmq.source):
    a headers route with its arguments, a fanout route with '', the others once per key."""
    taps = []
    for service, route in config.routes():
        subscription = route.from_
        if not isinstance(subscription, FromRabbitMQ) or subscription.effective_mode is not RabbitMQMode.SHADOW:
            continue
        if subscription.exchange is None or route_vhost(config, service, route) != vhost:
            continue
        bindings: tuple[tuple[str, Mapping[str, Any]], ...]
        if subscription.type is ExchangeType.HEADERS:
            bindings = (("", dict(subscription.arguments or {})),)
        elif subscription.type is ExchangeType.FANOUT:
            bindings = (("", {}),)
        else:
            bindings = tuple((key, {}) for key in subscription.bindings)
        taps.append(Tap(subscription.exchange, f"{service}/{route.name}", bindings))
    return taps


def legacy_routing(
    config: BridgeConfig, definitions: Definitions, exchange: str, routing_key: str, headers: Mapping[str, str]
) -> LegacyRouting:
    topology, vhost = definitions.topology, definitions.vhost
    return LegacyRouting(
        definitions=definitions.name,
        routed=route_message(topology, vhost, exchange, routing_key, headers, _taps(config, vhost)),
        without_bridge=route_message(topology, vhost, exchange, routing_key, headers),
    )


def legacy_miss_reason(
    config: BridgeConfig,
    service: str,
    route: RouteConfig,
    name: str,
    routed: Routed,
    routing_key: str,
    headers: Mapping[str, str],
) -> str | None:
    """None when the route takes the message as RabbitMQ routes it, else why not."""
    assert isinstance(route.from_, FromRabbitMQ)
    subscription = route.from_
    vhost = route_vhost(config, service, route)
    if vhost != routed.vhost:
        return f"reads vhost '{vhost}', not '{routed.vhost}'"
    if routed.refused is not None:
        return "RabbitMQ refuses the publish (see above)"
    if subscription.effective_mode is RabbitMQMode.SHADOW:
        if name in routed.routes:
            return None
        if name in routed.possible_routes:
            return (
                f"its shadow queue on exchange '{subscription.exchange}' is one choice of a hash exchange: it gets "
                "this message only if the hash picks it (a share of the traffic, not a copy)"
            )
        if subscription.exchange not in routed.exchanges:
            return f"copies exchange '{subscription.exchange}', which this message does not pass through"
        actual = routed.types.get(subscription.exchange or "", "unknown")
        if actual != subscription.type:
            # RabbitMQ matches the shadow queue's bindings by the exchange's own type, not the route's.
            return (
                f"binds to exchange '{subscription.exchange}' as a {subscription.type} exchange, but the export "
                f"has it as {actual}, and there its bindings do not take this message"
            )
        return amqp_miss_reason(subscription, subscription.exchange, routing_key, headers, None)
    queue = subscription.queue
    if queue in routed.queues:
        return None
    if queue in routed.possible_queues:
        return f"consumes queue '{queue}', one choice of a hash exchange: it gets this message if the hash picks it"
    return f"consumes queue '{queue}' ({subscription.effective_mode} mode), which this message does not reach"


def mismatches_of(
    config: BridgeConfig, definitions: Definitions, legacy: LegacyRouting, matches: list[RouteOutcome]
) -> list[Mismatch]:
    """Where the legacy estate and the mapping disagree about this message."""
    routed = legacy.routed
    if routed.refused is not None:
        return []
    found: list[Mismatch] = []
    reached = _queues_text(routed.queues, routed.possible_queues)
    gets = "gets" if len(routed.queues) == 1 and not routed.possible_queues else "get"
    copied = [outcome.route for outcome in matches]
    if reached and not copied:
        shadowed = {
            route.from_.exchange
            for service, route in config.routes()
            if isinstance(route.from_, FromRabbitMQ)
            and route.from_.effective_mode is RabbitMQMode.SHADOW
            and route.from_.exchange is not None
            and route_vhost(config, service, route) == routed.vhost
        }
        upstream = sorted(shadowed & feeding_exchanges(definitions.topology, routed.vhost, routed.exchange))
        if routed.types.get(routed.exchange) in CHOOSING_TYPES:
            advice = (
                f"A shadow queue bound to '{routed.exchange}' would take a share, not a copy: have producers "
                "publish to a fanout exchange bound in front of it."
            )
        else:
            advice = f"If producers publish to '{routed.exchange}', add a shadow route on it."
        if upstream:
            text = (
                f"NOT COPIED: published into '{routed.exchange}', downstream of where the bridge shadows "
                f"({', '.join(repr(name) for name in upstream)}): {reached} {gets} it, no route copies it. {advice}"
            )
        else:
            text = (
                f"NOT COPIED: {reached} {gets} it, but no route copies it: "
                + (
                    f"no route's bindings on '{routed.exchange}' or on an exchange on its way match it. "
                    if shadowed & set(routed.exchanges)
                    else f"no route shadows '{routed.exchange}' or an exchange on its way. "
                )
                + advice
            )
        found.append(Mismatch("not-copied", text))
    if copied and not reached:
        found.append(
            Mismatch(
                "no-legacy-queue",
                f"COPIED, NO LEGACY QUEUE: {', '.join(copied)} stores it, but RabbitMQ delivers it to no legacy "
                "queue: the stream keeps a message no legacy consumer gets (the route is bound wider than the "
                "legacy queues).",
            )
        )
    before = legacy.without_bridge
    lost = sorted(set(before.queues + before.possible_queues) - set(routed.queues + routed.possible_queues))
    if lost:
        found.append(
            Mismatch(
                "changed-by-bridge",
                f"CHANGED BY THE BRIDGE: without it RabbitMQ delivers this message to "
                f"{_queues_text(tuple(lost), ())} through an alternate exchange; the bridge's shadow queue takes "
                "it first, so the alternate exchange no longer gets it. Bind the shadow route with the legacy "
                "queues' keys only.",
            )
        )
    return found


def _queues_text(queues: tuple[str, ...], possible: tuple[str, ...]) -> str:
    """`legacy queue 'a'`, `legacy queues 'a', 'b'`, `... and one of 'x', 'y'`; '' for none."""
    parts = []
    if queues:
        parts.append(f"legacy queue{'s' if len(queues) > 1 else ''} {', '.join(repr(q) for q in queues)}")
    if possible:
        parts.append(f"one of legacy queues {', '.join(repr(q) for q in possible)} (picked by a hash)")
    return " and ".join(parts)
