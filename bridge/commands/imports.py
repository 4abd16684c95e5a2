"""`nats-bridge import rabbitmq|kafka`: write a mapping file from what a legacy broker knows.

Every generated file is validated with the bridge's own loader before it is written, so an
importer bug shows up here and not as a broken file handed to a person. A definitions export
is read within bridge.config.limits' bounds (size, nesting, plain JSON) and checked by
`check_definitions` before anything is imported: a malformed one is errors naming its keys.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from bridge.brokers.http import HttpLookError
from bridge.brokers.kafka.groups import GroupPosition
from bridge.brokers.rabbitmq.management import consumer_prefetch
from bridge.cli_output import EXIT_INVALID, fail, print_error
from bridge.config import load_config_text
from bridge.config.limits import MAX_DEFINITIONS_BYTES, InputLimitError, loads_json, read_bounded, size_limit
from bridge.errors import ConfigError, NothingToCopyError
from bridge.importers.definitions_check import check_definitions
from bridge.importers.kafka import import_topics, read_groups, read_topics
from bridge.importers.rabbitmq import DEFAULT_PREFIX, import_definitions
from bridge.importers.rabbitmq.prefetch import with_consumer_prefetch
from bridge.importers.render import MappingDocument, render
from bridge.routing import is_valid_subject_filter

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
            print_error(f"generated mapping is invalid (a bug in the importer): {issue}")
        raise typer.Exit(EXIT_INVALID) from None
    if output is None:
        typer.echo(text, nl=False)
        return
    if output.exists() and not force:
        fail(f"{output} exists; use --force to overwrite it")
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as error:  # a missing folder, a full disk, no permission
        fail(f"cannot write {output}: {error.strerror or error}")
    typer.echo(f"wrote {output}", err=True)


def _read_definitions(definitions: Path) -> Any:
    """The export as parsed JSON, within the input bounds; exit 2 naming the file and the problem."""
    try:
        limit = size_limit(MAX_DEFINITIONS_BYTES)
        if str(definitions) == "-":
            raw = read_bounded(sys.stdin.buffer, limit, "the input")
        else:
            with definitions.open("rb") as stream:
                raw = read_bounded(stream, limit, "the file")
        return loads_json(raw.decode("utf-8"))
    except OSError as error:
        problem = f"cannot read it: {error.strerror or error}"
    except UnicodeDecodeError:
        problem = "not UTF-8 text"
    except (InputLimitError, ValueError) as error:
        problem = str(error)
    print_error(f"{definitions}: {problem}")
    raise typer.Exit(EXIT_INVALID)


def load_definitions(definitions: Path) -> Mapping[str, Any]:
    """A definitions export read within the input bounds and checked by `check_definitions`: what
    `import rabbitmq` and `explain --definitions` both read, so a file one accepts the other does.
    A bad one exits 2, each problem on a line naming the file, never a traceback."""
    document = _read_definitions(definitions)
    problems = check_definitions(document)
    if problems:
        for problem in problems:
            print_error(f"{definitions}: {problem}")
        typer.echo(f"{definitions} is not a definitions export the importer can read", err=True)
        raise typer.Exit(EXIT_INVALID)
    assert isinstance(document, Mapping)  # check_definitions refuses anything else
    return document


@import_app.command("rabbitmq")
def import_rabbitmq(
    definitions: Annotated[
        Path, typer.Argument(help="Definitions JSON (management UI export, rabbitmqctl export_definitions); - = stdin.")
    ],
    vhost: Annotated[
        str, typer.Option(help="Vhost of items that name none (a per-vhost export, /api/definitions/<vhost>).")
    ] = "/",
    prefix: Annotated[str, typer.Option(help="First subject token of the generated streams.")] = DEFAULT_PREFIX,
    api: Annotated[
        str | None,
        typer.Option(
            help="Management API URL (http://user:pass@host:15672/api): size each consumer's max_ack_pending "
            "from the prefetch of the queue's consumers now. The login is never written to the file."
        ),
    ] = None,
    output: OutputOption = None,
    force: ForceOption = False,
) -> None:
    """Shadow every exchange with bound queues: a service, a stream and routes bound like the legacy
    queues, and a JetStream consumer per queue."""
    if not is_valid_subject_filter(prefix) or "*" in prefix or ">" in prefix:
        raise typer.BadParameter(f"'{prefix}' is not a literal NATS subject (tokens separated by '.')")
    document = load_definitions(definitions)
    unread = None
    if api is not None:
        try:
            document = with_consumer_prefetch(document, asyncio.run(consumer_prefetch(api)), vhost)
        except HttpLookError as error:  # e.g. a node with management stats disabled: HTTP 400
            # The file gets no detail: the error text names the API's user.
            unread = "the consumers' prefetch could not be read from the management API"
            typer.echo(f"warning: {unread} ({error}); max_ack_pending is left to the queues' arguments", err=True)
    try:
        mapping = import_definitions(document, prefix=prefix, vhost=vhost)
    except NothingToCopyError as error:
        print_error(f"{definitions}: {error.summary}; nothing written")
        for reason in error.reasons:
            typer.echo(f"  - {reason}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    if unread is not None:
        mapping.header.append(f"max_ack_pending: {unread}.")
    _emit(mapping, output, force)


@import_app.command("kafka")
def import_kafka(
    bootstrap: Annotated[str, typer.Option(help="host:port of the Kafka cluster.")],
    topics: Annotated[
        str | None, typer.Option(help="Regex a topic's WHOLE name must match; default: every non-internal topic.")
    ] = None,
    output: OutputOption = None,
    force: ForceOption = False,
) -> None:
    """A stream and a route per topic (topics a consumer group reads together share them), with
    retention.ms / retention.bytes / cleanup.policy translated, and a consumer per legacy group."""
    try:
        found = asyncio.run(read_topics(bootstrap, topics))
    except Exception as error:  # aiokafka raises many types for an unreachable or refusing cluster
        fail(f"cannot read topics from {bootstrap}: {error!r}")
    if not found:
        fail(f"no topic{' matches ' + topics if topics else ''} on {bootstrap}")
    groups: list[GroupPosition] = []
    unread = None
    try:
        groups = asyncio.run(read_groups(bootstrap, [topic.name for topic in found]))
    except Exception as error:  # as above; the topics are still worth writing (an ACL may hide groups)
        unread = f"cannot read consumer groups from {bootstrap}: {error!r}"
        typer.echo(f"warning: {unread}; no consumers written", err=True)
    document = import_topics(found, bootstrap, groups)
    if unread is not None:
        document.header.append(f"No consumers: {unread}.")
    _emit(document, output, force)
