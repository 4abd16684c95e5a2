"""`dry-run --input FILE.jsonl`: replay recorded messages through the mapping, offline.

Offline checks say what a mapping file *could* do; a replay says what it *would* do with the
traffic you actually have. Each recorded message goes through `bridge.explain` (which runs
the bridge's own matching and mapping code), so the subjects, Msg-Ids, headers and sizes
shown are the ones `run` would publish. Nothing connects anywhere: this module is pure.

The input format, and how each line is read, is `bridge.dryrun.records`.

Per message and matching route the fate is what the pipeline decides (`bridge.decide`, the
one decision they share):

- publish: mapped, captured by a stream, and small enough;
- filtered: a tombstone the route skips (`tombstones: skip`), a record a reverse route wrote;
- unmappable (a template cannot render, a subject longer than the server takes), no-stream (no
  stream in the file captures the subject) or payload-too-large (payload plus header block over
  `--max-payload`, as the server counts it): the route's `on_error` decides — dead-lettered,
  skipped, or the route stops.

A message no route takes is reported with each route's reason.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.config.limits import InputLimitError
from bridge.config.model import BridgeConfig
from bridge.deadletters import DeadLetterReason
from bridge.decide import DEFAULT_MAX_PAYLOAD, Fate
from bridge.dryrun.records import AmqpRecord, KafkaRecord, ReplayInputError, line_limit, read_records
from bridge.dryrun.report import DryRunReport, Finding, Severity
from bridge.explain import Explanation, RouteOutcome, explain_amqp, explain_kafka, route_outcome
from bridge.message import KafkaOrigin, SourceMessage
from bridge.plan import Plan, compile_plan

CHECK = "replay"
_MAX_ERROR_FINDINGS = 10  # a binary file fed by mistake should not print one error per line
_MAX_LINES_SHOWN = 10


@dataclass(frozen=True, slots=True)
class RouteVerdict:
    """What one route that takes the message would do with it."""

    outcome: RouteOutcome
    encoded_size: int  # payload plus header block: what max_payload is checked against
    fate: str  # "publish" | "dead-letter" | "skip" | "stop"
    problem: str | None = None  # a DeadLetterReason value when fate is not publish
    detail: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            **self.outcome.as_json(),
            "encoded_size": self.encoded_size,
            "fate": self.fate,
            "problem": self.problem,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class ReplayedMessage:
    """One input line and every route's verdict on it."""

    line: int
    source: str  # "kafka" | "amqp"
    explanation: Explanation
    verdicts: tuple[RouteVerdict, ...]

    @property
    def routed(self) -> bool:
        return bool(self.verdicts)

    def as_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "source": self.source,
            "message": self.explanation.message,
            "routed": self.routed,
            "routes": [verdict.as_json() for verdict in self.verdicts],
            "misses": [{"route": route, "reason": reason} for route, reason in self.explanation.misses],
        }


@dataclass(slots=True)
class ReplayReport(DryRunReport):
    """A dry-run report that also carries the replayed messages (`messages` in --json)."""

    input_file: str = ""
    max_payload: int = DEFAULT_MAX_PAYLOAD
    messages: list[ReplayedMessage] = field(default_factory=list)
    where: list[str] = field(default_factory=list)  # a live sample: where each message was read

    def as_json(self) -> dict[str, Any]:
        # Explicit base call: zero-argument super() does not work in a slots dataclass.
        document = DryRunReport.as_json(self)
        document["input"] = {"file": self.input_file, "max_payload": self.max_payload}
        document["messages"] = [message.as_json() for message in self.messages]
        for message, where in zip(document["messages"], self.where, strict=False):
            message["read_from"] = where
        return document


def _explain(
    plan: Plan, record: KafkaRecord | AmqpRecord, max_payload: int
) -> tuple[Explanation, SourceMessage | None]:
    """explain_* on the record; with the exact message when explain's text-only inputs cannot carry it."""
    if isinstance(record, AmqpRecord):
        explanation = explain_amqp(
            plan,
            exchange=record.exchange,
            routing_key=record.routing_key,
            headers=record.headers,
            queue=record.queue,
            body=record.body,
            properties=record.properties,
            max_payload=max_payload,
        )
        return explanation, None
    text_headers: dict[str, str] = {}
    exact = record.timestamp_ms is not None or len({name for name, _ in record.headers}) != len(record.headers)
    for name, value in record.headers:
        try:
            text_headers[name] = value.decode("utf-8")
        except UnicodeDecodeError:
            exact = True
    explanation = explain_kafka(
        plan,
        topic=record.topic,
        key=record.key,
        partition=record.partition,
        offset=record.offset,
        headers=text_headers,
        body=record.value,
        max_payload=max_payload,
    )
    if not exact:
        return explanation, None
    # explain_kafka takes headers as unique text values and no timestamp; when the record has
    # binary or repeated headers or a timestamp, the routes it chose map the exact record instead.
    origin = KafkaOrigin(record.topic, record.partition, record.offset, record.key, record.timestamp_ms)
    return explanation, SourceMessage(origin=origin, body=record.value, headers=record.headers)


def _verdict(outcome: RouteOutcome) -> RouteVerdict:
    """The route's verdict, as `bridge.decide` gave it to explain."""
    detail = outcome.error if outcome.problem == DeadLetterReason.UNMAPPABLE.value and outcome.error else outcome.detail
    return RouteVerdict(outcome, outcome.encoded_size, outcome.fate, outcome.problem, detail)


def replay_message(
    mapping: Plan | BridgeConfig,
    line: int,
    record: KafkaRecord | AmqpRecord,
    *,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    exact: SourceMessage | None = None,
) -> ReplayedMessage:
    """Every matching route's verdict on one recorded message (pure: no connection).

    `exact` is the message exactly as a source built it (a live sample): the routes that take
    the record then map it, headers, properties and stream offset included. `mapping` is best
    compiled once (`compile_plan`) by a caller replaying many messages."""
    plan = compile_plan(mapping)
    explanation, derived = _explain(plan, record, max_payload)
    exact = exact or derived
    verdicts = []
    for outcome in explanation.matches:
        if exact is not None:
            # the exact record's verdict replaces it
            outcome = route_outcome(  # noqa: PLW2901
                plan.route(outcome.route), exact, plan.streams, max_payload=max_payload
            )
        verdicts.append(_verdict(outcome))
    return ReplayedMessage(line, "kafka" if isinstance(record, KafkaRecord) else "amqp", explanation, tuple(verdicts))


def _lines(numbers: Sequence[int]) -> str:
    shown = ", ".join(str(number) for number in numbers[:_MAX_LINES_SHOWN])
    more = f" and {len(numbers) - _MAX_LINES_SHOWN} more" if len(numbers) > _MAX_LINES_SHOWN else ""
    return f"line{'s' if len(numbers) > 1 else ''} {shown}{more}"


def replay_findings(messages: Sequence[ReplayedMessage], input_file: str) -> list[Finding]:
    """Summaries for the findings table: unrouted and not-published messages are warnings."""
    findings: list[Finding] = []
    unrouted = [message.line for message in messages if not message.routed]
    if unrouted:
        findings.append(
            Finding(
                Severity.WARNING,
                CHECK,
                input_file,
                f"{len(unrouted)} of {len(messages)} message(s) taken by no route ({_lines(unrouted)})",
            )
        )
    grouped: dict[tuple[str, str, str], list[tuple[int, str]]] = defaultdict(list)
    published = 0
    filtered: dict[str, list[int]] = defaultdict(list)
    for message in messages:
        for verdict in message.verdicts:
            if verdict.fate == Fate.PUBLISH:
                published += 1
            elif verdict.problem is None:
                filtered[verdict.outcome.route].append(message.line)
            else:
                grouped[(verdict.outcome.route, verdict.fate, verdict.problem)].append(
                    (message.line, verdict.detail or "")
                )
    for route, lines in filtered.items():
        text = f"{len(lines)} message(s) ({_lines(lines)}) filtered, as the running bridge filters them"
        findings.append(Finding(Severity.INFO, CHECK, route, text))
    fate_text = {"dead-letter": "would be dead-lettered", "skip": "would be skipped", "stop": "would stop the route"}
    for (route, fate, problem), hits in grouped.items():
        first = hits[0][1]
        text = f"{len(hits)} message(s) ({_lines([line for line, _ in hits])}) {fate_text[fate]} as {problem}: {first}"
        findings.append(Finding(Severity.WARNING, CHECK, route, text))
    findings.append(
        Finding(
            Severity.INFO,
            CHECK,
            input_file,
            f"replayed {len(messages)} message(s): {published} publish(es) would be made",
        )
    )
    return findings


def replay_file(
    config: BridgeConfig | Plan, report: ReplayReport, path: Path, *, max_payload: int = DEFAULT_MAX_PAYLOAD
) -> None:
    """Replay every line of `path` into `report`: messages, summary findings, and an error per bad line."""
    errors: list[Finding] = []
    plan = compile_plan(config)
    try:
        for line, record in read_records(path, line_limit(max_payload)):
            if isinstance(record, ReplayInputError):
                errors.append(Finding(Severity.ERROR, CHECK, f"{path}:{line}", str(record)))
            else:
                report.messages.append(replay_message(plan, line, record, max_payload=max_payload))
    except OSError as error:
        errors.append(Finding(Severity.ERROR, CHECK, str(path), f"cannot read the input file: {error}"))
    except InputLimitError as error:
        errors.append(Finding(Severity.ERROR, CHECK, str(path), str(error)))
    if len(errors) > _MAX_ERROR_FINDINGS:
        hidden = len(errors) - _MAX_ERROR_FINDINGS
        errors = errors[:_MAX_ERROR_FINDINGS]
        errors.append(Finding(Severity.ERROR, CHECK, str(path), f"and {hidden} more malformed line(s)"))
    report.findings += errors
    report.findings += replay_findings(report.messages, str(path))
