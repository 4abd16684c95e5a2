"""`consumers plan|apply` against a server: read the file's consumers (and whether their streams
exist), apply a plan (bridge.jetstream.consumer_plan) consumer by consumer, report what was done.

Apply never deletes anything. It creates and updates through JetStream's create-or-update call
(`add_consumer` with the durable name), which refuses what cannot change in place by itself:
the plan refuses it first, with the reason, so nothing is half done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import APIError, NotFoundError

from bridge.brokers.nats.client import close_quietly, connect_for_command
from bridge.config.consumers import ConsumerConfig
from bridge.config.model import BridgeConfig
from bridge.jetstream.apply import Outcome
from bridge.jetstream.consumer_plan import ConsumerPlan, ConsumersPlan, plan_consumers, show
from bridge.jetstream.plan import Action


def file_consumers(config: BridgeConfig) -> list[tuple[str, ConsumerConfig]]:
    """Every consumer of the file with its service, in file order."""
    return [(name, consumer) for name, service in config.services.items() for consumer in service.consumers]


async def read_consumers_plan(js: JetStreamContext, wanted: Sequence[tuple[str, ConsumerConfig]]) -> ConsumersPlan:
    """The plan for `wanted` against what the server has right now (only the consumers named)."""
    present: set[str] = set()
    for stream in dict.fromkeys(consumer.stream for _, consumer in wanted):
        try:
            await js.stream_info(stream)
        except NotFoundError:
            continue
        present.add(stream)
    server: dict[tuple[str, str], js_api.ConsumerConfig | None] = {}
    for _, consumer in wanted:
        if consumer.stream in present:
            try:
                info = await js.consumer_info(consumer.stream, consumer.name)
            except NotFoundError:
                continue
            server[(consumer.stream, consumer.name)] = info.config
    return plan_consumers(wanted, server, present)


@dataclass(frozen=True, slots=True)
class ConsumerResult:
    plan: ConsumerPlan
    outcome: Outcome
    error: str | None = None

    def as_json(self) -> dict[str, object]:
        return {**self.plan.as_json(), "outcome": self.outcome.value, "error": self.error}


@dataclass(frozen=True, slots=True)
class ConsumersApplyReport:
    results: tuple[ConsumerResult, ...]

    @property
    def ok(self) -> bool:
        """True when nothing was refused, skipped or failed: the server now matches the file."""
        done = (Outcome.CREATED, Outcome.UPDATED, Outcome.UNCHANGED)
        return all(result.outcome in done for result in self.results)

    def as_json(self) -> dict[str, object]:
        return {"ok": self.ok, "consumers": [result.as_json() for result in self.results]}


async def apply_consumers_plan(
    js: JetStreamContext, plan: ConsumersPlan, *, partial: bool = False
) -> ConsumersApplyReport:
    """Create and update what `plan` says, in file order; never delete anything.

    As `streams apply`: when any consumer is refused nothing is applied unless `partial`, and the
    first server error stops apply (later consumers are skipped; `plan` shows what is left).
    """
    hold = plan.refused and not partial
    results: list[ConsumerResult] = []
    stopped = False
    for consumer in plan.consumers:
        if consumer.action is Action.UNCHANGED:
            results.append(ConsumerResult(consumer, Outcome.UNCHANGED))
        elif consumer.action is Action.REFUSED:
            results.append(ConsumerResult(consumer, Outcome.REFUSED))
        elif hold or stopped or consumer.target is None:
            results.append(ConsumerResult(consumer, Outcome.SKIPPED))
        else:
            try:
                await js.add_consumer(consumer.stream, consumer.target)
            except APIError as error:
                stopped = True
                words = error.description or type(error).__name__
                results.append(ConsumerResult(consumer, Outcome.FAILED, f"{words} (err_code {error.err_code})"))
            except (NatsError, TimeoutError) as error:
                stopped = True
                results.append(ConsumerResult(consumer, Outcome.FAILED, str(error) or type(error).__name__))
            else:
                created = consumer.action is Action.CREATE
                results.append(ConsumerResult(consumer, Outcome.CREATED if created else Outcome.UPDATED))
    return ConsumersApplyReport(tuple(results))


def format_consumers_report(report: ConsumersApplyReport) -> str:
    """What apply did, one line per consumer (and per changed field), then the verdict."""
    lines = []
    for result in report.results:
        consumer = result.plan
        lines.append(f"{consumer.label:<32} {result.outcome.value}" + (f": {result.error}" if result.error else ""))
        updating = consumer.action is Action.UPDATE and result.outcome in (Outcome.UPDATED, Outcome.SKIPPED)
        if updating:
            for change in consumer.changes:
                server, file = show(change.field, change.server), show(change.field, change.file)
                lines.append(f"{'':<34}{change.field}: {server} -> {file}")
        for refusal in consumer.refusals:
            lines.append(f"{'':<34}{refusal.field}: {refusal.reason}")
    if any(result.outcome is Outcome.REFUSED for result in report.results):
        skipped = any(result.outcome is Outcome.SKIPPED for result in report.results)
        lines.append("")
        lines.append(
            "Some consumers are refused: nothing was applied (use --partial to apply the others)."
            if skipped
            else "Some consumers are refused and were left as they are."
        )
    return "\n".join(lines) + "\n"


async def consumers_plan_from_server(config: BridgeConfig) -> ConsumersPlan:
    """Connect with the file's NATS settings and plan its consumers."""
    nc = await connect_for_command(config)
    try:
        return await read_consumers_plan(nc.jetstream(), file_consumers(config))
    finally:
        await close_quietly(nc)


async def apply_consumers_to_server(config: BridgeConfig, *, partial: bool = False) -> ConsumersApplyReport:
    """Plan against the server as it is now, then apply (see `apply_consumers_plan`)."""
    nc = await connect_for_command(config)
    try:
        js = nc.jetstream()
        plan = await read_consumers_plan(js, file_consumers(config))
        return await apply_consumers_plan(js, plan, partial=partial)
    finally:
        await close_quietly(nc)
