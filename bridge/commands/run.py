"""`run` and `traffic`: the bridge itself, and sample records for a demo."""

from __future__ import annotations

import asyncio
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
) -> None:
    """Run every route in the mapping file until SIGINT/SIGTERM, then drain, settle and exit 0.

    Exits 1 when the NATS connection closes for good (a revoked login, a server -ERR): what
    was stored is settled and the log says why; a supervisor should start the bridge again.
    """
    config = load_mapping(file, as_json=False)
    try:
        stall = parse_duration(stall_after).total_seconds()
        address = None if http.lower() == "off" else HttpAddress.parse(http)
        token = http_token(http_token_file, os.environ)
    except (ValueError, BridgeError) as error:
        fail(str(error))
    secrets = config_secrets(config) + ([token] if token else [])
    configure_logging(log_level, log_format, secrets=secrets)
    try:
        run_bridge(config, RunSettings(http=address, stall_after=stall, http_token=token))
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
