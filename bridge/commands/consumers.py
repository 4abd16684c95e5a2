"""`consumers plan|apply`: the mapping file's JetStream durable consumers, and making the server match them."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from bridge.cli_output import EXIT_FINDINGS, EXIT_INVALID, EXIT_OK, print_json
from bridge.commands.common import JsonFlag, MappingFile, load_mapping
from bridge.jetstream.consumer_apply import (
    apply_consumers_to_server,
    consumers_plan_from_server,
    format_consumers_report,
)
from bridge.jetstream.consumer_plan import format_consumers_plan

EXIT_PENDING = EXIT_FINDINGS  # `consumers plan`: changes to apply

consumers_app = typer.Typer(
    name="consumers",
    help=(
        "The mapping file's JetStream durable consumers (each service's `consumers:`). "
        "`consumers plan FILE` shows what apply would create or change; `consumers apply FILE` does it."
    ),
    no_args_is_help=True,
)


@consumers_app.command("plan")
def consumers_plan(file: MappingFile, as_json: JsonFlag = False) -> None:
    """Show what `consumers apply` would create or change on the server, field by field. Changes nothing.

    Per consumer the file names: create; update (field, server value, file value); unchanged; or refused.

    Refused: a change JetStream cannot make to an existing consumer (deliver policy, start sequence or
    time, ack policy, pull to push or back), or a stream that does not exist yet; the reason says which.

    Consumers the file does not name are never touched and never deleted.

    Exit 0: nothing to do. 1: changes pending. 2: something is refused, or an error.
    """
    config = load_mapping(file, as_json)
    plan = asyncio.run(consumers_plan_from_server(config))
    if as_json:
        print_json(plan.as_json())
    else:
        typer.echo(format_consumers_plan(plan), nl=False)
    if plan.refused:
        raise typer.Exit(EXIT_INVALID)
    raise typer.Exit(EXIT_PENDING if plan.pending else EXIT_OK)


@consumers_app.command("apply")
def consumers_apply(
    file: MappingFile,
    partial: Annotated[
        bool, typer.Option("--partial", help="When some consumers are refused, still apply the others.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create missing consumers and update changed ones so the server matches the file. Never deletes.

    An update sends the server's current config with only the differing fields replaced.

    When any consumer is refused (see `consumers plan`), nothing is applied, unless --partial.

    Consumers are applied in file order; the first server error stops apply.

    Exit 0: the server matches the file. 2: something was refused or failed, or an error.
    """
    config = load_mapping(file, as_json)
    report = asyncio.run(apply_consumers_to_server(config, partial=partial))
    if as_json:
        print_json(report.as_json())
    else:
        typer.echo(format_consumers_report(report), nl=False)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_INVALID)
