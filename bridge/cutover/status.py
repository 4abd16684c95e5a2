"""`nats-bridge status FILE`: where each service stands, and whether it is safe to advance.

Everything is read from the brokers and NATS, never from a running bridge: the phase record
(KV), each route's source backlog (bridge.brokers: RouteBroker.backlog), the stream it fills (message
count, last sequence), dead letters for the route, and rates from two looks `interval`
apart. "Safe to advance" is a verdict an operator can act on:

- shadow -> drain: the stream exists and the route keeps up (its backlog is not growing beyond
  what the bridge stores in a few seconds: the commit rhythm) with no dead letters to look at
  first;
- drain -> retired: the bridges have reported the service drained (every partition and queue
  seen empty and quiet by the instance that owns it);
- retired: nothing further (and no backlog is read: the route reads nothing, and its Kafka
  group may be gone).

A phase record the bridges ignore (invalid, or a move cutover would refuse) is shown with its
key, revision and reason, beside the last valid record they follow; a service with no valid
record at all is shown as `unknown` (the bridges hold its routes).

Each service also shows its durability posture (bridge.durability): how each of its streams
keeps what it acknowledges — replicas, storage, sync_interval where a server's monitoring
endpoint shows it — against what its legacy queues or topics promised, with a warning where
the stream keeps less. It changes neither the verdict nor the exit code: the cut-over's
progress and the posture are separate decisions.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bridge.brokers import Backlog, route_broker
from bridge.config.model import BridgeConfig
from bridge.config.routes import RouteConfig
from bridge.config.services import Phase
from bridge.cutover.drain import lanes_text
from bridge.cutover.phases import PhaseRecord
from bridge.cutover.reverse_status import ReverseLeg, orphan_durables, owner_of, reverse_legs, unread_copies
from bridge.cutover.state import FRESH, PhaseState
from bridge.cutover.store import PhaseStore
from bridge.durability.assess import DurabilityReport
from bridge.durability.probe import read_report
from bridge.jetstream.consumer_state import ConsumerPlace, consumer_places
from bridge.mapping import CompiledRoute
from bridge.plan import Plan, compile_plan
from bridge.route_shapes import streams_reached


@dataclass(slots=True)
class RouteStatus:
    route: str
    backlog: Backlog
    backlog_rate: float | None  # per second, over the look interval; negative when shrinking
    streams: list[dict[str, Any]]  # name, messages, last_seq, rate (messages/s into it)
    dead_letters: int


@dataclass(slots=True)
class ServiceStatus:
    service: str
    record: PhaseRecord  # as the bridges follow it (a fresh record when none is valid: see `state`)
    routes: list[RouteStatus] = field(default_factory=list)
    safe_to_advance: bool = False
    advice: str = ""
    state: PhaseState = FRESH
    durability: DurabilityReport = field(default_factory=DurabilityReport)
    consumers: list[ConsumerPlace] = field(default_factory=list)
    reverse: list[ReverseLeg] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what is left behind on the reverse leg

    @property
    def phase(self) -> str:
        return "unknown" if self.state.held else self.record.phase.value

    def as_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "phase": self.phase,
            "record_revision": self.state.revision,
            "record_valid": not self.state.held,
            "ignored_records": [rejection.as_json() for rejection in self.state.ignored],
            "changed_by": self.record.changed_by,
            "changed_at": self.record.changed_at,
            "reason": self.record.reason,
            "drained_at": self.record.drained_at,
            "drain_reports": {name: dict(report) for name, report in self.record.drain_reports.items()},
            "retired_cleanup": dict(self.record.retired_cleanup),
            "safe_to_advance": self.safe_to_advance,
            "advice": self.advice,
            "routes": [
                {
                    "route": route.route,
                    "backlog": dict(route.backlog.lanes),
                    "backlog_total": route.backlog.total,
                    "backlog_error": route.backlog.error,
                    "backlog_note": route.backlog.note,
                    "backlog_rate_per_second": route.backlog_rate,
                    "streams": route.streams,
                    "dead_letters": route.dead_letters,
                }
                for route in self.routes
            ],
            "durability": self.durability.as_json(),
            "consumers": [place.as_json() for place in self.consumers],
            "reverse": [leg.as_json() for leg in self.reverse],
            "notes": list(self.notes),
        }


def _capturing_streams(plan: Plan, route: CompiledRoute) -> list[str]:
    return [stream.name for stream in streams_reached(route.service, route.config, plan.streams)]


async def _stream_state(js: JetStreamContext, name: str) -> tuple[int, int] | None:
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        return None
    return info.state.messages, info.state.last_seq


def _stream_looks(
    names: list[str],
    first: dict[str, tuple[int, int] | None],
    second: dict[str, tuple[int, int] | None],
    elapsed: float,
) -> list[dict[str, Any]]:
    """Each stream's second look (messages, last sequence) and its rate of new sequences since the first."""
    looks: list[dict[str, Any]] = []
    for stream in names:
        state, earlier = second.get(stream), first.get(stream)
        if state is None:
            looks.append({"name": stream, "exists": False})
            continue
        messages, last_seq = state
        rate = (last_seq - earlier[1]) / elapsed if earlier is not None else None
        looks.append({"name": stream, "exists": True, "messages": messages, "last_seq": last_seq, "rate": rate})
    return looks


async def _dead_letters(js: JetStreamContext, config: BridgeConfig, service: str, route: str) -> int:
    subject = config.dead_letters.subject_for(service, route)
    try:
        info = await js.stream_info(config.dead_letters.stream, subjects_filter=subject)
    except NotFoundError:
        return 0
    return int((info.state.subjects or {}).get(subject, 0))


async def gather_status(
    config: BridgeConfig | Plan, js: JetStreamContext, *, service: str | None = None, interval: float = 2.0
) -> list[ServiceStatus]:
    """Two looks `interval` apart at every route of every (or one) service."""
    plan = compile_plan(config)
    config = plan.config
    compiled = plan.of_service(service)
    store = PhaseStore(js, create=False)
    services = [service] if service is not None else list(config.services)
    views = {name: await store.view(name) for name in services}
    routes = [(route.service, route.config) for route in compiled]
    captured = {route.key: _capturing_streams(plan, route) for route in compiled}
    stream_names = sorted({name for names in captured.values() for name in names})

    async def backlog(name: str, route: RouteConfig) -> Backlog:
        record = views[name][1]
        if record is not None and record.phase is Phase.RETIRED:
            # The route reads nothing any more, and its group may be deleted (--delete-offsets):
            # what the topic holds is no backlog of anyone's.
            return Backlog(note="retired: the route reads nothing")
        return await route_broker(config, name, route).backlog()

    async def look() -> tuple[list[Backlog], dict[str, tuple[int, int] | None], float]:
        backlogs = await asyncio.gather(*(backlog(name, route) for name, route in routes))
        states = {name: await _stream_state(js, name) for name in stream_names}
        return list(backlogs), states, time.monotonic()

    first_backlogs, first_states, first_at = await look()
    # The durability looks (stream info, monitoring endpoints, management API, topic configs)
    # run while the rates' interval passes.
    posture_task = asyncio.ensure_future(read_report(config, js, routes, captured))
    try:
        await asyncio.sleep(interval)
        backlogs, states, at = await look()
        posture = await posture_task
    finally:
        posture_task.cancel()  # done by now, unless a look failed
    elapsed = max(at - first_at, 1e-6)

    report: list[ServiceStatus] = []
    for name in services:
        phase_state, record = views[name]
        status = ServiceStatus(name, record if record is not None else PhaseRecord(), state=phase_state)
        for index, (owner, route) in enumerate(routes):
            if owner != name:
                continue
            before, now = first_backlogs[index], backlogs[index]
            rate = None
            if before.error is None and now.error is None and not now.note:
                rate = (now.total - before.total) / elapsed
            streams = _stream_looks(captured[f"{name}/{route.name}"], first_states, states, elapsed)
            try:
                dead = await _dead_letters(js, config, name, route.name)
            except (NatsError, TimeoutError):
                dead = -1
            status.routes.append(RouteStatus(f"{name}/{route.name}", now, rate, streams, dead))
        status.safe_to_advance, status.advice = _verdict(status)
        status.durability = posture.for_routes(route.route for route in status.routes)
        status.consumers = await consumer_places(js, config, name)
        report.append(status)
    await _reverse_side(js, config, report)
    return report


async def _reverse_side(js: JetStreamContext, config: BridgeConfig, report: list[ServiceStatus]) -> None:
    """Each service's reverse routes, the queues they fill for nobody, and durables left behind."""
    try:
        for status in report:
            status.reverse = await reverse_legs(js, config, status.service, status.record.phase)
            status.notes += await unread_copies(config, status.service, status.consumers, status.reverse)
        orphans = await orphan_durables(js, config)
    except (NatsError, TimeoutError) as error:
        # The rest of the report stands: a user allowed to read phases and streams but not
        # consumers (an older deploy/nats-permissions.conf) still sees where its services are.
        for status in report:
            if config.services[status.service].reverse:
                status.notes.append(
                    f"reverse routes not looked at ({str(error) or type(error).__name__}): the user needs "
                    "$JS.API.CONSUMER.INFO and CONSUMER.LIST on the streams (deploy/README.md)"
                )
        return
    names = [status.service for status in report]
    for orphan in orphans:
        owner = owner_of(orphan, names)
        for status in report:
            if status.service == owner:
                status.notes.append(
                    f"reverse durable {orphan}: no reverse route of the file reads it any more; delete it "
                    "(`nats consumer rm`) unless a route is coming back"
                )


def _verdict(status: ServiceStatus) -> tuple[bool, str]:
    safe, advice = _phase_verdict(status)
    if status.state.held:
        return False, (
            f"no valid phase record (bridges hold its routes): {_ignored(status)}; write the phase it should "
            f"have with `cutover {status.service} --to PHASE --force`"
        )
    if status.state.ignored:
        advice += f" [ignored by the bridges: {_ignored(status)}]"
    return safe, advice


def _ignored(status: ServiceStatus) -> str:
    return "; ".join(rejection.text() for rejection in status.state.ignored[-3:]) or "no revision kept"


def _phase_verdict(status: ServiceStatus) -> tuple[bool, str]:
    record = status.record
    if record.phase is Phase.RETIRED:
        return False, "retired: nothing further"
    if record.phase is Phase.DRAIN:
        if record.drained_at is not None:
            return True, f"drained at {record.drained_at}: safe to retire"
        waiting = sum(route.backlog.total for route in status.routes)
        advice = f"draining: {waiting} message(s) still at the source, or not quiet for {record.quiet_for:g}s yet"
        reported: dict[str, set[str]] = {}
        for report in record.drain_reports.values():
            for key, lanes in report.items():
                reported.setdefault(key, set()).update(lanes)
        if reported:
            advice += f" (seen empty and quiet by their owners so far: {lanes_text(reported)})"
        return False, advice
    problems = []
    for route in status.routes:
        if route.backlog.error:
            problems.append(f"{route.route}: source not readable ({route.backlog.error})")
        if any(not stream.get("exists") for stream in route.streams) or not route.streams:
            problems.append(f"{route.route}: its stream does not exist yet (is a bridge running?)")
        if _behind(route):
            problems.append(f"{route.route}: backlog growing ({route.backlog_rate:+.1f}/s): the bridge is behind")
        if route.dead_letters > 0:
            problems.append(f"{route.route}: {route.dead_letters} dead letter(s) to look at first")
    if problems:
        return False, "; ".join(problems)
    return True, "shadow copy keeps up: safe to move producers to NATS and start the drain"


# A backlog the bridge stores within this long is its commit rhythm, not a lag: it commits a
# Kafka group's offsets (and acks deliveries) after JetStream's acknowledgements, every second or
# so, so between two looks the committed backlog rises and falls though the bridge keeps up.
COMMIT_SLACK_SECONDS = 5.0


def _behind(route: RouteStatus) -> bool:
    """The backlog grew between the looks and is more than the bridge stores in a few seconds."""
    if route.backlog_rate is None or route.backlog_rate <= 0 or route.backlog.total == 0:
        return False
    stored_per_second = max((stream.get("rate") or 0.0 for stream in route.streams), default=0.0)
    return route.backlog.total > stored_per_second * COMMIT_SLACK_SECONDS
