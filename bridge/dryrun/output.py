"""How `nats-bridge dry-run` prints its report for people: rich tables, errors first."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from bridge.decide import Fate
from bridge.dryrun.replay import ReplayReport, RouteVerdict
from bridge.dryrun.report import DryRunReport, Severity
from bridge.jetstream.plan import Action, show_value

_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "dim"}
# Past this many replayed messages the table would take minutes to lay out (rich measures every
# cell): one plain line per message and route instead, headers left to --json.
TABLE_ROWS = 1000
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
    if report.durability is not None and report.durability.streams:
        console.print(_durability_table(report))
    if isinstance(report, ReplayReport):
        if len(report.messages) <= TABLE_ROWS:
            console.print(_messages_table(report))
        else:
            _print_message_lines(report, console)
    errors, warnings = report.count(Severity.ERROR), report.count(Severity.WARNING)
    verdict = "clean" if not errors and not warnings else f"{errors} error(s), {warnings} warning(s)"
    console.print(f"{report.file}: {verdict}. Nothing was published, acked, committed or declared.")


def _print_message_lines(report: ReplayReport, console: Console) -> None:
    """The replay as tab-separated lines: line, route, subject, Nats-Msg-Id, size, outcome."""
    sampled = bool(report.where)
    out = [
        f"{len(report.messages)} messages replayed from {report.input_file} (max_payload {report.max_payload}); "
        "one line per message and route, headers in --json",
        "\t".join(("read from" if sampled else "line", "route", "subject", "Nats-Msg-Id", "bytes", "outcome")),
    ]
    for index, message in enumerate(report.messages):
        line = report.where[index] if sampled else str(message.line)
        if not message.routed:
            reasons = "; ".join(f"{route}: {reason}" for route, reason in message.explanation.misses)
            out.append(f"{line}\t-\t\t\t\ttaken by no route: {reasons}")
            continue
        for verdict in message.verdicts:
            outcome = verdict.outcome
            text = _outcome_text(verdict)
            fields = (line, outcome.route, outcome.subject or "", outcome.msg_id or "", str(verdict.encoded_size), text)
            out.append("\t".join(" ".join(field.split()) for field in fields))
    console.file.write("\n".join(out) + "\n")


def _messages_table(report: ReplayReport) -> Table:
    """One row per replayed message and route that takes it, and one per message no route takes."""
    sampled = bool(report.where)
    title = report.input_file if sampled else f"replay of {report.input_file}"
    table = Table(title=f"{title} (max_payload {report.max_payload})")
    first = "read from" if sampled else "line"
    for column in (first, "message", "route", "subject", "Nats-Msg-Id", "size", "headers", "outcome"):
        table.add_column(column, overflow="fold")
    for index, message in enumerate(report.messages):
        line = report.where[index] if sampled else str(message.line)
        if not message.routed:
            reasons = "\n".join(f"{route}: {reason}" for route, reason in message.explanation.misses)
            outcome = f"taken by no route\n{reasons}"
            table.add_row(line, message.explanation.message, "-", "", "", "", "", outcome, style="yellow")
            continue
        for verdict in message.verdicts:
            outcome_ = verdict.outcome
            headers = "\n".join(f"{name}: {value}" for name, value in outcome_.headers.items())
            size = f"{outcome_.size} B ({verdict.encoded_size} B with headers)"
            text, style = _outcome_text(verdict), "" if verdict.fate == Fate.PUBLISH else "yellow"
            table.add_row(
                line,
                message.explanation.message,
                outcome_.route,
                outcome_.subject or "",
                outcome_.msg_id or "",
                size,
                headers,
                text,
                style=style,
            )
    return table


def _durability_table(report: DryRunReport) -> Table:
    """Per stream: how it keeps what it acknowledges, and the legacy side of each route into it
    (the warnings are in the findings above)."""
    assert report.durability is not None
    table = Table(title="durability: what each stream keeps, against what the legacy side promised")
    for column in ("stream", "replicas", "storage", "sync_interval", "route", "legacy side"):
        table.add_column(column, overflow="fold")
    warned = {(item.route, item.stream) for item in report.durability.warnings}
    for name, posture in report.durability.streams.items():
        routes = [(route, legacy) for route, (legacy, streams) in report.durability.routes.items() if name in streams]
        for index, (route, legacy) in enumerate(routes or [("-", None)]):
            first = index == 0
            table.add_row(
                (name + ("" if posture.origin == "server" else " (as the file declares it)")) if first else "",
                str(posture.replicas) if first else "",
                posture.storage if first else "",
                posture.sync.text() if first else "",
                route,
                legacy.describe() if legacy is not None else "",
                style="yellow" if (route, name) in warned else "",
            )
    return table


def _outcome_text(verdict: RouteVerdict) -> str:
    if verdict.fate == Fate.PUBLISH:
        return f"publish to {', '.join(verdict.outcome.streams)}"
    if verdict.problem is None:
        return f"{verdict.fate}: {verdict.detail}"
    return f"{verdict.fate} ({verdict.problem}): {verdict.detail}"
