"""`reverse`: switch one reverse route off or on while the bridges run, or remove it with its durable."""

from __future__ import annotations

from typing import Annotated

import typer

from bridge.cli_output import EXIT_FINDINGS, EXIT_OK, print_json, run_command
from bridge.commands.common import JsonFlag, MappingFile, load_mapping
from bridge.config.durations import parse_duration
from bridge.cutover.operator import default_actor
from bridge.cutover.reverse_control import format_switch, switch_reverse
from bridge.cutover.reverse_switch import Switch
from bridge.errors import BridgeError


def reverse_command(
    service: Annotated[str, typer.Argument(help="The service (a key under `services`).", show_default=False)],
    route: Annotated[str, typer.Argument(help="The reverse route (a `reverse:` entry's name).", show_default=False)],
    file: MappingFile,
    to: Annotated[Switch, typer.Option("--to", help="on | off | removed.", show_default=False)],
    reason: Annotated[str, typer.Option("--reason", help="Why, for the record (required).", show_default=False)] = "",
    by: Annotated[str | None, typer.Option(help="Who, for the record; default user@host.")] = None,
    wait: Annotated[str, typer.Option(help="How long to wait for the bridges to stop the route.")] = "30s",
    force: Annotated[
        bool, typer.Option("--force", help="Switch on a route that was removed (its durable starts afresh).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Switch ROUTE of SERVICE off or on in every running bridge, within a second; no restart.

    off: the bridges stop the route after the batch in flight; its durable stays, so `--to on`
    resumes exactly where it stopped. removed: off, then its durable (nats-bridge-reverse-...) is
    deleted once no bridge pulls from it, and what it had not written never reaches the legacy
    broker: for a route whose legacy consumers have all moved to JetStream.

    Exit 0: done, and (off, removed) the bridges were seen to stop. 1: the switch is written, but
    a bridge still pulls from the durable after --wait. 2: an error.
    """
    config = load_mapping(file, as_json)
    if not reason.strip():
        raise typer.BadParameter("say why", param_hint="--reason")
    try:
        seconds = parse_duration(wait).total_seconds()
    except (ValueError, BridgeError) as error:
        raise typer.BadParameter(str(error), param_hint="--wait") from None
    outcome = run_command(
        switch_reverse(config, service, route, to, by=by or default_actor(), reason=reason, wait=seconds, force=force)
    )
    if as_json:
        print_json(outcome.as_json())
    else:
        typer.echo(format_switch(outcome), nl=False)
    raise typer.Exit(EXIT_OK if outcome.stopped else EXIT_FINDINGS)
