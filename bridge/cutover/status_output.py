"""How `nats-bridge status` prints: the services table, the durability notes, or `--json`."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from bridge.cutover.status import ServiceStatus
from bridge.durability.legacy import NOT_REVEALED
from bridge.durability.sync import SYNC_UNKNOWN_NOTE


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
    print_consumers(report, console)
    print_reverse(report, console)
    print_durability(report, console)


def print_reverse(report: list[ServiceStatus], console: Console) -> None:
    """Each reverse route: running or not, how far it wrote, what waits; then what it left behind."""
    legs = [leg for status in report for leg in status.reverse]
    if legs:
        table = Table(title="reverse routes (NATS -> legacy)")
        for column in ("route", "switch", "runs", "written by", "written through", "not yet written", "in flight"):
            table.add_column(column, overflow="fold")
        for leg in legs:
            look = leg.look
            table.add_row(
                leg.route,
                leg.switch,
                "yes" if leg.runs else "no",
                leg.writer,
                str(look.acked_through) if look.exists else "- (no durable)",
                str(look.pending) if look.exists else "-",
                str(look.ack_pending) if look.exists else "-",
                style="" if leg.runs or not look.pending else "yellow",
            )
        console.print(table)
    for status in report:
        for note in status.notes:
            console.print(f"[yellow]{status.service}:[/yellow] {note}", highlight=False)


def print_consumers(report: list[ServiceStatus], console: Console) -> None:
    """Each declared consumer and where it runs now (a table only when some service has any)."""
    places = [place for status in report for place in status.consumers]
    if not places:
        return
    table = Table(title="consumers")
    for column in ("service", "consumer", "stream", "replaces", "runs on", "how it is known"):
        table.add_column(column, overflow="fold")
    for place in places:
        style = "yellow" if place.runs == "legacy" else ""
        table.add_row(
            place.service, place.name, place.stream, place.replaces or "-", place.runs, place.detail, style=style
        )
    console.print(table)


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
