"""The report for people: rich tables, then errors and notes one whole line each, then a verdict."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from rich import box
from rich.console import Console
from rich.table import Table

from bridge.verify.ranges import format_ranges
from bridge.verify.report import LaneParity, RouteParity, VerifyReport

SHOWN_RUNS = 12  # runs of positions the table shows per cell; JSON has them all


_LANE_COLUMNS = ("lane", "range", "expected", "once", "DLQ", "missing", "doubled", "order", "skipped", "outside")


def render(report: VerifyReport, console: Console | None = None) -> None:
    """The report for people: per route a table of its lanes (a summary line for shadow/queue
    routes), problems in red; then errors and notes, one whole line each; then a verdict.

    Columns: `once` stored exactly once, `DLQ` only dead-lettered, `missing` and `doubled`
    positions, `order` positions stored after a higher one of their lane (all three listed
    below the tables), `skipped` source messages the route does not publish, `outside` stored
    positions outside the checked range.
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
    for line in report.reverse:
        console.print(line, highlight=False, soft_wrap=True)
    missing = sum(route.missing_count for route in report.routes)
    doubled_count = sum(route.doubled_count for route in report.routes)
    disorder = sum(route.out_of_order_count for route in report.routes)
    counts = f"{missing} missing, {doubled_count} doubled, {disorder} out of order"
    unchecked = report.unchecked_lanes
    if report.ok and unchecked:
        verdict = (
            f"[yellow]clean where checked[/]: every expected message of the checked ranges is stored exactly "
            f"once, each lane in order; {len(unchecked)} lane(s) have no range to check yet (notes above)"
        )
    elif report.ok:
        verdict = "[green]clean[/]: every expected message is stored exactly once, each lane in order"
    elif not any(route.error is None for route in report.routes):
        verdict = "[bold red]not checked[/]"
    elif not report.checked:
        verdict = f"[bold red]not fully checked[/] ({counts} where checked)"
    else:
        verdict = f"[red]{counts}[/]"
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
            str(lane.out_of_order_count),
            str(lane.not_expected),
            str(lane.outside),
            style="red" if lane.missing_count or lane.doubled or lane.out_of_order else "",
        )
    if not route.lanes:
        table.add_row("(none)", *[""] * (len(_LANE_COLUMNS) - 1), style="yellow")
    return table


def _shown(items: Sequence[str]) -> str:
    text = ", ".join(items[:SHOWN_RUNS])
    return text + (f", … (+{len(items) - SHOWN_RUNS} more)" if len(items) > SHOWN_RUNS else "")


def _problems(route: str, lane: LaneParity) -> Iterator[str]:
    """A lane's missing, doubled and out-of-order positions, one line each (rich markup)."""
    where = f"{route} {lane.lane}"
    if lane.missing:
        yield f"[red]missing[/] {where}: {format_ranges(lane.missing, SHOWN_RUNS)}"
    if lane.doubled:
        yield f"[red]doubled[/] {where}: {_shown([str(run) for run in lane.doubled])}"
    if lane.out_of_order:
        yield f"[red]out of order[/] {where}: {format_ranges(lane.out_of_order, SHOWN_RUNS)}"


def _remarks(report: VerifyReport) -> Iterator[str]:
    """Errors first, then each route's and lane's notes (rich markup)."""
    for error in report.errors:
        yield f"[bold red]error[/] {error}"
    for route in report.routes:
        if route.error is not None:
            yield f"[bold red]error[/] {route.route}: {route.error}"
    for route in report.routes:
        for lane in route.lanes:
            yield from _problems(route.route, lane)
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
