"""The whole check, in order, and the `nats-bridge verify` command around it.

Consistency while the bridge runs: committed offsets are read *before* the streams are
scanned (a commit follows the PubAck, so everything committed is in the scan), and each
stream is scanned up to its last sequence at the start of the scan.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import typer
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError

from bridge.brokers import BROKER_ERRORS, route_broker
from bridge.brokers.base import RangeRead
from bridge.brokers.nats.client import connect_nats
from bridge.cli_output import print_config_errors, print_json
from bridge.config import load_config
from bridge.config.model import BridgeConfig
from bridge.config.routes import MsgIdStrategy
from bridge.errors import BridgeError, ConfigError
from bridge.logs import Scrubber, config_secrets, redact_url
from bridge.verify.claims import RouteCheck, build_checks
from bridge.verify.kafka import KafkaRouteReader
from bridge.verify.limits import CONNECT_TIMEOUT, FETCH_TIMEOUT, READS
from bridge.verify.output import render
from bridge.verify.rabbitmq import compare_stream_queue
from bridge.verify.repair import RepairReport, repair
from bridge.verify.report import EXIT_UNCHECKED, LaneParity, RouteParity, VerifyReport
from bridge.verify.reverse_leg import reverse_lines
from bridge.verify.scan import scan_all, stream_notes

_QUEUE_NOTE = (
    "Shadow/queue routes have no positions: only that no Nats-Msg-Id is stored twice is checked. "
    "Order cannot be checked either: a queue's messages carry no position to compare. "
    "Completeness needs the bridge's own accounting of what it acknowledged, which does not exist yet."
)
_CONTENT_HASH_NOTE = (
    "Messages without an AMQP message_id get a content-hash id: two identical messages share it, "
    "so a doubled id may be two identical messages rather than one stored twice."
)


def _parity(check: RouteCheck, lanes: list[LaneParity]) -> RouteParity:
    """The route's report. Order was tallied while the streams were scanned, for every lane
    stored, whatever range the source comparison could check: it is attached here, in the one
    place every route's lanes pass through, by the lane's label."""
    disorder = check.out_of_order_by_label()
    for lane in lanes:
        lane.out_of_order = disorder.get(lane.lane, [])
    parity = RouteParity(
        route=check.key,
        kind=check.kind,
        streams=list(check.streams),
        lanes=lanes,
        stored=check.stored,
        dead_lettered=check.dead_lettered,
        notes=list(check.notes),
        error=check.error,
    )
    if check.recopied:
        parity.notes.append(
            f"{check.recopied} stored record(s) carry Bridge-Recopied: copied again after JetStream lost them, "
            "they are stored after later records on purpose and not counted as out of order."
        )
    if check.kind == "rabbitmq-queue" and check.error is None:
        parity.doubled_ids = check.ids.doubled()
        parity.distinct_ids = check.ids.distinct
        parity.notes.append(_QUEUE_NOTE)
        if check.route.config.msg_id in (MsgIdStrategy.AUTO.value, MsgIdStrategy.CONTENT_HASH.value):
            parity.notes.append(_CONTENT_HASH_NOTE)
    return parity


def _error_text(error: BaseException) -> str:
    return str(error) or type(error).__name__


_BROKER_FAILURES: tuple[type[BaseException], ...] = (BridgeError, *BROKER_ERRORS, NatsError, OSError, TimeoutError)
_SOURCE_FAILURES: tuple[type[BaseException], ...] = (*BROKER_ERRORS, ConnectionError)


def _expected_failure(error: BaseException) -> BaseException:
    """`error` when it is a broker failure to report; anything else (a bug, a cancellation)
    is raised again, because hiding it behind "could not check" would make it harder to fix."""
    if isinstance(error, _BROKER_FAILURES):
        return error
    raise error


async def verify(config: BridgeConfig, *, service: str | None = None) -> VerifyReport:
    """Check every route (of `service`, when given) against the brokers; never raises for a
    broker problem: what could not be checked is an error in the report (exit code 2).

    Client error texts can quote a URL or a SASL exchange, so every secret value of the
    mapping file is replaced by `***` in the report's texts.
    """
    report = await _verify(config, service)
    scrub = Scrubber(config_secrets(config)).scrub
    report.errors = [scrub(text) for text in report.errors]
    report.reverse = [scrub(text) for text in report.reverse]
    for route in report.routes:
        route.error = None if route.error is None else scrub(route.error)
        route.notes = [scrub(text) for text in route.notes]
    return report


async def _verify(config: BridgeConfig, service: str | None) -> VerifyReport:
    report = VerifyReport()
    try:
        checks = build_checks(config, service)
    except BridgeError as error:
        report.errors.append(str(error))
        return report
    urls = ", ".join(redact_url(server.get_secret_value()) for server in config.nats.servers)
    try:
        nats_config = config.nats.model_copy(update={"max_reconnect_attempts": 1})
        nc: NatsClient = await asyncio.wait_for(connect_nats(nats_config), CONNECT_TIMEOUT * 2)
    except (NatsError, OSError, TimeoutError) as error:
        report.errors.append(f"cannot connect to NATS at {urls}: {_error_text(error)}")
        return report
    readers: dict[str, KafkaRouteReader] = {}
    try:
        for check in checks:
            if check.error is None and check.kind == "kafka":
                readers[check.key] = KafkaRouteReader(check, _ranges(config, check))
        prepared = await asyncio.gather(*(reader.prepare() for reader in readers.values()), return_exceptions=True)
        for reader, outcome in zip(readers.values(), prepared, strict=True):
            if isinstance(outcome, BaseException):
                reader.check.error = f"{reader.ranges.where}: {_error_text(_expected_failure(outcome))}"
        js = nc.jetstream(timeout=FETCH_TIMEOUT)
        scans = await scan_all(js, config, checks)
        stream_notes(checks, scans)
        results = await asyncio.gather(
            *(_compare(check, config, readers.get(check.key), nc.max_payload) for check in checks),
            return_exceptions=True,
        )
        for check, result in zip(checks, results, strict=True):
            if isinstance(result, BaseException):
                check.error = _error_text(_expected_failure(result))
                report.routes.append(_parity(check, []))
            else:
                report.routes.append(_parity(check, result))
        try:
            report.reverse = await reverse_lines(js, config, service)
        except (BridgeError, NatsError, TimeoutError) as error:
            report.reverse = [f"reverse routes not read: {_error_text(error)}"]
    finally:
        for reader in readers.values():
            await reader.close()
        with contextlib.suppress(NatsError, OSError, TimeoutError):
            await nc.close()
    return report


def _ranges(config: BridgeConfig, check: RouteCheck) -> RangeRead:
    """The route's source, read by position as verify reads it."""
    return route_broker(config, check.route.service, check.route.config).ranges(purpose="verify", limits=READS)


async def _compare(
    check: RouteCheck, config: BridgeConfig, reader: KafkaRouteReader | None, max_payload: int
) -> list[LaneParity]:
    """The route's lanes, compared with its source (nothing to read for shadow/queue routes)."""
    if check.error is not None or check.kind == "rabbitmq-queue":
        return []
    try:
        if reader is not None:
            return await reader.compare(config.streams, max_payload)
        return [await compare_stream_queue(check, _ranges(config, check), config.streams, max_payload)]
    except _SOURCE_FAILURES as error:
        raise BridgeError(f"source '{check.route.config.source}': {_error_text(error)}") from None


async def verify_and_repair(config: BridgeConfig, *, service: str | None = None) -> tuple[VerifyReport, RepairReport]:
    """Verify; copy again what is missing where the source still holds it; verify again.

    The second report is the one that counts: it says what is still missing after the repair.
    """
    before = await verify(config, service=service)
    repaired = RepairReport()
    if not any(lane.missing for route in before.routes for lane in route.lanes) and not any(
        route.kind == "rabbitmq-queue" for route in before.routes
    ):
        return before, repaired
    routes = [check.route for check in build_checks(config, service)]
    try:
        nc: NatsClient = await asyncio.wait_for(
            connect_nats(config.nats.model_copy(update={"max_reconnect_attempts": 1})), CONNECT_TIMEOUT * 2
        )
    except (NatsError, OSError, TimeoutError) as error:
        before.errors.append(f"repair: cannot connect to NATS: {_error_text(error)}")
        return before, repaired
    try:
        repaired = await repair(config, before, routes, nc)
    except _BROKER_FAILURES as error:
        repaired.notes.append(f"repair stopped: {Scrubber(config_secrets(config)).scrub(_error_text(error))}")
    finally:
        with contextlib.suppress(NatsError, OSError, TimeoutError):
            await nc.close()
    return await verify(config, service=service), repaired


def verify_command(file: Path, service: str | None, as_json: bool, repair_missing: bool = False) -> int:
    """`nats-bridge verify FILE [--service S] [--json] [--repair]`: load, check, print; the exit code.

    0 clean, 1 missing, doubled or out of order, 2 could not check (or the file does not load).
    With --repair, what was missing is copied again first, and the code is the second check's.
    """
    try:
        config = load_config(file)
    except ConfigError as error:
        print_config_errors(error, as_json)
        return EXIT_UNCHECKED
    repaired: RepairReport | None = None
    if repair_missing:
        report, repaired = asyncio.run(verify_and_repair(config, service=service))
    else:
        report = asyncio.run(verify(config, service=service))
    report.file = str(file)
    _print(report, repaired, as_json)
    return report.exit_code


def _print(report: VerifyReport, repaired: RepairReport | None, as_json: bool) -> None:
    if as_json:
        document = report.as_json()
        if repaired is not None:
            document["repair"] = repaired.as_json()
        print_json(document)
        return
    if repaired is not None:
        for lane in repaired.lanes:
            for line in lane.lines():
                typer.echo(line)
        for note in repaired.notes:
            typer.echo(f"note: {note}")
        if not repaired.lanes:
            typer.echo("repair: nothing was missing")
    render(report)
