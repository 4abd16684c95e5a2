"""The reverse leg of a service, as `status` shows it: per reverse route, whether it runs (its
phase and its switch), how far it wrote (its durable's acknowledged sequence), what it has not
written yet and what is in flight; the `nats-bridge-reverse-*` durables no reverse route of the
file declares any more (left behind with what they never wrote); and legacy queues whose
consumers were handed off to JetStream while a reverse route still fills them.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bridge.brokers import BROKER_ERRORS, route_broker
from bridge.config.consumer_refs import replaced_route
from bridge.config.model import BridgeConfig
from bridge.config.services import Phase
from bridge.cutover.reverse_control import DurableLook, look_at_durable
from bridge.cutover.reverse_switch import read_switch
from bridge.cutover.store import PhaseStore
from bridge.errors import BridgeError
from bridge.jetstream.consumer_state import ConsumerPlace
from bridge.reverse.lease import lease_holder, lease_key

_LOOK_FAILURES: tuple[type[BaseException], ...] = (*BROKER_ERRORS, OSError, TimeoutError, BridgeError)
_WRITER_LOOK_FAILURES: tuple[type[BaseException], ...] = (*_LOOK_FAILURES, NatsError)
REVERSE_PREFIX = "nats-bridge-reverse-"  # the durable names reverse routes derive (ReverseRouteConfig.durable_name)


@dataclass(frozen=True, slots=True)
class ReverseLeg:
    """One reverse route now."""

    route: str  # service/route
    durable: str
    switch: str  # on, off, removed; "on (record ignored)" when its switch record is invalid
    runs: bool  # its phase is one of its `during` phases and its switch is on
    look: DurableLook
    writer: str  # the bridge holding its lease (host:pid:id), "-" when none does, or why unknown

    def as_json(self) -> dict[str, object]:
        return {
            "route": self.route,
            "durable": self.durable,
            "switch": self.switch,
            "runs": self.runs,
            "durable_state": self.look.as_json(),
            "writer": self.writer,
        }


async def reverse_legs(js: JetStreamContext, config: BridgeConfig, service: str, phase: Phase) -> list[ReverseLeg]:
    store = PhaseStore(js, create=False)
    legs = []
    for reverse in config.services[service].reverse:
        record, rejection = await read_switch(store, service, reverse.name)
        switch = record.switch.value if record is not None else "on"
        if rejection is not None:
            switch = "on (switch record ignored: invalid)"
        running = phase in reverse.during and (record is None or record.running)
        durable = reverse.durable_name(service)
        legs.append(
            ReverseLeg(
                f"{service}/{reverse.name}",
                durable,
                switch,
                running,
                await look_at_durable(js, reverse.stream, durable),
                await _writer(js, reverse.stream, durable),
            )
        )
    return legs


async def _writer(js: JetStreamContext, stream: str, durable: str) -> str:
    try:
        holder = await lease_holder(js, lease_key(stream, durable))
    except _WRITER_LOOK_FAILURES as error:
        return f"unknown ({error or type(error).__name__})"
    return holder or "-"


async def orphan_durables(js: JetStreamContext, config: BridgeConfig) -> list[str]:
    """`stream/durable (N never written)` for each reverse durable on the file's streams that no
    reverse route declares: a route removed from the file leaves its durable behind."""
    declared = {
        (reverse.stream, reverse.durable_name(service))
        for service, settings in config.services.items()
        for reverse in settings.reverse
    }
    found = []
    for stream in config.streams:
        try:
            infos = await js.consumers_info(stream.name)
        except NotFoundError:
            continue
        for info in infos:
            name = info.name or ""
            if name.startswith(REVERSE_PREFIX) and (stream.name, name) not in declared:
                found.append(f"{stream.name}/{name} ({info.num_pending or 0} never written)")
    return found


async def unread_copies(
    config: BridgeConfig, service: str, places: list[ConsumerPlace], legs: list[ReverseLeg]
) -> list[str]:
    """Legacy queues whose consumers moved to JetStream while a reverse route of the service still
    runs: what it writes there nobody reads (a Kafka group that moved reads nothing, and keeps
    nothing to clean up)."""
    if not any(leg.runs for leg in legs):
        return []
    moved = {place.name for place in places if place.moved and place.replaces}
    notes = []
    settings = config.services[service]
    for consumer in settings.consumers:
        replaces = consumer.replaces
        if consumer.name not in moved or replaces is None or replaces.queue is None:
            continue
        route = replaced_route(settings, replaces)
        if isinstance(route, str):
            continue
        try:
            depth = await route_broker(config, service, route).legacy_lag(replaces)
        except _LOOK_FAILURES:
            continue
        if depth:
            notes.append(
                f"queue '{replaces.queue}' holds {depth} message(s) nobody reads: its consumers moved to JetStream "
                f"({consumer.name}); once no legacy consumer needs the reverse route, switch it off for good "
                f"(`nats-bridge reverse {service} ROUTE FILE --to removed`) and delete the queue"
            )
    return notes


def owner_of(durable: str, services: list[str]) -> str | None:
    """The service whose derived reverse durables start like `durable` (the longest such name)."""
    owners = [name for name in services if durable.split("/", 1)[-1].startswith(f"{REVERSE_PREFIX}{name}-")]
    return max(owners, key=len) if owners else None
