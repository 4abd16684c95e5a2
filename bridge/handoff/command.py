"""`nats-bridge handoff SERVICE CONSUMER FILE`: a declared consumer takes over from the legacy
queue or group it `replaces`, starting exactly where that one stopped.

It reads the legacy side (a Kafka group's committed offsets, a queue's depth and head) and what
the bridge has stored, plans where the durable starts (bridge.handoff.kafka_plan, .queue_plan)
and, unless asked only for the plan, makes the durable there (bridge.handoff.durable). With
`--wait` a plan refused only because the bridge has not stored that far yet is tried again
until it has. In the shadow phase the stream holds the forward copies of everything the legacy
consumer received, so a consumer is best moved before its producers. In the drain phase the
reverse route that feeds the legacy consumer is held off while the positions are read
(bridge.handoff.drain, .drain_plan); a retired service has no legacy position left.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from nats.js import JetStreamContext
from nats.js import api as js_api

from bridge.brokers import BROKER_ERRORS, route_broker
from bridge.brokers.handover import GroupHandover, Handover, QueueHandover
from bridge.brokers.nats.client import close_quietly, connect_for_command
from bridge.brokers.rabbitmq.queues import QueueState
from bridge.config.consumer_refs import replaced_route
from bridge.config.consumers import ConsumerConfig
from bridge.config.model import BridgeConfig
from bridge.config.routes import RouteConfig
from bridge.config.services import Phase
from bridge.config.sources import KafkaSource
from bridge.cutover.store import PhaseStore
from bridge.errors import BridgeError
from bridge.handoff.drain import feeding_reverse, plan_drain, reverse_held_off, written_through
from bridge.handoff.drain_plan import DrainHandoffPlan
from bridge.handoff.durable import (
    HandoffResult,
    position_drain_durable,
    position_kafka_durable,
    position_queue_durable,
)
from bridge.handoff.kafka_between import CopiedBetween, copied_between
from bridge.handoff.kafka_plan import KafkaHandoffPlan, plan_kafka_handoff
from bridge.handoff.queue_plan import QueueHandoffPlan, QueueLook, plan_queue_looking
from bridge.jetstream.consumer_plan import HANDOFF_METADATA, to_nats_consumer
from bridge.mapping import MappingError
from bridge.plan import compile_plan

WAIT_STEP = 1.0
LEGACY_TIMEOUT = 15.0
# Refusals `--wait` waits out: the bridge has not stored up to the legacy position yet.
_CATCHING_UP = ("the bridge has stored up to", "wait for the bridge to catch up", "(--wait)")

HandoffPlan = KafkaHandoffPlan | QueueHandoffPlan | DrainHandoffPlan
_LEGACY_FAILURES: tuple[type[BaseException], ...] = (*BROKER_ERRORS, OSError, TimeoutError, BridgeError)


@dataclass(frozen=True, slots=True)
class Handoff:
    """What `handoff` planned, and (unless only asked for the plan) what it did."""

    service: str
    consumer: str
    plan: HandoffPlan
    result: HandoffResult | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "service": self.service,
            "consumer": self.consumer,
            "plan": self.plan.as_json(),
            "result": self.result.as_json() if self.result is not None else None,
        }


def declared_consumer(config: BridgeConfig, service: str, name: str) -> tuple[ConsumerConfig, RouteConfig]:
    """The consumer `name` of `service`, and the route that copies what its legacy consumer got."""
    if service not in config.services:
        raise BridgeError(
            f"no service '{service}' in the mapping file (services: {', '.join(sorted(config.services))})"
        )
    consumers = config.services[service].consumers
    consumer = next((c for c in consumers if c.name == name), None)
    if consumer is None:
        known = ", ".join(c.name for c in consumers) or "none"
        raise BridgeError(f"service '{service}' declares no consumer '{name}' (its consumers: {known})")
    if consumer.replaces is None:
        raise BridgeError(
            f"consumer '{name}' says no `replaces:`: handoff needs the legacy queue or group it takes over"
        )
    route = replaced_route(config.services[service], consumer.replaces)
    if isinstance(route, str):
        raise BridgeError(f"consumer '{name}': {route}")
    return consumer, route


async def handoff(
    config: BridgeConfig,
    service: str,
    name: str,
    *,
    plan_only: bool = False,
    from_earliest_available: bool = False,
    wait: float = 0.0,
) -> Handoff:
    """Plan (and unless `plan_only`, carry out) the handoff; BridgeError for what cannot be read."""
    consumer, route = declared_consumer(config, service, name)
    nc = await connect_for_command(config)
    try:
        js = nc.jetstream()
        if await _phase(js, service) is Phase.DRAIN:
            return await _drain_handoff(js, config, service, consumer, route, plan_only, from_earliest_available, wait)
        deadline = time.monotonic() + wait
        while True:
            plan = await _plan(js, config, service, consumer, route, from_earliest_available)
            if not plan.refused or time.monotonic() >= deadline or not _only_catching_up(plan):
                break
            await asyncio.sleep(WAIT_STEP)
        if plan_only or plan.refused:
            return Handoff(service, name, plan)
        declared = _marked(to_nats_consumer(consumer), plan)
        if isinstance(plan, KafkaHandoffPlan):
            result = await position_kafka_durable(js, plan, declared)
        else:
            result = await position_queue_durable(js, plan, declared)
        after = await _legacy_lag(config, service, consumer, route)
        result = dataclasses.replace(result, legacy_lag_after=after)
        copied = _copied_between(config, service, route)
        if isinstance(plan, KafkaHandoffPlan) and not result.matches and copied is not None:
            result = dataclasses.replace(result, legacy_records=await _records_behind(plan, copied))
        return Handoff(service, name, plan, result)
    finally:
        await close_quietly(nc)


async def _phase(js: JetStreamContext, service: str) -> Phase:
    record, _ = await PhaseStore(js, create=False).get(service)
    if record.phase is Phase.RETIRED:
        raise BridgeError(
            f"service '{service}' is retired: its legacy side is no longer copied, so there is no position to take "
            "over from (hand consumers off in shadow, or in drain while a reverse route feeds them)"
        )
    return record.phase


async def _drain_handoff(
    js: JetStreamContext,
    config: BridgeConfig,
    service: str,
    consumer: ConsumerConfig,
    route: RouteConfig,
    plan_only: bool,
    from_earliest_available: bool,
    wait: float,
) -> Handoff:
    """In drain: the reverse route feeding the legacy consumer held off while positions are read."""
    reverse = feeding_reverse(config, service, consumer, route)
    filters = _filters(config, consumer)

    async def plan_at(through: int, waiting: float) -> DrainHandoffPlan:
        deadline = time.monotonic() + waiting
        while True:
            try:
                plan = await plan_drain(
                    js,
                    config,
                    service,
                    consumer,
                    route,
                    reverse,
                    through=through,
                    filters=filters,
                    from_earliest_available=from_earliest_available,
                    seconds=LEGACY_TIMEOUT,
                    copied=_copied_between(config, service, route),
                )
            except BridgeError:
                raise
            except _LEGACY_FAILURES as error:
                raise BridgeError(
                    f"the legacy side of '{consumer.name}' could not be read: {str(error) or type(error).__name__}"
                ) from error
            if not plan.refused or time.monotonic() >= deadline or not _only_catching_up(plan):
                return plan
            await asyncio.sleep(WAIT_STEP)

    if plan_only or wait:
        # `--wait` waits for the bridge to catch up before the reverse route is held off, so the
        # legacy consumers still on it are not kept waiting. Only that counts of this look: with
        # the route still writing, its other refusals may be the route's doing, not the queue's.
        plan = await plan_at(await written_through(js, service, reverse), wait)
        if plan_only or (plan.refused and _only_catching_up(plan)):
            return Handoff(service, consumer.name, plan)
    async with reverse_held_off(js, config, service, reverse, consumer.name) as through:
        plan = await plan_at(through, 0.0)
        if plan.refused:
            return Handoff(service, consumer.name, plan)
        result = await position_drain_durable(js, plan, _marked(to_nats_consumer(consumer), plan))
    return Handoff(service, consumer.name, plan, result)


def _filters(config: BridgeConfig, consumer: ConsumerConfig) -> list[str]:
    """The consumer's filter subjects; without any, its stream's subjects."""
    if consumer.filter_subjects:
        return list(consumer.filter_subjects)
    return list(next(s.subjects for s in config.streams if s.name == consumer.stream))


async def _plan(
    js: JetStreamContext,
    config: BridgeConfig,
    service: str,
    consumer: ConsumerConfig,
    route: RouteConfig,
    from_earliest_available: bool,
) -> KafkaHandoffPlan | QueueHandoffPlan:
    replaces = consumer.replaces
    assert replaces is not None
    filters = _filters(config, consumer)
    try:
        found = await route_broker(config, service, route).legacy_position(replaces, seconds=LEGACY_TIMEOUT)
        if isinstance(found, GroupHandover):
            return await plan_kafka_handoff(
                js,
                stream=consumer.stream,
                durable=consumer.name,
                filters=filters,
                group=found.group,
                stored_through=found.stored,
                from_earliest_available=from_earliest_available,
                copied=_copied_between(config, service, route),
            )
        first: QueueHandover | None = found

        async def look() -> QueueLook:
            """The queue read (the first time, as read above), with its head's Msg-Id."""
            nonlocal first
            seen: Handover | None = first
            first = None
            if seen is None:
                seen = await route_broker(config, service, route).legacy_position(replaces, seconds=LEGACY_TIMEOUT)
            assert isinstance(seen, QueueHandover)
            return QueueLook(seen.queue, _head_id(config, service, route, seen.queue), seen.shadow_backlog)

        async def depth() -> int:
            """The queue's depth, its head left alone."""
            lag = await route_broker(config, service, route).legacy_lag(replaces)
            return lag if lag is not None else (await look()).queue.depth

        return await plan_queue_looking(
            js, stream=consumer.stream, durable=consumer.name, filters=filters, look=look, depth=depth
        )
    except _LEGACY_FAILURES as error:
        raise BridgeError(
            f"the legacy side of '{consumer.name}' could not be read: {str(error) or type(error).__name__}"
        ) from None


async def _records_behind(plan: KafkaHandoffPlan, copied: CopiedBetween) -> int | None:
    """The group's lag in records the route stores, asked of Kafka when the offsets did not match
    the durable's count: a transactional topic's markers and skipped records take offsets, so an
    exact handoff would otherwise be reported as differing. None when Kafka cannot say in time."""
    total = 0
    for lane in plan.partitions:
        if lane.committed is None or lane.lag is None:
            return None
        records = await copied((lane.topic, lane.partition), lane.committed, lane.committed + lane.lag)
        if records is None:
            return None
        total += records
    return total


def _copied_between(config: BridgeConfig, service: str, route: RouteConfig) -> CopiedBetween | None:
    """What Kafka says lies between two offsets, for the route (None: not a Kafka route)."""
    source = config.sources[route.source]
    if not isinstance(source, KafkaSource):
        return None
    return copied_between(source, compile_plan(config).route(f"{service}/{route.name}"), seconds=LEGACY_TIMEOUT)


def _head_id(config: BridgeConfig, service: str, route: RouteConfig, queue: QueueState) -> str | None:
    """The Msg-Id the route gave the queue's head (None: empty, or the route cannot map it)."""
    if queue.head is None:
        return None
    try:
        return compile_plan(config).route(f"{service}/{route.name}").map(queue.head).msg_id
    except MappingError:
        return None


async def _legacy_lag(config: BridgeConfig, service: str, consumer: ConsumerConfig, route: RouteConfig) -> int | None:
    """The legacy lag read again (None when it cannot be read: the result then says only the first)."""
    replaces = consumer.replaces
    assert replaces is not None
    try:
        return await route_broker(config, service, route).legacy_lag(replaces)
    except _LEGACY_FAILURES:
        return None


def _only_catching_up(plan: HandoffPlan) -> bool:
    return all(any(words in why for words in _CATCHING_UP) for why in plan.why_not())


def _marked(declared: js_api.ConsumerConfig, plan: HandoffPlan) -> js_api.ConsumerConfig:
    """The durable says where it took over (and `consumers plan` then accepts its start)."""
    if isinstance(plan, DrainHandoffPlan):
        legacy = f"{plan.legacy} in drain"
    else:
        legacy = f"group {plan.group}" if isinstance(plan, KafkaHandoffPlan) else f"queue {plan.queue}"
    when = datetime.now(UTC).isoformat(timespec="seconds")
    metadata = {**(declared.metadata or {}), HANDOFF_METADATA: f"{legacy} at {when}"}
    declared.metadata = metadata
    return declared


def format_handoff(done: Handoff) -> str:
    """The report for people: per lane where the durable starts, then what was done or why not."""
    plan = done.plan
    lines = [f"handoff {done.service}/{done.consumer}: stream {plan.stream}, durable {plan.durable}"]
    if isinstance(plan, KafkaHandoffPlan):
        lines.append(f"  legacy: Kafka group {plan.group}, lag {plan.lag}")
        for lane in plan.partitions:
            where = (
                f"offset {lane.committed} -> sequence {lane.start}"
                if lane.start is not None
                else f"offset {lane.committed}: every stored record processed"
            )
            lines.append(
                f"  {lane.topic}/{lane.partition}: {where}" + (f"  REFUSED: {lane.refusal}" if lane.refusal else "")
            )
        lines.append(
            f"  start at sequence {plan.start_sequence}; {plan.to_ack} record(s) below their partition's offset to ack"
        )
    elif isinstance(plan, DrainHandoffPlan):
        lines += _drain_lines(plan)
    else:
        lines.append(f"  legacy: RabbitMQ queue {plan.queue}, {plan.depth} message(s) not processed")
        lines.append(f"  its head {plan.head_msg_id or '-'} -> sequence {plan.start_sequence or '-'}")
    for why in plan.refusals:
        lines.append(f"  REFUSED: {why}")
    result = done.result
    if result is None:
        lines.append("  refused: nothing was changed" if plan.refused else "  plan only: nothing was changed")
    else:
        verdict = "match" if result.matches else "DIFFER"
        moving = ""
        if result.legacy_lag_after is not None and result.legacy_lag_after != result.legacy_lag:
            moving = f" ({result.legacy_lag_after} now: legacy producers still publish)"
        records = ""
        if result.legacy_records is not None:
            records = f" = {result.legacy_records} record(s) the route stores (markers, skipped records: offsets)"
        lines.append(
            f"  durable {result.durable} made at sequence {result.start_sequence}: acked {result.acked}, "
            f"given back {result.given_back}; pending {result.pending} vs legacy lag {result.legacy_lag}{records}"
            f"{moving}: {verdict}"
        )
    return "\n".join(lines) + "\n"


def _drain_lines(plan: DrainHandoffPlan) -> list[str]:
    return [
        f"  legacy: {plan.legacy}, {plan.lag} message(s) not processed: {plan.from_reverse} written by reverse "
        f"route {plan.reverse}, {plan.from_legacy} from legacy producers",
        f"  reverse route {plan.reverse} wrote through sequence {plan.written_through}; {plan.unwritten} NATS "
        "message(s) after it never reached the legacy side: the durable delivers them too",
        f"  start at sequence {plan.start_sequence}; {plan.to_ack} message(s) after it the legacy consumer "
        "processed, to ack",
    ]
