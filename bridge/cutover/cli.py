"""`nats-bridge cutover` and `nats-bridge status`: the operator's side of cut-over."""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bridge.brokers import route_broker
from bridge.cli_output import fail
from bridge.config.model import BridgeConfig
from bridge.config.services import Phase
from bridge.cutover.controller import CLEANING
from bridge.cutover.phases import PhaseRecord
from bridge.cutover.status import ServiceStatus, gather_status
from bridge.cutover.store import PhaseStore
from bridge.durability import NOT_REVEALED, SYNC_UNKNOWN_NOTE
from bridge.errors import BridgeError
from bridge.jetstream.connection import close_quietly, connect_for_command


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
        record = await store.change(
            service, wanted, by=by, reason=reason, quiet_for=quiet_for, delete_offsets=delete_offsets, force=force
        )
        console.print(describe(service, record))
        if not wait or wanted is Phase.SHADOW:
            return 0, record
        return await _follow(config, store, service, wanted, wait_limit, console)
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


def print_status(report: list[ServiceStatus], console: Console) -> None:
    services = Table(title="services")
    for column in ("service", "phase", "since", "by", "why", "safe to advance", "advice"):
        services.add_column(column, overflow="fold")
    for status in report:
        record = status.record
        services.add_row(
            status.service,
            status.phase,
            record.changed_at or "-",
            record.changed_by or "-",
            record.reason or "-",
            "yes" if status.safe_to_advance else "no",
            status.advice,
            style="green" if status.safe_to_advance else "",
        )
    console.print(services)
    ignored = [(status.service, rejection) for status in report for rejection in status.state.ignored]
    if ignored:
        records = Table(title="phase records ignored (the bridges keep the last valid phase)")
        for column in ("service", "key", "revision", "kind", "why"):
            records.add_column(column, overflow="fold")
        for service, rejection in ignored:
            records.add_row(service, rejection.key, str(rejection.revision), rejection.kind, rejection.reason)
        console.print(records, style="red")
    routes = Table(title="routes")
    for column in (
        "route",
        "source backlog",
        "backlog rate",
        "stream",
        "messages",
        "last seq",
        "stream rate",
        "dead letters",
    ):
        routes.add_column(column, overflow="fold")
    for status in report:
        for route in status.routes:
            backlog = route.backlog
            if backlog.error:
                shown = f"unknown: {backlog.error}"
            elif backlog.note:
                shown = backlog.note
            else:
                shown = f"{backlog.total} (" + ", ".join(f"{lane}: {n}" for lane, n in backlog.lanes.items()) + ")"
            rate = f"{route.backlog_rate:+.1f}/s" if route.backlog_rate is not None else "-"
            for index, stream in enumerate(route.streams or [{"name": "-", "exists": False}]):
                exists = stream.get("exists")
                routes.add_row(
                    route.route if index == 0 else "",
                    shown if index == 0 else "",
                    rate if index == 0 else "",
                    stream["name"] + ("" if exists else " (missing)"),
                    str(stream.get("messages", "-")),
                    str(stream.get("last_seq", "-")),
                    f"{stream['rate']:.1f}/s" if stream.get("rate") is not None else "-",
                    str(route.dead_letters) if index == 0 else "",
                )
    console.print(routes)
    print_durability(report, console)


def print_durability(report: list[ServiceStatus], console: Console) -> None:
    """Per route and stream: replicas, storage, sync_interval, the legacy side; then the warnings
    and notes, and what could not be read."""
    table = Table(title="durability: what each stream keeps, against what the legacy side promised")
    for column in ("route", "stream", "replicas", "storage", "sync_interval", "legacy side"):
        table.add_column(column, overflow="fold")
    lines: list[tuple[str, str]] = []
    problems: list[str] = []
    for status in report:
        durability = status.durability
        warned = {(item.route, item.stream) for item in durability.warnings}
        for route, (legacy, streams) in durability.routes.items():
            for index, name in enumerate(streams or ["-"]):
                posture = durability.streams.get(name)
                table.add_row(
                    route if index == 0 else "",
                    name + ("" if posture is None or posture.origin == "server" else " (as the file declares it)"),
                    str(posture.replicas) if posture else "-",
                    posture.storage if posture else "-",
                    posture.sync.text() if posture else "-",
                    legacy.describe() if index == 0 else "",
                    style="yellow" if (route, name) in warned else "",
                )
        lines += [(item.level.value, f"{item.route}: {item.text()}") for item in durability.advice]
        problems += [problem for problem in durability.problems if problem not in problems]
    if table.row_count:
        console.print(table)
    for level, text in lines:
        console.print(f"{level}: {text}", style="yellow" if level == "warning" else "dim", soft_wrap=True)
    postures = [posture for status in report for posture in status.durability.streams.values()]
    if any(not posture.sync.known and posture.sync.reason == NOT_REVEALED for posture in postures):
        console.print(f"note: {SYNC_UNKNOWN_NOTE}", style="dim", soft_wrap=True)
    for problem in problems:
        console.print(f"durability: could not read: {problem}", style="yellow", soft_wrap=True)


def status_json(report: list[ServiceStatus]) -> str:
    document: dict[str, Any] = {"services": [status.as_json() for status in report]}
    return json.dumps(document, indent=2)


def run_command(coroutine: Any) -> Any:
    """Run a command's coroutine; a BridgeError becomes one clear line and exit code 2."""
    try:
        return asyncio.run(coroutine)
    except BridgeError as error:
        fail(str(error))
