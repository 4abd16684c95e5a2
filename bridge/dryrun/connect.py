"""`dry-run --connect`: ask each broker what is there, and change nothing anywhere.

What each probe does, and why it leaves no trace:

- NATS: connect, list streams (`streams_info`), and plan the file's streams against them
  with bridge.jetstream.plan (the same field-by-field drift `streams plan` shows). Nothing
  is created or updated: only the planner's pure half and a read run.
- RabbitMQ (bridge.brokers.rabbitmq.probe): connect (not robust: no reconnect), then per route
  a *passive* declare of the exchange (shadow) or queue (queue/stream mode), each on its own
  channel because a 404 closes the channel. A passive declare never creates anything. The
  shadow queue is looked up the same way, only to say whether `run` will declare it.
- Kafka (bridge.brokers.kafka.probe): an admin client reads cluster metadata (topics). No
  consumer is created, so no group is joined and no offset is committed.
- Durability (bridge.durability.probe): the streams' replicas and storage from the same stream
  listing, each server's sync_interval from its monitoring endpoint (`nats.monitor_urls`), queue
  types and bound queues from RabbitMQ's management API (`management:` of the source), Kafka
  topics' replica sets and configs from the admin client. All of it GETs and describes.

Every probe has a short timeout, and errors name the broker and its URL with the password
redacted (the password is also scrubbed from the client's own error text).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from nats.errors import Error as NatsError
from nats.js import api as js_api

from bridge.brokers import source_broker
from bridge.brokers.nats.admin import all_stream_infos
from bridge.brokers.nats.client import connect_error_text, connect_nats
from bridge.config.model import BridgeConfig
from bridge.decide import DEFAULT_MAX_PAYLOAD
from bridge.dryrun.checks import offline_checks
from bridge.dryrun.replay import ReplayReport, replay_file, replay_findings, replay_message
from bridge.dryrun.report import DryRunReport, Finding, Severity
from bridge.dryrun.sample import CONNECT_TIMEOUT, Sample, finding
from bridge.dryrun.streams import route_streams
from bridge.durability.assess import DurabilityReport
from bridge.durability.legacy import NOT_REVEALED, Level
from bridge.durability.probe import assemble, gather_legacy_and_sync
from bridge.durability.sync import SYNC_UNKNOWN_NOTE
from bridge.errors import BridgeError
from bridge.jetstream.consumer_apply import file_consumers, read_consumers_plan
from bridge.jetstream.consumer_plan import ConsumersPlan
from bridge.jetstream.plan import Action, Plan, plan_streams
from bridge.logs import Scrubber, config_secrets, redact_url
from bridge.plan import compile_plan

PROBE_TIMEOUT = 5.0  # seconds per broker: a dry-run must answer quickly, also when a broker is down


def _error_text(error: BaseException) -> str:
    return str(error) or type(error).__name__


# --------------------------------------------------------------------------- NATS


@dataclass(frozen=True, slots=True)
class NatsLook:
    """What the NATS probe saw: the probe result, the stream plan and the consumer plan (None when
    unreachable), every server stream's subjects and info."""

    result: dict[str, Any]
    plan: Plan | None = None
    consumers: ConsumersPlan | None = None
    subjects: dict[str, list[str]] = field(default_factory=dict)
    infos: dict[str, js_api.StreamInfo] = field(default_factory=dict)


async def probe_nats(config: BridgeConfig) -> NatsLook:
    urls = ", ".join(redact_url(server.get_secret_value()) for server in config.nats.servers)
    nats = config.nats.model_copy(update={"max_reconnect_attempts": 1})
    try:
        nc = await asyncio.wait_for(connect_nats(nats), PROBE_TIMEOUT * 2)
    except (NatsError, OSError, TimeoutError, BridgeError) as error:
        message = Scrubber(config_secrets(config)).scrub(connect_error_text(config.nats, error))
        return NatsLook({"broker": "nats", "url": urls, "ok": False, "error": message})
    try:
        js = nc.jetstream(timeout=PROBE_TIMEOUT)
        infos = await asyncio.wait_for(all_stream_infos(js), PROBE_TIMEOUT)
        consumers = await asyncio.wait_for(read_consumers_plan(js, file_consumers(config)), PROBE_TIMEOUT)
    except (NatsError, TimeoutError) as error:
        return NatsLook({"broker": "nats", "url": urls, "ok": False, "error": f"NATS at {urls}: {_error_text(error)}"})
    finally:
        with contextlib.suppress(NatsError, OSError, TimeoutError):
            await nc.close()
    existing = {name: info.config for name, info in infos.items()}
    plan = plan_streams(config.all_streams(), existing)
    subjects = {name: list(stream.subjects or []) for name, stream in existing.items()}
    return NatsLook({"broker": "nats", "url": urls, "ok": True, "error": None}, plan, consumers, subjects, infos)


def consumer_findings(plan: ConsumersPlan) -> list[Finding]:
    """Declared consumers against the server's, as `consumers plan` shows them: not made yet is
    news (info), a drifted one a warning (`consumers apply` updates it), a refused change an error."""
    findings = []
    for consumer in plan.consumers:
        if consumer.action is Action.CREATE:
            text = "not on the server yet: `consumers apply` makes it"
            findings.append(Finding(Severity.INFO, "consumers", consumer.label, text))
        elif consumer.action is Action.UPDATE:
            fields = ", ".join(change.field for change in consumer.changes)
            text = f"differs from the file in {fields}: `consumers apply` would update it"
            findings.append(Finding(Severity.WARNING, "consumers", consumer.label, text))
        elif consumer.action is Action.REFUSED:
            reasons = "; ".join(f"{r.field}: {r.reason}" for r in consumer.refusals)
            findings.append(Finding(Severity.ERROR, "consumers", consumer.label, reasons))
    return findings


def plan_findings(plan: Plan) -> list[Finding]:
    """Missing or drifted streams are warnings (`run` creates, `streams apply` updates); refused ones errors."""
    findings = []
    for stream in plan.streams:
        if stream.action is Action.CREATE:
            findings.append(
                Finding(Severity.WARNING, "streams", stream.name, "missing on the server: `run` will create it")
            )
        elif stream.action is Action.UPDATE:
            fields = ", ".join(change.field for change in stream.changes)
            findings.append(
                Finding(
                    Severity.WARNING,
                    "streams",
                    stream.name,
                    f"differs from the file in {fields}: `run` keeps the server's, `streams apply` would update",
                )
            )
        elif stream.action is Action.REFUSED:
            reasons = "; ".join(f"{r.field}: {r.reason}" for r in stream.refusals)
            findings.append(Finding(Severity.ERROR, "streams", stream.name, reasons))
    return findings


# --------------------------------------------------------------------------- all of it


def durability_findings(report: DurabilityReport) -> list[Finding]:
    """The posture as findings: a note per stream (each route's legacy side is in the table and
    in the JSON's `durability`), a warning per downgrade (it makes dry-run exit 1, as every
    warning does), and a warning per configured monitoring endpoint or management API that did
    not answer."""
    findings: list[Finding] = []
    users: dict[str, list[str]] = {}
    for route, (_, streams) in report.routes.items():
        for stream in streams:
            users.setdefault(stream, []).append(route)
    for name, posture in report.streams.items():
        routes = ", ".join(users.get(name, []))
        findings.append(Finding(Severity.INFO, "durability", name, f"{posture.line()} (routes: {routes})"))
    for item in report.advice:
        severity = Severity.WARNING if item.level is Level.WARNING else Severity.INFO
        findings.append(Finding(severity, "durability", item.route, item.text()))
    if any(posture.sync.reason == NOT_REVEALED and not posture.sync.known for posture in report.streams.values()):
        findings.append(Finding(Severity.INFO, "durability", "sync_interval", SYNC_UNKNOWN_NOTE))
    for problem in report.problems:
        findings.append(Finding(Severity.WARNING, "durability", "probe", problem))
    return findings


async def probe_all(
    config: BridgeConfig,
) -> tuple[list[Finding], Plan | None, dict[str, list[str]], DurabilityReport]:
    """Every broker at once: (findings, the stream plan or None, the server's streams' subjects,
    the durability posture)."""
    nats_task = probe_nats(config)
    routes, scrub = list(config.routes()), Scrubber(config_secrets(config)).scrub
    source_probes = [
        source_broker(name, source).probe(routes, seconds=PROBE_TIMEOUT, scrub=scrub)
        for name, source in config.sources.items()
    ]
    nats_look, per_source, (views, by_server, problems) = await asyncio.gather(
        nats_task, asyncio.gather(*source_probes), gather_legacy_and_sync(config, config.routes())
    )
    nats_result, plan, server, infos = nats_look.result, nats_look.plan, nats_look.subjects, nats_look.infos
    findings: list[Finding] = []
    if nats_result["ok"]:
        findings.append(Finding(Severity.INFO, "connect", "nats", f"reachable at {nats_result['url']}"))
    else:
        findings.append(Finding(Severity.ERROR, "connect", "nats", nats_result["error"]))
    if plan is not None:
        findings += plan_findings(plan)
    if nats_look.consumers is not None:
        findings += consumer_findings(nats_look.consumers)
    for looks in per_source:
        findings += [finding(look) for look in looks]
    durability = assemble(config, route_streams(config, server), infos, views, by_server, problems)
    findings += durability_findings(durability)
    return findings, plan, server, durability


async def sample_all(config: BridgeConfig, count: int, duration: float) -> Sample:
    """Every source at once (exchanges listen for `duration` in parallel)."""
    routes = list(config.routes())
    jobs = [
        source_broker(name, source).sample(routes, count=count, duration=duration, seconds=CONNECT_TIMEOUT)
        for name, source in config.sources.items()
    ]
    total = Sample()
    for read in await asyncio.gather(*jobs):
        total.add(read)
    return total


async def sample_into(report: ReplayReport, config: BridgeConfig, count: int, duration: float) -> None:
    """Read the sample and replay it into `report`: messages numbered in reading order."""
    sample = await sample_all(config, count, duration)
    report.findings += sample.findings
    routes = compile_plan(config)  # once for the whole sample, not per message
    for number, sampled in enumerate(sample.messages, start=1):
        replayed = replay_message(routes, number, sampled.record, max_payload=report.max_payload, exact=sampled.message)
        report.messages.append(replayed)
        report.where.append(sampled.where)
    report.findings += replay_findings(report.messages, report.input_file)


async def dry_run(
    config: BridgeConfig,
    file: str,
    *,
    connect: bool,
    outage_budget: timedelta,
    replay_input: Path | None = None,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    sample: int | None = None,
    sample_duration: float = 10.0,
) -> DryRunReport:
    """The whole dry-run: the offline checks, and with `connect` the probes (whose server streams
    then join the capture and overlap checks). With `replay_input` the recorded messages are
    replayed through the mapping (bridge.dryrun.replay, offline), with `sample` messages read
    live without consuming (bridge.dryrun.sample); either way the report is a ReplayReport."""
    report = DryRunReport(file)
    routes = compile_plan(config)
    if replay_input is not None:
        report = ReplayReport(file, input_file=str(replay_input), max_payload=max_payload)
        replay_file(routes, report, replay_input, max_payload=max_payload)
    elif sample is not None:
        label = f"live sample of up to {sample} message(s) per topic, exchange or stream queue"
        report = ReplayReport(file, input_file=label, max_payload=max_payload)
        await sample_into(report, config, sample, sample_duration)
    server: dict[str, list[str]] = {}
    if connect:
        findings, plan, server, durability = await probe_all(config)
        report.findings += findings
        report.plan = plan.as_json() if plan is not None else None
        report.drift = plan
        report.durability = durability
    report.findings[:0] = offline_checks(routes, outage_budget=outage_budget, server_streams=server)
    return report
