"""One route's outcome for one message: `bridge.decide`, the running bridge's own decision."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bridge.config.routes import FromRabbitMQ, RabbitMQMode
from bridge.config.streams import StreamConfig
from bridge.deadletters import DeadLetterReason, offline_subject_room
from bridge.decide import DEFAULT_MAX_PAYLOAD, DecideContext, decide
from bridge.explain.types import RouteOutcome
from bridge.mapping import CompiledRoute
from bridge.message import SourceMessage
from bridge.routing import ExchangeType, exchange_matches
from bridge.streams import streams_capturing


def route_outcome(
    compiled: CompiledRoute,
    message: SourceMessage,
    streams: Sequence[StreamConfig],
    *,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
) -> RouteOutcome:
    """What `run` would do with this message on this route: `bridge.decide`, the running
    bridge's own decision, so explain, dry-run replays and samples can never disagree with it."""
    route = compiled.config
    choice = compiled.msg_id_choice(message)
    verdict = decide(
        compiled,
        message,
        DecideContext(max_payload=max_payload, streams=streams, subject_room=offline_subject_room(max_payload)),
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
        else tuple(stream.name for stream in streams_capturing(outbound.subject, streams)),
        fate=verdict.fate.value,
        problem=problem,
        detail=verdict.detail or None,
        encoded_size=verdict.size,
    )


def amqp_miss_reason(
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
