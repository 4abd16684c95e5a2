"""`streams plan|apply` against a server: read its streams, apply a plan (bridge.jetstream.plan)
stream by stream, and report what was done. Apply never deletes anything; an update sends the
server's own config with only the differing fields replaced (nats-py's update_stream resets
every field left out)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import APIError

from bridge.brokers.nats.admin import all_stream_infos
from bridge.brokers.nats.client import close_quietly, connect_for_command
from bridge.config.model import BridgeConfig
from bridge.config.streams import StreamConfig
from bridge.jetstream.plan import Action, Plan, StreamPlan, plan_streams, show_value


async def server_streams(js: JetStreamContext) -> dict[str, js_api.StreamConfig]:
    """Every stream on the server, by name: its config."""
    return {name: info.config for name, info in (await all_stream_infos(js)).items()}


async def read_plan(js: JetStreamContext, wanted: Sequence[StreamConfig]) -> Plan:
    """The plan for `wanted` against what the server has right now."""
    return plan_streams(wanted, await server_streams(js))


class Outcome(StrEnum):
    """What apply did to one stream."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    REFUSED = "refused"  # JetStream cannot make the change in place; not attempted
    SKIPPED = "skipped"  # not attempted: another stream was refused (without --partial) or failed first
    FAILED = "failed"  # the server said no; `error` has its words


@dataclass(frozen=True, slots=True)
class StreamResult:
    plan: StreamPlan
    outcome: Outcome
    error: str | None = None

    def as_json(self) -> dict[str, object]:
        return {**self.plan.as_json(), "outcome": self.outcome.value, "error": self.error}


@dataclass(frozen=True, slots=True)
class ApplyReport:
    results: tuple[StreamResult, ...]

    @property
    def ok(self) -> bool:
        """True when nothing was refused, skipped or failed: the server now matches the file."""
        done = (Outcome.CREATED, Outcome.UPDATED, Outcome.UNCHANGED)
        return all(result.outcome in done for result in self.results)

    def as_json(self) -> dict[str, object]:
        return {"ok": self.ok, "streams": [result.as_json() for result in self.results]}


async def apply_plan(js: JetStreamContext, plan: Plan, *, partial: bool = False) -> ApplyReport:
    """Create and update what `plan` says, in file order; never delete anything.

    All or nothing where it can be: when any stream is refused, nothing is applied unless
    `partial`, so a file is not left half applied because of one stream. The first server
    error stops apply (later streams are skipped): the server is then as far as the results
    say, and `plan` shows what is left.
    """
    hold = plan.refused and not partial
    results: list[StreamResult] = []
    stopped = False
    for stream in plan.streams:
        if stream.action is Action.UNCHANGED:
            results.append(StreamResult(stream, Outcome.UNCHANGED))
        elif stream.action is Action.REFUSED:
            results.append(StreamResult(stream, Outcome.REFUSED))
        elif hold or stopped or stream.target is None:
            results.append(StreamResult(stream, Outcome.SKIPPED))
        else:
            try:
                if stream.action is Action.CREATE:
                    await js.add_stream(stream.target)
                else:
                    await js.update_stream(stream.target)
            except APIError as error:
                stopped = True
                words = error.description or type(error).__name__
                results.append(StreamResult(stream, Outcome.FAILED, f"{words} (err_code {error.err_code})"))
            except (NatsError, TimeoutError) as error:
                stopped = True
                results.append(StreamResult(stream, Outcome.FAILED, str(error) or type(error).__name__))
            else:
                created = stream.action is Action.CREATE
                results.append(StreamResult(stream, Outcome.CREATED if created else Outcome.UPDATED))
    return ApplyReport(tuple(results))


def format_report(report: ApplyReport) -> str:
    """What apply did, one line per stream (and per changed field), then the verdict."""
    lines = []
    for result in report.results:
        stream = result.plan
        lines.append(f"{stream.name:<24} {result.outcome.value}" + (f": {result.error}" if result.error else ""))
        if result.outcome is Outcome.UPDATED or (result.outcome is Outcome.SKIPPED and stream.action is Action.UPDATE):
            for change in stream.changes:
                server, file = show_value(change.field, change.server), show_value(change.field, change.file)
                lines.append(f"{'':<26}{change.field}: {server} -> {file}")
        for refusal in stream.refusals:
            lines.append(f"{'':<26}{refusal.field}: {refusal.reason}")
    if any(result.outcome is Outcome.REFUSED for result in report.results):
        skipped = any(result.outcome is Outcome.SKIPPED for result in report.results)
        lines.append("")
        lines.append(
            "Some streams are refused: nothing was applied (use --partial to apply the others)."
            if skipped
            else "Some streams are refused and were left as they are."
        )
    return "\n".join(lines) + "\n"


async def plan_from_server(config: BridgeConfig) -> Plan:
    """Connect with the file's NATS settings and plan its streams (`config.all_streams()`)."""
    nc = await connect_for_command(config)
    try:
        return await read_plan(nc.jetstream(), config.all_streams())
    finally:
        await close_quietly(nc)


async def apply_to_server(config: BridgeConfig, *, partial: bool = False) -> ApplyReport:
    """Plan against the server as it is now, then apply (see `apply_plan`)."""
    nc = await connect_for_command(config)
    try:
        js = nc.jetstream()
        return await apply_plan(js, await read_plan(js, config.all_streams()), partial=partial)
    finally:
        await close_quietly(nc)
