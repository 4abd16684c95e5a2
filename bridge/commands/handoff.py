"""`handoff`: a declared consumer takes over exactly where the legacy queue or group it replaces stopped."""

from __future__ import annotations

from typing import Annotated

import typer

from bridge.cli_output import EXIT_FINDINGS, EXIT_INVALID, EXIT_OK, print_json, run_command
from bridge.commands.common import JsonFlag, MappingFile, load_mapping
from bridge.config.durations import parse_duration
from bridge.errors import BridgeError
from bridge.handoff.command import format_handoff, handoff


def handoff_command(
    service: Annotated[str, typer.Argument(help="The service (a key under `services`).", show_default=False)],
    consumer: Annotated[str, typer.Argument(help="The consumer (a `consumers:` entry's name).", show_default=False)],
    file: MappingFile,
    plan: Annotated[bool, typer.Option("--plan", help="Show what it would do; change nothing.")] = False,
    wait: Annotated[
        str | None, typer.Option(help="Wait this long (e.g. 5m) for the bridge to store up to the legacy position.")
    ] = None,
    from_earliest_available: Annotated[
        bool,
        typer.Option(
            "--from-earliest-available",
            help="Where the legacy position is older than the stream keeps (or a partition was never committed), "
            "start at the first record the stream keeps.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Make CONSUMER's durable start exactly where the legacy consumer it `replaces` stopped.

    Kafka group: per partition, the group's committed offset -> the stream sequence of that record;
    the durable starts at the lowest, and the records below each partition's own offset are acked.
    RabbitMQ queue: what is still in the queue is unprocessed; the durable starts at its head's copy.

    Refused, with what to do: members still in the group or consumers on the queue; the bridge not
    yet stored up to the legacy position (--wait); a position older than the stream keeps
    (--from-earliest-available); a durable already consumed; in drain, no reverse route feeding
    the legacy consumer. In drain, that reverse route is switched off while the handoff reads,
    then on again.

    Afterwards the durable's pending count is shown beside the legacy lag: they must match.
    Exit 0: done (or the plan is feasible). 1: done, and the counts differ. 2: refused, or an error.
    """
    config = load_mapping(file, as_json)
    try:
        seconds = parse_duration(wait).total_seconds() if wait else 0.0
    except (ValueError, BridgeError) as error:
        raise typer.BadParameter(str(error), param_hint="--wait") from None
    done = run_command(
        handoff(
            config, service, consumer, plan_only=plan, from_earliest_available=from_earliest_available, wait=seconds
        )
    )
    if as_json:
        print_json(done.as_json())
    else:
        typer.echo(format_handoff(done), nl=False)
    if done.plan.refused:
        raise typer.Exit(EXIT_INVALID)
    if done.result is not None and not done.result.matches:
        raise typer.Exit(EXIT_FINDINGS)
    raise typer.Exit(EXIT_OK)
