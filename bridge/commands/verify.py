"""`verify`: the parity report between the sources and JetStream (bridge.verify does the work)."""

from __future__ import annotations

from typing import Annotated

import typer

from bridge.commands.common import JsonFlag, MappingFile
from bridge.verify import verify_command


def verify_cmd(
    file: MappingFile,
    service: Annotated[str | None, typer.Option("--service", help="Check only this service's routes.")] = None,
    as_json: JsonFlag = False,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Copy again what is missing, from Kafka retention or the stream queue, with the same "
            "Nats-Msg-Ids; then check again.",
        ),
    ] = False,
) -> None:
    """Parity report: every Kafka / stream-queue offset in the checked range stored exactly once
    and in order, no Nats-Msg-Id stored twice (queue routes). Read-only unless --repair: joins
    no group, commits nothing.

    Exit 0: clean. 1: something missing, doubled or out of order. 2: something could not be checked.
    """
    raise typer.Exit(verify_command(file, service, as_json, repair))
