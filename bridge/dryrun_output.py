"""How `nats-bridge dry-run` prints its report for people: rich tables, errors first."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from bridge.dryrun import DryRunReport, Severity
from bridge.jetstream.plan import Action, show_value

_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "dim"}
_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


def print_report(report: DryRunReport, console: Console | None = None) -> None:
    """Findings (errors, then warnings, then notes), the stream drift table, and a verdict line."""
    console = console or Console(soft_wrap=False)
    findings = sorted(report.findings, key=lambda finding: _ORDER[finding.severity])
    if findings:
        table = Table(title=f"dry-run {report.file}", show_lines=False, expand=False)
        for column in ("severity", "check", "about", "finding"):
            table.add_column(column, overflow="fold")
        for finding in findings:
            style = _STYLE[finding.severity]
            table.add_row(finding.severity.value, finding.check, finding.subject, finding.message, style=style)
        console.print(table)
    if report.drift is not None:
        drift = Table(title="streams on the server vs the file")
        for column in ("stream", "action", "field", "server", "file"):
            drift.add_column(column, overflow="fold")
        for stream in report.drift.streams:
            if stream.action in (Action.UNCHANGED, Action.CREATE) or not stream.changes:
                note = "missing on the server" if stream.action is Action.CREATE else ""
                drift.add_row(stream.name, stream.action.value, note, "", "")
                continue
            for change in stream.changes:
                drift.add_row(
                    stream.name,
                    stream.action.value,
                    change.field,
                    show_value(change.field, change.server),
                    show_value(change.field, change.file),
                )
        console.print(drift)
    errors, warnings = report.count(Severity.ERROR), report.count(Severity.WARNING)
    verdict = "clean" if not errors and not warnings else f"{errors} error(s), {warnings} warning(s)"
    console.print(f"{report.file}: {verdict}. Nothing was published, acked, committed or declared.")
