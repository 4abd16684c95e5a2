"""`cutover` and `status`: moving a service between cut-over phases, and where each service stands."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from bridge.cli_output import run_command
from bridge.commands.common import JsonFlag, MappingFile, load_mapping
from bridge.config.durations import parse_duration
from bridge.config.services import Phase
from bridge.cutover.operator import change_phase, default_actor, follow_phase, read_status
from bridge.cutover.status_output import print_status, status_json
from bridge.errors import BridgeError


def cutover(
    service: Annotated[str, typer.Argument(help="The service (a key under `services`).", show_default=False)],
    file: MappingFile,
    to: Annotated[
        Phase | None,
        typer.Option(
            "--to", help="shadow | drain | retired; without it, --wait follows the current phase.", show_default=False
        ),
    ] = None,
    reason: Annotated[
        str, typer.Option("--reason", help="Why, for the record (required with --to).", show_default=False)
    ] = "",
    by: Annotated[str | None, typer.Option(help="Who, for the record; default user@host.")] = None,
    quiet: Annotated[
        str, typer.Option(help="With --to drain: how long the legacy side must stay empty to count as drained.")
    ] = "30s",
    delete_offsets: Annotated[
        bool, typer.Option("--delete-offsets", help="With --to retired: also delete the bridge's Kafka groups.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Retire a service not reported drained, or whose declared consumers were not handed off."
        ),
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Show the remaining backlog until drained (or cleaned up, when retiring).")
    ] = False,
    timeout: Annotated[str, typer.Option(help="With --wait: give up after this long (exit 1).")] = "1h",
) -> None:
    """Move SERVICE to another cut-over phase; running bridges follow within seconds.

    shadow -> drain (producers now publish to NATS; the bridge copies what is left and reports
    the service drained once its legacy side is empty and quiet); drain -> shadow (back out);
    drain -> retired (the bridge stops the routes and removes its shadow queues, and with
    --delete-offsets its consumer groups). Who, when and why are kept in NATS KV.

    Without --to, --wait follows the phase the service is in (until drained, or cleaned up):
    move to drain, deploy the producers, then wait.
    """
    config = load_mapping(file, as_json=False)
    if service not in config.services:
        known = ", ".join(sorted(config.services))
        raise typer.BadParameter(f"no service '{service}' in {file} (known: {known})", param_hint="SERVICE")
    try:
        quiet_for = parse_duration(quiet).total_seconds()
        limit = parse_duration(timeout).total_seconds()
    except (ValueError, BridgeError) as error:
        raise typer.BadParameter(str(error)) from None
    if to is None:
        if not wait:
            raise typer.BadParameter("give --to PHASE to change the phase, or --wait to follow the current one")
        code, _ = run_command(follow_phase(config, service, wait_limit=limit, console=Console()))
        raise typer.Exit(code)
    if not reason.strip():
        raise typer.BadParameter("say why", param_hint="--reason")
    code, _ = run_command(
        change_phase(
            config,
            service,
            to,
            by=by or default_actor(),
            reason=reason,
            quiet_for=quiet_for if to is Phase.DRAIN else None,
            delete_offsets=delete_offsets,
            force=force,
            wait=wait,
            wait_limit=limit,
            console=Console(),
        )
    )
    raise typer.Exit(code)


def status(
    file: MappingFile,
    service: Annotated[str | None, typer.Option(help="Only this service.")] = None,
    interval: Annotated[str, typer.Option(help="Time between the two looks that give the rates.")] = "2s",
    as_json: JsonFlag = False,
) -> None:
    """Each service's phase and, per route, the source backlog, its stream, rates, dead letters,
    and whether it is safe to advance. Read from the brokers and NATS, not from a bridge."""
    config = load_mapping(file, as_json)
    if service is not None and service not in config.services:
        raise typer.BadParameter(f"no service '{service}' in {file}", param_hint="--service")
    try:
        seconds = parse_duration(interval).total_seconds()
    except (ValueError, BridgeError) as error:
        raise typer.BadParameter(str(error), param_hint="--interval") from None
    report = run_command(read_status(config, service, seconds))
    if as_json:
        typer.echo(status_json(report))
    else:
        print_status(report, Console())
