"""The running bridge's side of cut-over: follow each service's phase, within seconds.

Every `interval` the controller reads each service's phase record from KV (a poll, not a
watch: it survives NATS reconnects and server restarts with nothing to resubscribe) and makes
the bridge match it:

- forward routes run unless the service is retired;
- reverse routes run while the phase is one of their `during` phases;
- in drain, each instance reports the lanes it owns once they stayed empty and quiet for the
  record's `quiet_for` (a compare-and-set on the service's record), and the service is reported
  drained once the reports cover every partition of its Kafka routes and each of its queues
  (bridge.cutover.drain); a message to copy arriving after that withdraws the owner's report and
  so the verdict, since a producer evidently still uses the legacy broker;
- on retire, the forward routes are stopped (settling what they stored) and one instance —
  the one whose compare-and-set claims the clean-up — removes what the bridge created.

The bridge writes nothing into the phase records: its drain reports and clean-up claims go to
the reports bucket (bridge.cutover.store). A phase record that is invalid, or a move cutover
would refuse, is ignored: the service keeps its last valid phase, and the bridge logs an ERROR
naming the key and revision, counts it (nats_bridge_phase_records_rejected_total) and shows it
in /status. A service whose key holds no valid record at start is held: none of its routes
start until an operator writes its phase (bridge.cutover.store.PhaseState says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from nats.errors import Error as NatsError

from bridge.brokers import route_broker
from bridge.config.model import BridgeConfig
from bridge.config.services import Phase, ReverseRouteConfig
from bridge.cutover.drain import WHOLE, DrainTracker, RouteView, lanes_text, next_drain_record
from bridge.cutover.phases import PhaseRecord
from bridge.cutover.reverse_switch import SwitchFollower
from bridge.cutover.state import REPORT, BridgeReport, PhaseState, Rejection, with_report
from bridge.cutover.store import PhaseStore
from bridge.cutover.supervisor import ReverseRunnable, Supervisor
from bridge.errors import PhaseConflictError
from bridge.operations.health import PhaseRead
from bridge.sources.base import SharedLanes

if TYPE_CHECKING:
    from bridge.jetstream.checkpoints import JetStreamCheckpoints
    from bridge.operations.health import HealthMonitor
    from bridge.pipeline.route import RoutePipeline

log = logging.getLogger(__name__)

CLEANING = "cleaning up"  # the retired_cleanup marker an instance writes to claim the clean-up


ReverseFactory = Callable[[str, ReverseRouteConfig], ReverseRunnable]


class CutoverController:
    """Keeps the running routes in line with the phases in KV."""

    def __init__(
        self,
        *,
        config: BridgeConfig,
        store: PhaseStore,
        supervisor: Supervisor,
        forward: Mapping[str, Sequence[RoutePipeline]],
        reverse: ReverseFactory,
        monitor: HealthMonitor,
        checkpoints: JetStreamCheckpoints | None,
        instance: str,
        interval: float = 1.0,
    ) -> None:
        self._config = config
        self._store = store
        self._supervisor = supervisor
        self._forward = forward
        self._reverse = reverse
        self._monitor = monitor
        self._checkpoints = checkpoints
        self._instance = instance
        self._interval = interval
        self._records: dict[str, PhaseRecord] = {}
        self._states: dict[str, PhaseState] = {}  # per service, what was read of its phase key
        self._bad_reports: dict[str, int] = {}  # per service, the invalid report revision last logged
        self._trackers: dict[str, DrainTracker] = {}
        self._waiting_for: dict[str, str] = {}  # per service, the uncovered lanes last logged
        self._switches = SwitchFollower(store, self._switch_rejected)
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def start(self) -> None:
        """Read every phase before any route starts: a retired service's routes must never run
        again (they would declare its shadow queue anew)."""
        delay = 0.5
        while True:
            try:
                for service in self._config.services:
                    await self._follow(service)
            except (NatsError, TimeoutError) as error:
                if self._stopping.is_set():
                    return
                log.warning("cannot read service phases from NATS KV (%s); retrying in %.1fs", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            return

    async def run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)
            if self._stopping.is_set():
                return
            for service in self._config.services:
                try:
                    await self._follow(service)
                except (NatsError, TimeoutError) as error:
                    log.warning(
                        "service %s: phase not read (%s); keeping phase %s", service, error, self._phase(service)
                    )

    def _phase(self, service: str) -> str:
        state = self._states.get(service)
        if state is not None and state.record is None:
            return "unknown (held: no valid record)"
        record = self._records.get(service)
        return record.phase.value if record is not None else Phase.SHADOW.value

    def _reject(self, service: str, rejection: Rejection, state: PhaseState) -> None:
        """Say, once per revision, that a record was ignored; count it; show it in /status."""
        if state.record is None:
            keeping = "its routes stay stopped: the service is held until a valid phase is written"
        elif state.revision == 0:
            keeping = f"keeping phase {state.record.phase} (no valid record written yet)"
        else:
            keeping = f"keeping phase {state.record.phase} (revision {state.revision})"
        log.error(
            "service %s: ignored %s revision %d (%s): %s; %s",
            service,
            rejection.key,
            rejection.revision,
            rejection.kind,
            rejection.reason,
            keeping,
        )
        self._monitor.phase_rejected(service, rejection.kind)

    async def _follow(self, service: str) -> None:
        known = self._states.get(service)
        state, rejections = await self._store.read(service, known)
        self._states[service] = state
        self._monitor.phase_reads[service] = _phase_read(state, None)
        for rejection in rejections:
            self._reject(service, rejection, state)
        if state.record is None:
            if known is None:
                log.error(
                    "service %s: no valid phase record in its history, so its phase is unknown; none of its "
                    "routes start (write it with `cutover %s --to PHASE --force`)",
                    service,
                    service,
                )
            self._monitor.phases[service] = "held"
            return
        report, report_revision = await self._report(service, state)
        record = with_report(state.record, state.since, report)
        previous = self._records.get(service)
        if previous is None or previous.phase != record.phase:
            how = f" by {record.changed_by} ({record.reason})" if record.changed_by else ""
            log.info("service %s: phase %s%s", service, record.phase, how)
            self._trackers.pop(service, None)
            self._waiting_for.pop(service, None)
        self._records[service] = record
        self._monitor.phases[service] = record.phase.value
        self._monitor.phase_reads[service] = _phase_read(state, record)
        if record.phase is Phase.RETIRED:
            await self._retire(service, record, state.since, report_revision)
        else:
            for pipeline in self._forward.get(service, ()):
                self._supervisor.start(_forward_name(pipeline), pipeline)
        await self._align_reverse(service, record.phase)
        if record.phase is Phase.DRAIN:
            await self._watch_drain(service, record, state.since, report_revision)

    async def _report(self, service: str, state: PhaseState) -> tuple[BridgeReport | None, int]:
        """The bridges' report on the current phase (only drain and retired have one)."""
        if state.record is None or state.record.phase is Phase.SHADOW or not state.since:
            return None, 0
        report, revision, rejection = await self._store.report(service)
        if rejection is not None and self._bad_reports.get(service) != revision:
            self._bad_reports[service] = revision
            log.error(
                "service %s: ignored %s revision %d (%s): %s; it is written afresh",
                service,
                rejection.key,
                rejection.revision,
                REPORT,
                rejection.reason,
            )
            self._monitor.phase_rejected(service, rejection.kind)
        return report, revision

    def _switch_rejected(self, service: str, rejection: Rejection) -> None:
        log.error(
            "service %s: ignored %s revision %d (%s): %s; the reverse route keeps running or not as before",
            service,
            rejection.key,
            rejection.revision,
            rejection.kind,
            rejection.reason,
        )
        self._monitor.phase_rejected(service, rejection.kind)

    async def _align_reverse(self, service: str, phase: Phase) -> None:
        for route in self._config.services[service].reverse:
            name = f"reverse {service}/{route.name}"
            if phase in route.during and await self._switches.running(service, route.name):
                if not self._supervisor.running(name):
                    log.info("service %s: reverse route %s starts (phase %s)", service, route.name, phase)
                    await self._supervisor.stop(name)  # a unit that ended by itself is started afresh
                    unit = self._reverse(service, route)
                    self._supervisor.start(name, unit)
                    self._monitor.reverse[(service, route.name)] = (unit.stats, True)
            elif self._supervisor.running(name):
                log.info("service %s: reverse route %s stops (phase %s, or switched off)", service, route.name, phase)
                await self._supervisor.stop(name)
                stats, _ = self._monitor.reverse[(service, route.name)]
                self._monitor.reverse[(service, route.name)] = (stats, False)

    def _views(self, service: str) -> list[RouteView]:
        views = []
        for pipeline in self._forward.get(service, ()):
            health = self._monitor.routes.get(pipeline.route.key)
            if health is None:
                continue
            unread = pipeline.source.unread
            views.append(
                RouteView(
                    backlog=unread if unread is not None else sum(health.backlog.values()),
                    in_flight=pipeline.unsettled,
                    received=pipeline.stats.received - pipeline.stats.filtered,
                    source_up=health.source_up,
                    paused=pipeline.paused,
                )
            )
        return views

    def _lanes(self, service: str) -> tuple[dict[str, set[str]], dict[str, set[str]] | None]:
        """Per forward route of the service: the lanes this instance owns, and every lane the
        route has (None while some route's partitions are not known yet)."""
        owned: dict[str, set[str]] = {}
        required: dict[str, set[str]] = {}
        known = True
        for pipeline in self._forward.get(service, ()):
            key = pipeline.route.key
            source = pipeline.source
            if isinstance(source, SharedLanes):
                owned[key] = source.owned_lanes() or set()
                every = source.all_lanes()
                if every is None:
                    known = False
                else:
                    required[key] = every
            else:
                # A queue's depth is the same figure for every instance reading it.
                owned[key] = required[key] = {WHOLE}
        return owned, required if known else None

    async def _watch_drain(self, service: str, record: PhaseRecord, since: int, revision: int) -> None:
        tracker = self._trackers.get(service)
        if tracker is None or tracker.quiet_for != record.quiet_for:
            tracker = self._trackers[service] = DrainTracker(record.quiet_for)
        views = self._views(service)
        quiet = tracker.observe(time.monotonic(), views)
        owned, required = self._lanes(service)
        # Messages to copy arrived, or wait unread behind a paused route: the lanes this
        # instance owns are not empty, whoever reported them empty before.
        active = tracker.new_messages or any(view.paused and view.backlog > 0 for view in views)
        changed, missing = next_drain_record(record, self._instance, owned, required, quiet=quiet, active=active)
        if changed != record:
            try:
                await self._store.put_report(service, BridgeReport.of(changed, since), revision)
            except PhaseConflictError:
                return  # another instance reported meanwhile: the next poll sees its report
        if changed.drained_at is not None and record.drained_at is None:
            log.info(
                "service %s: drained — its legacy side has been empty and quiet for %gs; it can be retired",
                service,
                record.quiet_for,
            )
        elif changed.drained_at is None and record.drained_at is not None:
            if tracker.new_messages:
                log.warning(
                    "service %s: new messages on the legacy side after it was reported drained: a producer still "
                    "publishes there; the drained report is withdrawn",
                    service,
                )
            else:
                log.warning(
                    "service %s: the drained report is withdrawn: %s not seen empty by an instance that owns it",
                    service,
                    lanes_text(missing or {}),
                )
        elif quiet and missing:
            self._log_waiting(service, missing)

    def _log_waiting(self, service: str, missing: dict[str, set[str]]) -> None:
        """Say once (again when it changes) that this instance is quiet but the service is not
        drained, and for which lanes: an operator waiting on `--wait` sees where it stands."""
        text = lanes_text(missing)
        if self._waiting_for.get(service) != text:
            self._waiting_for[service] = text
            log.info(
                "service %s: this instance's part is empty and quiet; not drained until the instances owning "
                "%s see them empty",
                service,
                text,
            )

    async def _retire(self, service: str, record: PhaseRecord, since: int, revision: int) -> None:
        pipelines = self._forward.get(service, ())
        for pipeline in pipelines:
            name = _forward_name(pipeline)
            if self._supervisor.running(name):
                log.info("service %s: retired; stopping route %s", service, pipeline.route.key)
                await self._supervisor.stop(name)
            self._monitor.forget(pipeline)
        if record.retired_cleanup:
            return  # done, or being done, by an instance that claimed it
        claim = BridgeReport(since, retired_cleanup={"*": f"{CLEANING} by {self._instance}"})
        try:
            revision = await self._store.put_report(service, claim, revision)
        except PhaseConflictError:
            return  # another instance claimed it
        results: dict[str, str] = {}
        for pipeline in pipelines:
            route = pipeline.route
            results[route.key] = await route_broker(self._config, service, route.config).retire(
                delete_offsets=record.delete_offsets
            )
            if record.delete_offsets and self._checkpoints is not None and route.config.source_kind == "kafka":
                forgotten = await self._checkpoints.forget(pipeline.checkpoint_scope)
                results[route.key] += f"; {forgotten} checkpoint(s) removed"
            log.info("service %s: %s", service, results[route.key])
        with contextlib.suppress(PhaseConflictError):
            await self._store.put_report(service, replace(claim, retired_cleanup=results), revision)


def _forward_name(pipeline: RoutePipeline) -> str:
    return f"route {pipeline.route.key}"


def _phase_read(state: PhaseState, record: PhaseRecord | None) -> PhaseRead:
    """What the health monitor shows of `state` (and of `record`, the phase with its report)."""
    return PhaseRead(
        revision=state.revision,
        valid=state.record is not None,
        ignored=tuple(rejection.as_json() for rejection in state.ignored),
        last_ignored=state.ignored[-1].text() if state.ignored else "",
        drained_at=record.drained_at if record is not None else None,
    )
