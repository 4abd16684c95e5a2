"""`run` and `traffic`: the bridge itself, and sample records for a demo."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from bridge.cli_output import EXIT_FINDINGS, fail
from bridge.commands.common import MappingFile, load_mapping
from bridge.config.durations import parse_duration
from bridge.errors import BridgeError, JetStreamLostWritesError, NatsConnectionLostError
from bridge.logs import LogFormat, config_secrets, configure_logging
from bridge.operations.http import DEFAULT_ADDRESS, HttpAddress, http_token
from bridge.process import run_bridge
from bridge.runner import RunSettings
from bridge.traffic import produce_all
from bridge.workers.checks import check_workers
from bridge.workers.child import follow_supervisor, port_announcer, worker_index
from bridge.workers.supervisor import SupervisorSettings, run_supervisor, worker_argv

log = logging.getLogger(__name__)

EXIT_NATS_LOST = EXIT_FINDINGS  # `run`: the NATS client closed for good; a supervisor should start it again


def run(
    file: MappingFile,
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error")] = "info",
    log_format: Annotated[
        LogFormat, typer.Option(help="human: one readable line per event; json: one JSON object per line.")
    ] = LogFormat.HUMAN,
    http: Annotated[
        str,
        typer.Option(
            envvar="NATS_BRIDGE_HTTP",
            help="HOST:PORT for /metrics /healthz /readyz /status; 'off' serves nothing. Port 0 picks a free one.",
        ),
    ] = DEFAULT_ADDRESS,
    stall_after: Annotated[
        str, typer.Option(help="A route with work and no progress for this long is stalled (/readyz fails).")
    ] = "60s",
    http_token_file: Annotated[
        Path | None,
        typer.Option(
            envvar="NATS_BRIDGE_HTTP_TOKEN_FILE",
            help="A file holding a bearer token that /status and /metrics then require "
            "(also NATS_BRIDGE_HTTP_TOKEN). /healthz and /readyz stay open for probes.",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Bridge processes to run (one core each), under one supervisor that restarts a worker "
            "that dies and serves one --http endpoint for all. 1: this process is the bridge.",
        ),
    ] = 1,
) -> None:
    """Run every route in the mapping file until SIGINT/SIGTERM, then drain, settle and exit 0.

    Exits 1 when the NATS connection closes for good (a revoked login, a server -ERR): what
    was stored is settled and the log says why; a supervisor should start the bridge again.
    With --workers N (N >= 2) it supervises N such processes and exits 0 when all stopped cleanly.
    """
    config = load_mapping(file, as_json=False)
    try:
        stall = parse_duration(stall_after).total_seconds()
        address = None if http.lower() == "off" else HttpAddress.parse(http)
        token = http_token(http_token_file, os.environ)
    except (ValueError, BridgeError) as error:
        fail(str(error))
    secrets = config_secrets(config) + ([token] if token else [])
    if workers > 1:
        checks = check_workers(config, workers)
        if checks.errors:
            fail("; ".join(checks.errors))
        configure_logging(log_level, log_format, secrets=secrets)
        for warning in checks.warnings:
            log.warning("%s", warning)
        argv = worker_argv(
            file,
            log_level=log_level,
            log_format=log_format,
            stall_after=stall_after,
            http_token_file=http_token_file,
            serve_http=address is not None,
        )
        raise typer.Exit(run_supervisor(SupervisorSettings(workers, argv, address, token, tuple(secrets))))
    follow_supervisor(os.environ)
    configure_logging(log_level, log_format, secrets=secrets, worker=worker_index(os.environ))
    settings = RunSettings(http=address, stall_after=stall, http_token=token, http_bound=port_announcer(os.environ))
    try:
        run_bridge(config, settings)
    except (NatsConnectionLostError, JetStreamLostWritesError):
        raise typer.Exit(EXIT_NATS_LOST) from None  # the bridge logged why, as it happened


def traffic(
    file: MappingFile,
    count: Annotated[int, typer.Option(help="Records to send to each topic.")] = 100,
) -> None:
    """Send sample records to every Kafka topic the mapping file reads (a demo, not a load test)."""
    config = load_mapping(file, as_json=False)
    targets = asyncio.run(produce_all(config, count))
    for target in targets:
        typer.echo(f"sent {count} records to Kafka topic '{target.topic}' (source '{target.source}')")
    if not targets:
        typer.echo("no route of this file reads a named Kafka topic; nothing sent")
