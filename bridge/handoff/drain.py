"""The drain phase's handoff: the reverse route that feeds the legacy consumer held off while the
positions are read, the legacy backlog read, and the plan made (bridge.handoff.drain_plan).

The reverse route is switched off through the same record `nats-bridge reverse --to off` writes
(bridge.cutover.reverse_switch), so every running bridge stops writing to the legacy side, and
the handoff waits until nobody pulls from its durable and nothing is in flight: from then on the
durable's acknowledged sequence says exactly what was written. The switch is set back as it was
afterwards. `--plan` switches nothing: it reads the durable as it stands, and says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from nats.js import JetStreamContext

from bridge.brokers import route_broker
from bridge.brokers.base import RangeRead, ReadLimits
from bridge.brokers.handover import GroupHandover
from bridge.brokers.kafka.groups import GroupPosition
from bridge.config.consumers import ConsumerConfig
from bridge.config.model import BridgeConfig
from bridge.config.routes import RouteConfig
from bridge.config.services import ReverseRouteConfig
from bridge.cutover.reverse_control import look_at_durable, wait_until_quiet
from bridge.cutover.reverse_switch import Switch, read_switch, write_switch
from bridge.cutover.store import PhaseStore
from bridge.errors import BridgeError
from bridge.handoff.drain_plan import DrainHandoffPlan, plan_kafka_drain, plan_queue_drain
from bridge.handoff.kafka_between import CopiedBetween
from bridge.handoff.stored import stream_position
from bridge.mapping import MappingError
from bridge.plan import compile_plan

QUIET_WAIT = 30.0  # seconds for the bridges to stop the reverse route
BACKLOG_READS = ReadLimits(seconds=15.0, stall=15.0, fetch_stall=15.0, idle=2.0)


def feeding_reverse(
    config: BridgeConfig, service: str, consumer: ConsumerConfig, route: RouteConfig
) -> ReverseRouteConfig:
    """The service's reverse route that writes from the consumer's stream where the legacy consumer
    reads (the exchange its queue is bound to, a topic of its group); BridgeError when none or
    several do (the handoff then cannot tell which NATS messages the legacy consumer received)."""
    replaces = consumer.replaces
    assert replaces is not None
    broker = route_broker(config, service, route)
    found = [
        (reverse, where)
        for reverse in config.services[service].reverse
        if reverse.stream == consumer.stream and (where := broker.fed_by(reverse.to, replaces)) is not None
    ]
    if len(found) == 1:
        return found[0][0]
    if not found:
        raise BridgeError(
            f"service '{service}' is in drain, and no reverse route of it writes from stream '{consumer.stream}' where "
            f"{replaces.describe()} reads: it received nothing NATS producers published, so no JetStream position "
            "matches where it stopped; hand consumers off in the shadow phase, before the producers move"
        )
    names = ", ".join(f"{reverse.name} ({where})" for reverse, where in found)
    raise BridgeError(
        f"several reverse routes of '{service}' write where {replaces.describe()} reads ({names}): the handoff "
        "cannot tell which NATS messages the legacy consumer received"
    )


@contextlib.asynccontextmanager
async def reverse_held_off(
    js: JetStreamContext, config: BridgeConfig, service: str, reverse: ReverseRouteConfig, consumer: str
) -> AsyncIterator[int]:
    """The reverse route switched off and seen stopped; yields the sequence it wrote through.
    Its switch is set back afterwards when it was on."""
    store = PhaseStore(js, replicas=config.state_replicas)
    current, _ = await read_switch(store, service, reverse.name)
    was_on = current is None or current.switch is Switch.ON
    durable = reverse.durable_name(service)
    reason = f"handoff of consumer {consumer}: reading where the legacy consumer stopped"
    if was_on:
        await write_switch(store, service, reverse.name, Switch.OFF, by="nats-bridge handoff", reason=reason)
    try:
        stopped, look = await wait_until_quiet(js, reverse.stream, durable, QUIET_WAIT)
        if not stopped:
            raise BridgeError(
                f"reverse route {service}/{reverse.name} did not stop within {QUIET_WAIT:.0f}s ({look.waiting} pull "
                f"request(s) waiting, {look.ack_pending} in flight): a bridge that ignores its switch still runs it"
            )
        yield look.acked_through if look.exists else 0
    finally:
        if was_on:
            await write_switch(store, service, reverse.name, Switch.ON, by="nats-bridge handoff", reason="handoff done")


async def written_through(js: JetStreamContext, service: str, reverse: ReverseRouteConfig) -> int:
    """The reverse route's acknowledged sequence as it stands (for `--plan`, which switches nothing)."""
    look = await look_at_durable(js, reverse.stream, reverse.durable_name(service))
    return look.acked_through if look.exists else 0


async def plan_drain(
    js: JetStreamContext,
    config: BridgeConfig,
    service: str,
    consumer: ConsumerConfig,
    route: RouteConfig,
    reverse: ReverseRouteConfig,
    *,
    through: int,
    filters: Sequence[str],
    from_earliest_available: bool,
    seconds: float,
    copied: CopiedBetween | None = None,
) -> DrainHandoffPlan:
    """Read the legacy side and plan the drain-phase handoff."""
    replaces = consumer.replaces
    assert replaces is not None
    broker = route_broker(config, service, route)
    found = await broker.legacy_position(replaces, seconds=seconds)
    reverse_key = f"{service}/{reverse.name}"
    if isinstance(found, GroupHandover):
        group = found.group
        lag = sum(
            (group.lag(lane) or 0) if offset is not None else group.ends.get(lane, 0) - group.beginnings.get(lane, 0)
            for lane, offset in group.committed.items()
        )
        plan = DrainHandoffPlan(
            consumer.stream, consumer.name, f"Kafka group '{group.group}'", lag, reverse_key, through, group=group.group
        )
        positions = await _backlog_positions(
            broker.ranges(purpose="handoff", limits=BACKLOG_READS), group, consumer.stream
        )
        return await plan_kafka_drain(
            js,
            plan,
            filters=filters,
            group=group,
            stored_through=found.stored,
            backlog_positions=positions,
            from_earliest_available=from_earliest_available,
            copied=copied,
        )
    queue = found.queue
    plan = DrainHandoffPlan(
        consumer.stream,
        consumer.name,
        f"RabbitMQ queue '{queue.queue}'",
        queue.depth,
        reverse_key,
        through,
        queue=queue.queue,
    )
    head_position = head_id = None
    if queue.head is not None:
        head_position = stream_position(queue.head.headers, consumer.stream)
        if head_position is None:
            with contextlib.suppress(MappingError):
                head_id = compile_plan(config).route(f"{service}/{route.name}").map(queue.head).msg_id
    return await plan_queue_drain(
        js,
        plan,
        filters=filters,
        consumers=queue.consumers,
        head_position=head_position,
        head_msg_id=head_id,
        shadow_backlog=found.shadow_backlog,
    )


async def _backlog_positions(reader: RangeRead, group: GroupPosition, stream: str) -> list[int | None]:
    """For each record of the group's backlog, the stream sequence a reverse route's header names."""
    positions: list[int | None] = []
    async with reader:
        # A partition the group never committed is unprocessed from its first record on (the plan
        # refuses it unless --from-earliest-available).
        starts = {
            lane: committed if committed is not None else group.beginnings.get(lane, 0)
            for lane, committed in group.committed.items()
        }
        ranges = {
            reader.lane(f"{topic}/{partition}"): [(start, group.ends[(topic, partition)] - 1)]
            for (topic, partition), start in starts.items()
            if group.ends.get((topic, partition), 0) > start
        }
        async for _, _, message in reader.read(ranges):
            positions.append(stream_position(message.headers, stream) if message is not None else None)
    return positions
