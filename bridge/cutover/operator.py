"""`nats-bridge cutover` and `status`, the operator's side of cut-over: change a service's phase
(and follow it until drained or cleaned up), and read every service's status."""

from __future__ import annotations

import asyncio
import getpass
import socket
import time

from nats.js import JetStreamContext
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bridge.brokers import route_broker
from bridge.brokers.nats.client import close_quietly, connect_for_command
from bridge.config.model import BridgeConfig
from bridge.config.services import Phase
from bridge.cutover.controller import CLEANING
from bridge.cutover.phases import PhaseRecord
from bridge.cutover.status import ServiceStatus, gather_status
from bridge.cutover.store import PhaseStore
from bridge.errors import BridgeError
from bridge.jetstream.consumer_state import consumer_places


def default_actor() -> str:
    """Who is changing the phase, for the record: user@host unless --by says otherwise."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def describe(service: str, record: PhaseRecord) -> str:
    moved = f"{record.previous} -> {record.phase}" if record.previous else str(record.phase)
    return f"service {service}: {moved} by {record.changed_by} at {record.changed_at} ({record.reason})"


async def change_phase(
    config: BridgeConfig,
    service: str,
    wanted: Phase,
    *,
    by: str,
    reason: str,
    quiet_for: float | None,
    delete_offsets: bool,
    force: bool,
    wait: bool,
    wait_limit: float,
    console: Console,
) -> tuple[int, PhaseRecord]:
    """Change the phase; with `wait`, follow it until drained (drain) or cleaned up (retired)."""
    nc = await connect_for_command(config)
    try:
        store = PhaseStore(nc.jetstream(), replicas=config.state_replicas)
        if wanted is Phase.RETIRED and not force:
            await _refuse_unmoved_consumers(nc.jetstream(), config, service)
        record = await store.change(
            service, wanted, by=by, reason=reason, quiet_for=quiet_for, delete_offsets=delete_offsets, force=force
        )
        console.print(describe(service, record))
        if not wait or wanted is Phase.SHADOW:
            return 0, record
        return await _follow(config, store, service, wanted, wait_limit, console)
    finally:
        await close_quietly(nc)


async def _refuse_unmoved_consumers(js: JetStreamContext, config: BridgeConfig, service: str) -> None:
    """A service whose declared consumers still read the legacy broker is not done moving."""
    unmoved = [place for place in await consumer_places(js, config, service) if place.replaces and not place.moved]
    if unmoved:
        names = ", ".join(f"{place.name} ({place.replaces}: {place.detail})" for place in unmoved)
        raise BridgeError(
            f"service '{service}' still has consumer(s) on the legacy broker: {names}; hand them off "
            "(`nats-bridge handoff`), or if they were moved by other means, retire with --force"
        )


async def follow_phase(
    config: BridgeConfig, service: str, *, wait_limit: float, console: Console
) -> tuple[int, PhaseRecord]:
    """Follow the service's current phase without changing it: until drained (drain) or cleaned
    up (retired). Made for the runbook's step 2: move to drain, deploy the producers, then wait."""
    nc = await connect_for_command(config)
    try:
        store = PhaseStore(nc.jetstream(), replicas=config.state_replicas)
        record, _ = await store.get(service)
        console.print(describe(service, record))
        if record.phase is Phase.SHADOW:
            console.print(f"service {service}: in shadow, nothing to wait for (move it with --to drain)")
            return 0, record
        return await _follow(config, store, service, record.phase, wait_limit, console)
    finally:
        await close_quietly(nc)


async def _follow(
    config: BridgeConfig, store: PhaseStore, service: str, wanted: Phase, limit: float, console: Console
) -> tuple[int, PhaseRecord]:
    deadline = time.monotonic() + limit
    routes = config.services[service].routes
    first: int | None = None
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(f"{service}: {wanted}", total=1, detail="")
        while True:
            record, _ = await store.get(service)
            if record.phase is not wanted:
                console.print(f"service {service}: phase changed to {record.phase} meanwhile; stopped waiting")
                return 1, record
            if wanted is Phase.DRAIN and record.drained_at is not None:
                progress.update(task, completed=progress.tasks[0].total, detail="drained")
                console.print(f"service {service}: drained at {record.drained_at} (reported by {record.drained_by})")
                return 0, record
            if wanted is Phase.RETIRED and record.retired_cleanup and not _cleaning(record):
                progress.update(task, completed=1, total=1, detail="cleaned up")
                for route, what in sorted(record.retired_cleanup.items()):
                    console.print(f"  {route}: {what}")
                return 0, record
            if wanted is Phase.DRAIN:
                backlogs = await asyncio.gather(*(route_broker(config, service, route).backlog() for route in routes))
                waiting = sum(backlog.total for backlog in backlogs)
                first = max(first or 0, waiting) or 1
                errors = "; ".join(backlog.error for backlog in backlogs if backlog.error)
                detail = f"{waiting} waiting at the source" + (f" ({errors})" if errors else "")
                if not waiting and not errors:
                    detail += f"; waiting for {record.quiet_for:g}s of quiet"
                progress.update(task, total=first, completed=first - waiting, detail=detail)
            else:
                progress.update(task, detail="waiting for a bridge to stop the routes and clean up")
            if time.monotonic() > deadline:
                console.print(
                    f"service {service}: not {'drained' if wanted is Phase.DRAIN else 'cleaned up'} "
                    f"within {limit:g}s (is a bridge running on this file?)"
                )
                return 1, record
            await asyncio.sleep(1.0)


def _cleaning(record: PhaseRecord) -> bool:
    return any(value.startswith(CLEANING) for value in record.retired_cleanup.values())


async def read_status(config: BridgeConfig, service: str | None, interval: float) -> list[ServiceStatus]:
    nc = await connect_for_command(config)
    try:
        return await gather_status(config, nc.jetstream(), service=service, interval=interval)
    finally:
        await close_quietly(nc)
