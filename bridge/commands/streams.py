"""`streams show|plan|apply`: the mapping file's JetStream streams, and making the server match them."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from typer.core import TyperGroup

from bridge.cli_output import EXIT_FINDINGS, EXIT_INVALID, EXIT_OK, print_json
from bridge.commands.common import JsonFlag, MappingFile, load_mapping
from bridge.jetstream.apply import apply_to_server, format_report, plan_from_server
from bridge.jetstream.plan import format_plan
from bridge.jetstream.report import format_states, stream_states

EXIT_PENDING = EXIT_FINDINGS  # `streams plan`: changes to apply


class _StreamsGroup(TyperGroup):
    """`streams FILE` keeps meaning `streams show FILE`, beside `streams plan FILE` and `streams apply FILE`.

    Click parses a group's own arguments before the subcommand name, so a group cannot take
    FILE itself; instead, anything that is not a subcommand name (or --help) gets `show`
    put in front of it. A mapping file literally named `plan` is then written `./plan`.
    """

    # typer.Context is what typer passes; the base class names click's (vendored, private) Context.
    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["show", *args]
        return super().parse_args(ctx, args)


streams_app = typer.Typer(
    cls=_StreamsGroup,
    name="streams",
    help=(
        "The mapping file's JetStream streams. `streams FILE` (= `streams show FILE`) shows what they hold; "
        "`streams plan FILE` shows what apply would create or change; `streams apply FILE` does it."
    ),
    no_args_is_help=True,
    subcommand_metavar="FILE | show FILE | plan FILE | apply FILE",
)


@streams_app.command("show")
def streams_show(
    file: MappingFile,
    wait_for: Annotated[int, typer.Option(help="Wait until the streams hold this many messages in all.")] = 0,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most.")] = 30.0,
    as_json: JsonFlag = False,
) -> None:
    """Show what the mapping file's streams hold: message counts, bytes and the newest message (the default)."""
    config = load_mapping(file, as_json)
    states = asyncio.run(stream_states(config, wait_for=wait_for, seconds=timeout))
    if as_json:
        document = [
            {
                "stream": s.name,
                "exists": s.exists,
                "messages": s.messages,
                "bytes": s.size,
                "last_subject": s.last_subject,
                "last_headers": s.last_headers,
            }
            for s in states
        ]
        print_json(document)
    else:
        typer.echo(format_states(states), nl=False)
    if wait_for and sum(s.messages for s in states) < wait_for:
        raise typer.Exit(EXIT_FINDINGS)


@streams_app.command("plan")
def streams_plan(file: MappingFile, as_json: JsonFlag = False) -> None:
    """Show what `streams apply` would create or change on the server, field by field. Changes nothing.

    Per stream the file names: create; update (field, server value, file value); unchanged; or refused.

    Refused: a change JetStream cannot make in place, such as the storage type; the reason says which.

    Streams the file does not name are never touched and never deleted.

    Exit 0: nothing to do. 1: changes pending. 2: something is refused, or an error.
    """
    config = load_mapping(file, as_json)
    plan = asyncio.run(plan_from_server(config))
    if as_json:
        print_json(plan.as_json())
    else:
        typer.echo(format_plan(plan), nl=False)
    if plan.refused:
        raise typer.Exit(EXIT_INVALID)
    raise typer.Exit(EXIT_PENDING if plan.pending else EXIT_OK)


@streams_app.command("apply")
def streams_apply(
    file: MappingFile,
    partial: Annotated[
        bool, typer.Option("--partial", help="When some streams are refused, still apply the others.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create missing streams and update changed ones so the server matches the file. Never deletes.

    An update sends the server's current config with only the differing fields replaced.

    So settings the file does not have (allow_direct, compression, ...) are kept.

    When any stream is refused (see `streams plan`), nothing is applied, unless --partial.

    Streams are applied in file order; the first server error stops apply.

    Exit 0: the server matches the file. 2: something was refused or failed, or an error.
    """
    config = load_mapping(file, as_json)
    report = asyncio.run(apply_to_server(config, partial=partial))
    if as_json:
        print_json(report.as_json())
    else:
        typer.echo(format_report(report), nl=False)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_INVALID)
