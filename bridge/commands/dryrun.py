"""`dry-run`: what running the file would do, without publishing, acking, committing or declaring."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from bridge.cli_output import print_json
from bridge.commands.common import JsonFlag, MappingFile, load_mapping
from bridge.config.durations import parse_duration
from bridge.decide import DEFAULT_MAX_PAYLOAD
from bridge.dryrun.connect import dry_run as run_dry_run
from bridge.dryrun.output import print_report as print_dry_run
from bridge.errors import BridgeError


def dry_run(
    file: MappingFile,
    connect: Annotated[bool, typer.Option("--connect", help="Also ask NATS and every source (read-only).")] = False,
    outage_budget: Annotated[
        str, typer.Option(help="Longest outage a route must survive; streams' duplicate_window must cover it.")
    ] = "2m",
    replay_input: Annotated[
        Path | None,
        typer.Option(
            "--input",
            help="JSONL of recorded Kafka/AMQP messages to replay through the mapping (offline; see README).",
        ),
    ] = None,
    sample: Annotated[
        int | None,
        typer.Option(
            "--sample",
            min=1,
            help="Read up to N recent messages per topic, exchange or stream queue, consuming and committing "
            "nothing, and show what each would become.",
        ),
    ] = None,
    duration: Annotated[
        str, typer.Option(help="With --sample: how long to listen on exchanges (and at most to read).")
    ] = "10s",
    max_payload: Annotated[
        int,
        typer.Option(min=1, help="NATS max_payload in bytes for --input/--sample; larger messages are dead-lettered."),
    ] = DEFAULT_MAX_PAYLOAD,
    as_json: JsonFlag = False,
) -> None:
    """Check what running the file would do, without publishing, acking, committing or declaring anything.

    With --input, also show what each recorded message would become, or why no route takes it;
    with --sample, the same for messages read from the brokers now (Kafka without a consumer
    group, exchanges through a temporary exclusive queue, stream queues from an offset).

    Exit 0: clean. 1: warnings only. 2: errors (or the file is invalid).
    """
    config = load_mapping(file, as_json)
    try:
        budget = parse_duration(outage_budget)
    except (ValueError, BridgeError) as error:
        raise typer.BadParameter(str(error), param_hint="--outage-budget") from None
    try:
        listen = parse_duration(duration).total_seconds()
    except (ValueError, BridgeError) as error:
        raise typer.BadParameter(str(error), param_hint="--duration") from None
    if sample is not None and replay_input is not None:
        raise typer.BadParameter("give --input or --sample, not both", param_hint="--sample")
    report = asyncio.run(
        run_dry_run(
            config,
            str(file),
            connect=connect,
            outage_budget=budget,
            replay_input=replay_input,
            max_payload=max_payload,
            sample=sample,
            sample_duration=listen,
        )
    )
    if as_json:
        print_json(report.as_json())
    else:
        print_dry_run(report)
    raise typer.Exit(report.exit_code)
