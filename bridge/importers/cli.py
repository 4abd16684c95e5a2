"""`nats-bridge import rabbitmq|kafka`: write a mapping file from what a legacy broker knows.

Every generated file is validated with the bridge's own loader before it is written, so an
importer bug shows up here and not as a broken file handed to a person.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from bridge.config import load_config_text
from bridge.errors import ConfigError
from bridge.importers.kafka import import_topics, read_topics
from bridge.importers.rabbitmq import DEFAULT_PREFIX, import_definitions
from bridge.importers.render import MappingDocument, render

EXIT_INVALID = 2

import_app = typer.Typer(
    name="import",
    help="Write a mapping file from a RabbitMQ definitions export or a Kafka cluster's topics.",
    no_args_is_help=True,
)

OutputOption = Annotated[Path | None, typer.Option("--output", "-o", help="Write the mapping here instead of stdout.")]
ForceOption = Annotated[bool, typer.Option("--force", help="Overwrite --output if it exists.")]


def _emit(document: MappingDocument, output: Path | None, force: bool) -> None:
    text = render(document)
    try:
        # No environment: the file's ${VAR:-default} references must stand on their defaults.
        load_config_text(text, str(output or "<generated>"), {})
    except ConfigError as error:
        for issue in error.issues:
            typer.echo(f"error: generated mapping is invalid (a bug in the importer): {issue}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    if output is None:
        typer.echo(text, nl=False)
        return
    if output.exists() and not force:
        typer.echo(f"error: {output} exists; use --force to overwrite it", err=True)
        raise typer.Exit(EXIT_INVALID)
    output.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {output}", err=True)


@import_app.command("rabbitmq")
def import_rabbitmq(
    definitions: Annotated[
        Path, typer.Argument(help="Definitions JSON (management UI export, rabbitmqctl export_definitions); - = stdin.")
    ],
    vhost: Annotated[
        str, typer.Option(help="Vhost of items that name none (a per-vhost export, /api/definitions/<vhost>).")
    ] = "/",
    prefix: Annotated[str, typer.Option(help="First subject token of the generated streams.")] = DEFAULT_PREFIX,
    output: OutputOption = None,
    force: ForceOption = False,
) -> None:
    """Shadow every exchange with bound queues: a service, a stream and routes bound like the legacy queues."""
    try:
        text = typer.get_text_stream("stdin").read() if str(definitions) == "-" else definitions.read_text("utf-8")
        document: Any = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        typer.echo(f"error: cannot read definitions from {definitions}: {error}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    if not isinstance(document, dict):
        typer.echo(f"error: {definitions} is not a definitions export (a JSON object)", err=True)
        raise typer.Exit(EXIT_INVALID)
    _emit(import_definitions(document, prefix=prefix, vhost=vhost), output, force)


@import_app.command("kafka")
def import_kafka(
    bootstrap: Annotated[str, typer.Option(help="host:port of the Kafka cluster.")],
    topics: Annotated[
        str | None, typer.Option(help="Regex a topic's WHOLE name must match; default: every non-internal topic.")
    ] = None,
    output: OutputOption = None,
    force: ForceOption = False,
) -> None:
    """A stream and a route per topic, with retention.ms / retention.bytes / cleanup.policy translated."""
    try:
        found = asyncio.run(read_topics(bootstrap, topics))
    except Exception as error:  # aiokafka raises many types for an unreachable or refusing cluster
        typer.echo(f"error: cannot read topics from {bootstrap}: {error!r}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    if not found:
        typer.echo(f"error: no topic{' matches ' + topics if topics else ''} on {bootstrap}", err=True)
        raise typer.Exit(EXIT_INVALID)
    _emit(import_topics(found, bootstrap), output, force)
