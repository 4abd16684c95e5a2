"""`nats-bridge reverse SERVICE ROUTE FILE --to on|off|removed`: the operator's side of a reverse
route's switch (bridge.cutover.reverse_switch), and the proof that the bridges followed it.

Writing the switch is instant; the bridges follow it within their phase poll and let the batch
in flight finish. Switched off is therefore *seen*, not assumed: the command waits until nobody
pulls from the route's durable (no waiting pull requests) and nothing is in flight to the legacy
broker (no ack pending), twice in a row. Only then is `removed` allowed to delete the durable —
deleting it under a running route would just have the route make it afresh.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bridge.brokers.nats.client import close_quietly, connect_for_command
from bridge.config.model import BridgeConfig
from bridge.config.services import ReverseRouteConfig
from bridge.cutover.reverse_switch import Switch, SwitchRecord, read_switch, write_switch
from bridge.cutover.store import PhaseStore
from bridge.errors import BridgeError

QUIET_CHECKS = 2  # consecutive quiet looks that count as "stopped"
LOOK_EVERY = 0.5  # seconds between looks


@dataclass(frozen=True, slots=True)
class DurableLook:
    """The reverse route's durable, as JetStream shows it."""

    exists: bool
    pending: int = 0  # not yet delivered to the route: never written to the legacy broker
    ack_pending: int = 0  # delivered, the legacy confirm or the ack not yet in
    waiting: int = 0  # pull requests waiting: someone runs the route
    acked_through: int = 0  # stream sequence: everything up to it is written (or dead-lettered)

    @property
    def quiet(self) -> bool:
        return self.exists and self.waiting == 0 and self.ack_pending == 0

    def as_json(self) -> dict[str, object]:
        return {
            "exists": self.exists,
            "pending": self.pending,
            "ack_pending": self.ack_pending,
            "waiting": self.waiting,
            "acked_through": self.acked_through,
        }


@dataclass(frozen=True, slots=True)
class SwitchOutcome:
    """What `reverse --to` did."""

    service: str
    route: str
    durable: str
    record: SwitchRecord
    look: DurableLook  # after the bridges followed (or the wait ran out)
    stopped: bool  # off/removed: the bridges were seen to stop within the wait
    deleted: bool = False  # removed: the durable was deleted

    def as_json(self) -> dict[str, object]:
        return {
            "service": self.service,
            "route": self.route,
            "durable": self.durable,
            **self.record.as_json(),
            "durable_state": self.look.as_json(),
            "stopped": self.stopped,
            "deleted": self.deleted,
        }


def reverse_route(config: BridgeConfig, service: str, route: str) -> ReverseRouteConfig:
    """The reverse route `route` of `service`; BridgeError naming what the file has."""
    if service not in config.services:
        raise BridgeError(
            f"no service '{service}' in the mapping file (services: {', '.join(sorted(config.services))})"
        )
    routes = config.services[service].reverse
    found = next((r for r in routes if r.name == route), None)
    if found is None:
        known = ", ".join(r.name for r in routes) or "none"
        raise BridgeError(f"service '{service}' has no reverse route '{route}' (its reverse routes: {known})")
    return found


async def look_at_durable(js: JetStreamContext, stream: str, durable: str) -> DurableLook:
    try:
        info = await js.consumer_info(stream, durable)
    except NotFoundError:
        return DurableLook(exists=False)
    return DurableLook(
        exists=True,
        pending=info.num_pending or 0,
        ack_pending=info.num_ack_pending or 0,
        waiting=info.num_waiting or 0,
        acked_through=info.ack_floor.stream_seq if info.ack_floor is not None else 0,
    )


async def wait_until_quiet(js: JetStreamContext, stream: str, durable: str, limit: float) -> tuple[bool, DurableLook]:
    """Whether nobody pulled from the durable and nothing was in flight, QUIET_CHECKS looks in a
    row within `limit` seconds (a durable that does not exist is quiet: nobody runs it)."""
    deadline = time.monotonic() + limit
    quiet_looks = 0
    while True:
        look = await look_at_durable(js, stream, durable)
        if not look.exists:
            return True, look
        quiet_looks = quiet_looks + 1 if look.quiet else 0
        if quiet_looks >= QUIET_CHECKS:
            return True, look
        if time.monotonic() >= deadline:
            return False, look
        await asyncio.sleep(LOOK_EVERY)


async def switch_reverse(
    config: BridgeConfig,
    service: str,
    route: str,
    switch: Switch,
    *,
    by: str,
    reason: str,
    wait: float,
    force: bool = False,
) -> SwitchOutcome:
    """Set the switch; for off and removed, wait (up to `wait` s) until the bridges stopped the
    route; for removed, then delete its durable. Switching a removed route on is refused unless
    `force`: its durable would be made afresh and write the whole stream to the legacy broker."""
    reverse = reverse_route(config, service, route)
    durable = reverse.durable_name(service)
    nc = await connect_for_command(config)
    try:
        js = nc.jetstream()
        store = PhaseStore(js, replicas=config.state_replicas)
        current, _ = await read_switch(store, service, route)
        if switch is Switch.ON and current is not None and current.switch is Switch.REMOVED and not force:
            raise BridgeError(
                f"reverse route {service}/{route} was removed ({current.changed_by}, {current.changed_at}): switched "
                "on, it makes its durable afresh from the stream's first message and writes all of it to the "
                "legacy broker again; if that is what you want, add --force"
            )
        record = await write_switch(store, service, route, switch, by=by, reason=reason)
        if switch is Switch.ON:
            return SwitchOutcome(
                service, route, durable, record, await look_at_durable(js, reverse.stream, durable), True
            )
        stopped, look = await wait_until_quiet(js, reverse.stream, durable, wait)
        deleted = False
        if switch is Switch.REMOVED and stopped and look.exists:
            deleted = await js.delete_consumer(reverse.stream, durable)
        return SwitchOutcome(service, route, durable, record, look, stopped, deleted)
    finally:
        await close_quietly(nc)


def format_switch(outcome: SwitchOutcome) -> str:
    """The outcome for people: what was set, whether the bridges followed, what the durable holds."""
    record, look = outcome.record, outcome.look
    lines = [
        f"reverse route {outcome.service}/{outcome.route}: {record.switch} "
        f"by {record.changed_by} at {record.changed_at} ({record.reason or 'no reason given'})"
    ]
    if record.switch is Switch.ON:
        lines.append("the bridges start it within a second while the service's phase is one of its `during` phases")
    elif not outcome.stopped:
        lines.append(
            f"not seen to stop: durable {outcome.durable} still has {look.waiting} pull request(s) waiting and "
            f"{look.ack_pending} message(s) in flight (a bridge of an earlier version ignores the switch: "
            "upgrade it, or stop it)"
        )
    else:
        lines.append("stopped: nobody pulls from its durable and nothing is in flight")
    if look.exists and record.switch is not Switch.ON:
        lines.append(
            f"durable {outcome.durable}: written through stream sequence {look.acked_through}; "
            f"{look.pending} message(s) not written to the legacy broker"
        )
    if outcome.deleted:
        lines.append(
            f"durable {outcome.durable} deleted: its {look.pending} unwritten message(s) stay in the stream, "
            "never written to the legacy broker"
        )
    elif record.switch is Switch.REMOVED and look.exists:
        lines.append(f"durable {outcome.durable} kept: it was not seen to stop")
    return "\n".join(lines) + "\n"
