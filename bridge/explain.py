"""`explain`: which routes take a given message, and exactly what each would publish.

It runs the same matching (`bridge.routing`) and mapping (`bridge.mapping`) code as the
live bridge, offline, so its answer is the bridge's behaviour rather than a description
of it. Routes that do not take the message are listed with the reason, because "why
didn't my message arrive" is the question people bring to this command.

Given the legacy estate (a RabbitMQ definitions export, `explain --definitions`), an AMQP
message is also routed as RabbitMQ routes it (`bridge.importers.topology_routing`): which
legacy queues get it and through which exchanges, with the bridge's shadow queues bound
where its routes bind them. A shadow route then takes the message when its queue is reached
(through exchange-to-exchange bindings too), a queue route when its queue is; and the two
answers are compared, because the migration's risk is exactly where they differ: a message
legacy consumers get that no stream keeps, or one a stream keeps that no legacy consumer got.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.config.model import BridgeConfig
from bridge.config.routes import FromKafka, FromRabbitMQ, RabbitMQMode, RouteConfig
from bridge.config.sources import RabbitMQSource
from bridge.deadletters import DeadLetterReason, offline_subject_room
from bridge.decide import DEFAULT_MAX_PAYLOAD, DecideContext, Fate, decide
from bridge.importers.topology import Topology
from bridge.importers.topology_routing import (
    CHOOSING_TYPES,
    Path,
    Routed,
    Tap,
    feeding_exchanges,
    route_message,
)
from bridge.mapping import CompiledRoute
from bridge.message import AmqpOrigin, KafkaOrigin, SourceMessage
from bridge.routing import ExchangeType, exchange_matches, kafka_topic_matches
from bridge.streams import streams_capturing


@dataclass(frozen=True, slots=True)
class RouteOutcome:
    """What one matching route would do with the message."""

    route: str
    source: str
    subject: str | None
    msg_id: str | None
    msg_id_strategy: str
    msg_id_reason: str
    headers: Mapping[str, str]
    size: int
    streams: tuple[str, ...]
    error: str | None = None  # why it cannot be mapped
    fate: str = "publish"  # bridge.decide.Fate: publish | filtered | dead-letter | skip | stop
    problem: str | None = None  # a DeadLetterReason value when it cannot go where the route says
    detail: str | None = None  # why it is filtered, or what is wrong with it
    encoded_size: int = 0  # payload plus header block: what max_payload is checked against

    def as_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "source": self.source,
            "subject": self.subject,
            "msg_id": self.msg_id,
            "msg_id_strategy": self.msg_id_strategy,
            "msg_id_reason": self.msg_id_reason,
            "headers": dict(self.headers),
            "size": self.size,
            "streams": list(self.streams),
            "error": self.error,
            "fate": self.fate,
            "problem": self.problem,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Definitions:
    """The legacy estate to route through: a checked definitions export, read as `import rabbitmq` reads it.
    `vhost` is the vhost the message is published in (and of export items that name none)."""

    topology: Topology
    name: str
    vhost: str = "/"


@dataclass(frozen=True, slots=True)
class Mismatch:
    """Where RabbitMQ and the bridge disagree about a message, in words a person can act on."""

    kind: str  # "not-copied" | "no-legacy-queue" | "changed-by-bridge"
    message: str

    def as_json(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}


@dataclass(frozen=True, slots=True)
class LegacyRouting:
    """RabbitMQ's routing of the message: `routed` with the bridge's shadow queues bound (how it goes
    while the bridge shadows), `without_bridge` as before it (they differ only through alternate
    exchanges, which a shadow queue that takes the message keeps it from)."""

    definitions: str
    routed: Routed
    without_bridge: Routed

    def as_json(self) -> dict[str, Any]:
        return {
            "definitions": self.definitions,
            **self.routed.as_json(),
            "without_bridge": {
                "queues": list(self.without_bridge.queues),
                "possible_queues": list(self.without_bridge.possible_queues),
            },
        }


@dataclass(frozen=True, slots=True)
class Explanation:
    """Every route's verdict on one message (and RabbitMQ's, when a definitions export was given)."""

    message: str
    matches: list[RouteOutcome] = field(default_factory=list)
    misses: list[tuple[str, str]] = field(default_factory=list)
    legacy: LegacyRouting | None = None
    mismatches: list[Mismatch] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "message": self.message,
            "matches": [outcome.as_json() for outcome in self.matches],
            "misses": [{"route": route, "reason": reason} for route, reason in self.misses],
        }
        if self.legacy is not None:
            document["legacy"] = self.legacy.as_json()
            document["mismatches"] = [mismatch.as_json() for mismatch in self.mismatches]
        return document


def explain_amqp(
    config: BridgeConfig,
    *,
    exchange: str | None,
    routing_key: str,
    headers: Mapping[str, str] | None = None,
    queue: str | None = None,
    body: bytes = b"",
    properties: Mapping[str, Any] | None = None,
    definitions: Definitions | None = None,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
) -> Explanation:
    """Explain a RabbitMQ message published to `exchange` (or found in `queue`); with `definitions`,
    also where RabbitMQ sends it and where that and the mapping disagree (module docstring)."""
    header_items = tuple((headers or {}).items())
    where = f"exchange '{exchange}'" if exchange is not None else f"queue '{queue}'"
    legacy = None
    if definitions is not None and exchange is not None:
        legacy = _legacy_routing(config, definitions, exchange, routing_key, dict(header_items))
    explanation = Explanation(f"RabbitMQ message on {where} with routing key '{routing_key}'", legacy=legacy)
    for service, route in config.routes():
        if not isinstance(route.from_, FromRabbitMQ):
            continue
        name = f"{service}/{route.name}"
        if legacy is not None and definitions is not None:
            reason = _legacy_miss_reason(config, route, name, legacy.routed, routing_key, dict(header_items))
        else:
            reason = _amqp_miss_reason(route.from_, exchange, routing_key, dict(header_items), queue)
        if reason is not None:
            explanation.misses.append((name, reason))
            continue
        origin = AmqpOrigin(
            exchange=exchange or "",
            routing_key=routing_key,
            queue=queue or route.from_.queue,
            properties=dict(properties or {}),
            stream_offset=0 if route.from_.effective_mode is RabbitMQMode.STREAM else None,
        )
        message = SourceMessage(origin=origin, body=body, headers=header_items)
        explanation.matches.append(route_outcome(config, service, route, message, max_payload=max_payload))
    if not any(isinstance(route.from_, FromRabbitMQ) for _, route in config.routes()):
        explanation.misses.append(("*", "the mapping file has no RabbitMQ routes"))
    if legacy is not None and definitions is not None:
        explanation.mismatches.extend(_mismatches(config, definitions, legacy, explanation.matches))
    return explanation


def explain_kafka(
    config: BridgeConfig,
    *,
    topic: str,
    key: bytes | None = None,
    partition: int = 0,
    offset: int = 0,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = b"",
    max_payload: int = DEFAULT_MAX_PAYLOAD,
) -> Explanation:
    """Explain a Kafka record on `topic` (at `partition`/`offset`, 0/0 unless given)."""
    header_items = tuple((name, value.encode("utf-8")) for name, value in (headers or {}).items())
    explanation = Explanation(f"Kafka record on topic '{topic}' partition {partition} offset {offset}")
    for service, route in config.routes():
        if not isinstance(route.from_, FromKafka):
            continue
        name = f"{service}/{route.name}"
        subscription = route.from_
        if not kafka_topic_matches(topic, subscription.topics, subscription.topic_pattern):
            wanted = (
                f"topics {subscription.topics}"
                if subscription.topics
                else f"topic_pattern '{subscription.topic_pattern}' (must match the whole name)"
            )
            explanation.misses.append((name, f"reads {wanted}, not '{topic}'"))
            continue
        origin = KafkaOrigin(topic=topic, partition=partition, offset=offset, key=key)
        message = SourceMessage(origin=origin, body=body, headers=header_items)
        explanation.matches.append(route_outcome(config, service, route, message, max_payload=max_payload))
    if not any(isinstance(route.from_, FromKafka) for _, route in config.routes()):
        explanation.misses.append(("*", "the mapping file has no Kafka routes"))
    return explanation


def _amqp_miss_reason(
    subscription: FromRabbitMQ,
    exchange: str | None,
    routing_key: str,
    headers: Mapping[str, str],
    queue: str | None,
) -> str | None:
    """None when the route takes the message, else why not, in the user's terms."""
    mode = subscription.effective_mode
    if mode is not RabbitMQMode.SHADOW:
        if queue is not None and queue == subscription.queue:
            return None
        if queue is not None:
            return f"consumes queue '{subscription.queue}', not '{queue}'"
        return (
            f"consumes queue '{subscription.queue}' ({mode} mode): which messages reach it depends on "
            "bindings on the broker; ask with --queue"
        )
    if queue is not None and exchange is None:
        return f"copies exchange '{subscription.exchange}' (shadow mode), not a queue"
    if exchange != subscription.exchange:
        return f"copies exchange '{subscription.exchange}', not '{exchange}'"
    if exchange_matches(subscription.type, subscription.bindings, subscription.arguments, routing_key, headers):
        return None
    if subscription.type is ExchangeType.HEADERS:
        return f"headers binding {dict(subscription.arguments)} does not match headers {dict(headers)}"
    keys = ", ".join(f"'{key}'" for key in subscription.bindings)
    return f"{subscription.type} binding key(s) {keys} do not match routing key '{routing_key}'"


def _route_vhost(config: BridgeConfig, route: RouteConfig) -> str | None:
    source = config.sources.get(route.source)
    return source.effective_vhost if isinstance(source, RabbitMQSource) else None


def _taps(config: BridgeConfig, vhost: str) -> list[Tap]:
    """The bridge's shadow queues in `vhost`, bound as `run` binds them (bridge.brokers.rabbitmq.source):
    a headers route with its arguments, a fanout route with '', the others once per key."""
    taps = []
    for service, route in config.routes():
        subscription = route.from_
        if not isinstance(subscription, FromRabbitMQ) or subscription.effective_mode is not RabbitMQMode.SHADOW:
            continue
        if subscription.exchange is None or _route_vhost(config, route) != vhost:
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


def _legacy_routing(
    config: BridgeConfig, definitions: Definitions, exchange: str, routing_key: str, headers: Mapping[str, str]
) -> LegacyRouting:
    topology, vhost = definitions.topology, definitions.vhost
    return LegacyRouting(
        definitions=definitions.name,
        routed=route_message(topology, vhost, exchange, routing_key, headers, _taps(config, vhost)),
        without_bridge=route_message(topology, vhost, exchange, routing_key, headers),
    )


def _legacy_miss_reason(
    config: BridgeConfig,
    route: RouteConfig,
    name: str,
    routed: Routed,
    routing_key: str,
    headers: Mapping[str, str],
) -> str | None:
    """None when the route takes the message as RabbitMQ routes it, else why not."""
    assert isinstance(route.from_, FromRabbitMQ)
    subscription = route.from_
    vhost = _route_vhost(config, route)
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
        return _amqp_miss_reason(subscription, subscription.exchange, routing_key, headers, None)
    queue = subscription.queue
    if queue in routed.queues:
        return None
    if queue in routed.possible_queues:
        return f"consumes queue '{queue}', one choice of a hash exchange: it gets this message if the hash picks it"
    return f"consumes queue '{queue}' ({subscription.effective_mode} mode), which this message does not reach"


def _mismatches(
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
            for _, route in config.routes()
            if isinstance(route.from_, FromRabbitMQ)
            and route.from_.effective_mode is RabbitMQMode.SHADOW
            and route.from_.exchange is not None
            and _route_vhost(config, route) == routed.vhost
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


def route_outcome(
    config: BridgeConfig,
    service: str,
    route: RouteConfig,
    message: SourceMessage,
    *,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
) -> RouteOutcome:
    """What `run` would do with this message on this route: `bridge.decide`, the running
    bridge's own decision, so explain, dry-run replays and samples can never disagree with it."""
    compiled = CompiledRoute.of(config, service, route)
    choice = compiled.msg_id_choice(message)
    verdict = decide(
        compiled,
        message,
        DecideContext(max_payload=max_payload, streams=config.streams, subject_room=offline_subject_room(max_payload)),
    )
    outbound = verdict.outbound
    problem = verdict.reason.value if verdict.reason is not None else None
    if outbound is None:
        unmappable = verdict.reason is DeadLetterReason.UNMAPPABLE
        return RouteOutcome(
            route=compiled.key,
            source=route.source,
            subject=None,
            msg_id=None,
            msg_id_strategy=choice.strategy,
            msg_id_reason=choice.reason,
            headers={},
            size=len(message.body or b""),
            streams=(),
            error=f"{verdict.detail} (on_error: {route.on_error})" if unmappable else None,
            fate=verdict.fate.value,
            problem=problem,
            detail=verdict.detail,
            encoded_size=verdict.size,
        )
    return RouteOutcome(
        route=compiled.key,
        source=route.source,
        subject=outbound.subject,
        msg_id=outbound.msg_id,
        msg_id_strategy=choice.strategy,
        msg_id_reason=choice.reason,
        headers=outbound.headers,
        size=len(outbound.payload),
        streams=verdict.streams
        if verdict.published
        else tuple(stream.name for stream in streams_capturing(outbound.subject, config.streams)),
        fate=verdict.fate.value,
        problem=problem,
        detail=verdict.detail or None,
        encoded_size=verdict.size,
    )


def format_explanation(explanation: Explanation) -> str:
    """The human-readable report `nats-bridge explain` prints."""
    lines = [explanation.message, ""]
    if explanation.legacy is not None:
        lines += _legacy_lines(explanation.legacy)
        lines += [line for mismatch in explanation.mismatches for line in (mismatch.message, "")]
    if not explanation.matches:
        lines.append("No route takes this message.")
    for outcome in explanation.matches:
        lines.append(f"route {outcome.route}  (source '{outcome.source}')")
        if outcome.fate == Fate.FILTERED:
            lines.append(f"  filtered: {outcome.detail}")
            lines.append("")
            continue
        if outcome.error is not None:
            lines.append(f"  cannot be mapped: {outcome.error}")
            lines.append("")
            continue
        if outcome.streams:
            stream_note = ", ".join(outcome.streams)
            if len(outcome.streams) > 1:
                stream_note += "  (more than one stream captures it: JetStream will refuse it)"
        else:
            stream_note = "none declared in this file captures it"
        lines += [
            f"  subject      {outcome.subject}",
            f"  stream       {stream_note}",
            f"  Nats-Msg-Id  {outcome.msg_id}",
            f"               strategy {outcome.msg_id_strategy}: {outcome.msg_id_reason}",
            f"  size         {outcome.size} bytes",
            "  headers",
        ]
        width = max((len(name) for name in outcome.headers), default=0)
        lines += [f"    {name.ljust(width)}  {value}" for name, value in outcome.headers.items()]
        if outcome.problem is not None:
            lines.append(f"  cannot be delivered: {outcome.detail} ({outcome.problem}; on_error: {outcome.fate})")
        lines.append("")
    if explanation.misses:
        lines.append("Routes that do not take it:")
        lines += [f"  {route}: {reason}" for route, reason in explanation.misses]
    return "\n".join(lines).rstrip() + "\n"


def _legacy_lines(legacy: LegacyRouting) -> list[str]:
    """RabbitMQ's side: each path, the legacy queues reached, and what else the export says."""
    routed = legacy.routed
    lines = [f"RabbitMQ, as {legacy.definitions} describes it (vhost '{routed.vhost}'):"]
    if routed.refused is not None:
        return [*lines, f"  {routed.refused}", ""]
    lines += [f"  {_path_text(routed.exchange, path, routed.types)}" for path in routed.paths]
    if routed.more_paths:
        lines.append(f"  ... more paths than the {len(routed.paths)} shown")
    reached = [", ".join(routed.queues)] if routed.queues else []
    if routed.possible_queues:
        reached.append(f"one of {', '.join(routed.possible_queues)} (picked by a hash)")
    lines.append(f"  legacy queues: {'; and '.join(reached) or 'none'}")
    lines += [f"  note: {note}" for note in routed.notes]
    return [*lines, ""]


def _path_text(published: str, path: Path, types: Mapping[str, str]) -> str:
    """`'a' (topic) -[eu.#]-> 'b' (topic) -[*.orders.#]-> queue 'q'`: one way the message goes."""

    def exchange(name: str) -> str:
        return f"'{name}' ({types.get(name, '?')})" if name else "the default exchange"

    def arrow(via: str) -> str:
        return f" -[{via}]-> " if via else " --> "

    text = exchange(published)
    for hop in path.hops:
        if hop.destination_kind == "exchange":
            target = exchange(hop.destination)
        elif hop.destination_kind == "route":
            target = f"bridge route {hop.destination}"
        else:
            target = f"queue '{hop.destination}'"
        text += arrow(hop.via) + target
    if path.choice is not None:
        options = ", ".join(
            f"{'bridge route' if hop.destination_kind == 'route' else hop.destination_kind} '{hop.destination}'"
            for hop in path.choice.options
        )
        text += f"{arrow(path.choice.options[0].via)}one of: {options} (by {path.choice.basis})"
    if path.stop is not None:
        text += f": {path.stop}"
    return text
