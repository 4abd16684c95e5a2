"""The `nats-bridge` command line: typer commands only, each a thin call into the package."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from bridge import __version__
from bridge.config import BridgeConfig, load_config
from bridge.config.durations import parse_duration
from bridge.errors import BridgeError, ConfigError
from bridge.explain import explain_amqp, explain_kafka, format_explanation
from bridge.jetstream.report import format_states, stream_states
from bridge.logs import LogFormat, config_secrets, configure_logging
from bridge.operations.http import DEFAULT_ADDRESS, HttpAddress
from bridge.runner import RunSettings, run_bridge
from bridge.traffic import produce_all

EXIT_INVALID = 2

app = typer.Typer(
    name="nats-bridge",
    help="Move RabbitMQ and Kafka traffic into NATS JetStream, effectively once.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

MappingFile = Annotated[Path, typer.Argument(help="Mapping file (YAML).", show_default=False)]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


def _load(path: Path, as_json: bool) -> BridgeConfig:
    try:
        return load_config(path)
    except ConfigError as error:
        _fail_config(error, as_json)


def _fail_config(error: ConfigError, as_json: bool) -> NoReturn:
    if as_json:
        issues = [
            {"file": i.file, "line": i.line, "column": i.column, "path": i.path, "message": i.message, "hint": i.hint}
            for i in error.issues
        ]
        typer.echo(json.dumps({"valid": False, "errors": issues}, indent=2))
    else:
        for issue in error.issues:
            typer.echo(f"error: {issue}", err=True)
        count = len(error.issues)
        typer.echo(f"{count} error{'s' if count != 1 else ''} in {error.issues[0].file}", err=True)
    raise typer.Exit(EXIT_INVALID)


@app.command()
def validate(file: MappingFile, as_json: JsonFlag = False) -> None:
    """Check a mapping file offline: exit 0 when valid, 2 with every error (file:line) when not."""
    config = _load(file, as_json)
    routes = config.routes()
    if as_json:
        summary = {
            "valid": True,
            "file": str(file),
            "streams": len(config.streams),
            "sources": len(config.sources),
            "services": len(config.services),
            "routes": len(routes),
        }
        typer.echo(json.dumps(summary, indent=2))
    else:
        counts = [
            _plural(len(config.streams), "stream"),
            _plural(len(config.sources), "source"),
            _plural(len(config.services), "service"),
            _plural(len(routes), "route"),
        ]
        typer.echo(f"{file}: valid — {', '.join(counts)}")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _parse_headers(pairs: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator or not name:
            raise typer.BadParameter(f"'{pair}' is not NAME=VALUE", param_hint="--header")
        headers[name] = value
    return headers


@app.command()
def explain(
    file: MappingFile,
    exchange: Annotated[str | None, typer.Option(help="RabbitMQ exchange the message is published to.")] = None,
    routing_key: Annotated[str | None, typer.Option(help="RabbitMQ routing key ('' is allowed).")] = None,
    queue: Annotated[str | None, typer.Option(help="RabbitMQ queue the message sits in.")] = None,
    topic: Annotated[str | None, typer.Option(help="Kafka topic.")] = None,
    key: Annotated[str | None, typer.Option(help="Kafka record key.")] = None,
    partition: Annotated[int, typer.Option(help="Kafka partition.")] = 0,
    offset: Annotated[int, typer.Option(help="Kafka offset.")] = 0,
    header: Annotated[list[str] | None, typer.Option(help="Message header NAME=VALUE; repeatable.")] = None,
    message_id: Annotated[str | None, typer.Option(help="AMQP message_id property.")] = None,
    body: Annotated[str, typer.Option(help="Message body (text).")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Show which routes take a message and the subject, Nats-Msg-Id and headers they would produce.

    Works offline. Exit 0 when some route takes the message, 1 when none does.
    """
    headers = _parse_headers(header or [])
    amqp_given = exchange is not None or routing_key is not None or queue is not None
    if amqp_given == (topic is not None):
        raise typer.BadParameter("give either --exchange/--queue with --routing-key, or --topic")
    config = _load(file, as_json)
    if topic is not None:
        explanation = explain_kafka(
            config,
            topic=topic,
            key=None if key is None else key.encode("utf-8"),
            partition=partition,
            offset=offset,
            headers=headers,
            body=body.encode("utf-8"),
        )
    else:
        properties = {"message_id": message_id} if message_id else {}
        explanation = explain_amqp(
            config,
            exchange=exchange,
            routing_key=routing_key or "",
            headers=headers,
            queue=queue,
            body=body.encode("utf-8"),
            properties=properties,
        )
    if as_json:
        typer.echo(json.dumps(explanation.as_json(), indent=2))
    else:
        typer.echo(format_explanation(explanation), nl=False)
    raise typer.Exit(0 if explanation.matches else 1)


@app.command()
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
) -> None:
    """Run every route in the mapping file until SIGINT/SIGTERM, then drain, settle and exit 0."""
    config = _load(file, as_json=False)
    configure_logging(log_level, log_format, secrets=config_secrets(config))
    try:
        stall = parse_duration(stall_after).total_seconds()
        address = None if http.lower() == "off" else HttpAddress.parse(http)
    except (ValueError, BridgeError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    run_bridge(config, RunSettings(http=address, stall_after=stall))


@app.command()
def traffic(
    file: MappingFile,
    count: Annotated[int, typer.Option(help="Records to send to each topic.")] = 100,
) -> None:
    """Send sample records to every Kafka topic the mapping file reads (a demo, not a load test)."""
    config = _load(file, as_json=False)
    targets = asyncio.run(produce_all(config, count))
    for target in targets:
        typer.echo(f"sent {count} records to Kafka topic '{target.topic}' (source '{target.source}')")
    if not targets:
        typer.echo("no route of this file reads a named Kafka topic; nothing sent")


@app.command()
def streams(
    file: MappingFile,
    wait_for: Annotated[int, typer.Option(help="Wait until the streams hold this many messages in all.")] = 0,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most.")] = 30.0,
    as_json: JsonFlag = False,
) -> None:
    """Show what the mapping file's streams hold: message counts, bytes and the newest message."""
    config = _load(file, as_json)
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
        typer.echo(json.dumps(document, indent=2))
    else:
        typer.echo(format_states(states), nl=False)
    if wait_for and sum(s.messages for s in states) < wait_for:
        raise typer.Exit(1)


@app.command()
def schema() -> None:
    """Print the mapping file's JSON Schema (for editors: yaml-language-server and friends)."""
    document = BridgeConfig.model_json_schema(by_alias=True)
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "nats-bridge mapping file"
    typer.echo(json.dumps(document, indent=2))


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    """Console-script entry point: no traceback ever reaches a user for an error we understand."""
    try:
        app()
    except BridgeError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(EXIT_INVALID)
