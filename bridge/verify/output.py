"""The report for people: rich tables, then errors and notes one whole line each, then a verdict."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from rich import box
from rich.console import Console
from rich.table import Table

from bridge.verify.ranges import format_ranges
from bridge.verify.report import RouteParity, VerifyReport

SHOWN_RUNS = 12  # runs of positions the table shows per cell; JSON has them all


_LANE_COLUMNS = ("lane", "range", "expected", "once", "DLQ", "missing", "doubled", "skipped", "outside")


def render(report: VerifyReport, console: Console | None = None) -> None:
    """The report for people: per route a table of its lanes (a summary line for shadow/queue
    routes), problems in red; then errors and notes, one whole line each; then a verdict.

    Columns: `once` stored exactly once, `DLQ` only dead-lettered, `missing` and `doubled`
    positions (listed below the tables), `skipped` source messages the route does not
    publish, `outside` stored positions outside the checked range.
    """
    console = console or Console(soft_wrap=False)
    for route in report.routes:
        streams = ", ".join(route.streams) or "no stream"
        title = f"{route.route} ({route.kind}) -> {streams}"
        if route.error is not None:
            console.print(f"[bold red]{title}: not checked[/]", highlight=False, soft_wrap=True)
        elif route.kind == "rabbitmq-queue":
            style = "red" if route.doubled_ids else "green"
            doubled = _shown([f"{msg_id} x{copies}" for msg_id, copies in route.doubled_ids]) or "none"
            console.print(
                f"[{style}]{title}: {route.stored} stored, {route.dead_lettered} dead-lettered, "
                f"{route.distinct_ids} distinct Msg-Ids; doubled: {doubled}[/]",
                highlight=False,
                soft_wrap=True,
            )
        else:
            console.print(_lane_table(title, route))
    for line in _remarks(report):
        console.print(line, highlight=False, soft_wrap=True)  # one line each, whole: greppable
    missing = sum(route.missing_count for route in report.routes)
    doubled_count = sum(route.doubled_count for route in report.routes)
    if report.ok:
        verdict = "[green]clean[/]: every expected message is stored exactly once"
    elif not any(route.error is None for route in report.routes):
        verdict = "[bold red]not checked[/]"
    elif not report.checked:
        verdict = f"[bold red]not fully checked[/] ({missing} missing, {doubled_count} doubled where checked)"
    else:
        verdict = f"[red]{missing} missing, {doubled_count} doubled[/]"
    summary = f"{report.file or 'verify'}: {verdict}. Nothing was published, taken or committed."
    console.print(summary, highlight=False, soft_wrap=True)


def _lane_table(title: str, route: RouteParity) -> Table:
    """Counts per lane; the positions themselves follow as whole lines (see `_remarks`), which
    a narrow terminal cannot squeeze out of sight."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for column in _LANE_COLUMNS:
        numeric = column not in ("lane", "range")
        table.add_column(column, justify="right" if numeric else "left", overflow="fold", no_wrap=numeric)
    for lane in route.lanes:
        table.add_row(
            lane.lane,
            lane.range_text,
            str(lane.expected),
            str(lane.stored_once),
            str(lane.dead_lettered),
            str(lane.missing_count),
            str(lane.doubled_count),
            str(lane.not_expected),
            str(lane.outside),
            style="red" if lane.missing_count or lane.doubled else "",
        )
    if not route.lanes:
        table.add_row("(none)", "", "", "", "", "", "", "", "", style="yellow")
    return table


def _shown(items: Sequence[str]) -> str:
    text = ", ".join(items[:SHOWN_RUNS])
    return text + (f", … (+{len(items) - SHOWN_RUNS} more)" if len(items) > SHOWN_RUNS else "")


def _remarks(report: VerifyReport) -> Iterator[str]:
    """Errors first, then each route's and lane's notes (rich markup)."""
    for error in report.errors:
        yield f"[bold red]error[/] {error}"
    for route in report.routes:
        if route.error is not None:
            yield f"[bold red]error[/] {route.route}: {route.error}"
    for route in report.routes:
        for lane in route.lanes:
            if lane.missing:
                yield f"[red]missing[/] {route.route} {lane.lane}: {format_ranges(lane.missing, SHOWN_RUNS)}"
            if lane.doubled:
                yield f"[red]doubled[/] {route.route} {lane.lane}: {_shown([str(run) for run in lane.doubled])}"
    for route in report.routes:
        for lane in route.lanes:
            if lane.note:
                yield f"[dim]note[/] {route.route} {lane.lane}: {lane.note}"
            if lane.unmatched:
                yield (
                    f"[dim]note[/] {route.route} {lane.lane}: {lane.unmatched} stored position(s) in the range "
                    "have no source message the route publishes (removed from the source since, or filtered)"
                )
        if route.note:
            yield f"[dim]note[/] {route.route}: {route.note}"
