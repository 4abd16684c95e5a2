"""The `nats-bridge` command line: typer commands only, each a thin call into the package."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from typer.core import TyperGroup

from bridge import __version__
from bridge.cli_output import EXIT_FINDINGS, EXIT_INVALID, EXIT_OK, fail, fail_config, print_error, print_json
from bridge.config import BridgeConfig, load_config
from bridge.config.durations import parse_duration
from bridge.config.services import Phase
from bridge.cutover.cli import change_phase, default_actor, print_status, read_status, run_command, status_json
from bridge.decide import DEFAULT_MAX_PAYLOAD
from bridge.dryrun.connect import dry_run as run_dry_run
from bridge.dryrun.output import print_report as print_dry_run
from bridge.errors import BridgeError, ConfigError, JetStreamLostWritesError, NatsConnectionLostError
from bridge.explain import Definitions, explain_amqp, explain_kafka, format_explanation
from bridge.importers.cli import import_app, load_definitions
from bridge.importers.topology import Topology
from bridge.jetstream.plan import apply_to_server, format_plan, format_report, plan_from_server
from bridge.jetstream.report import format_states, stream_states
from bridge.logs import LogFormat, config_secrets, configure_logging
from bridge.operations.http import DEFAULT_ADDRESS, HttpAddress, http_token
from bridge.runner import RunSettings, run_bridge
from bridge.traffic import produce_all
from bridge.verify import verify_command

EXIT_NATS_LOST = EXIT_FINDINGS  # `run`: the NATS client closed for good; a supervisor should start it again
EXIT_PENDING = EXIT_FINDINGS  # `streams plan`: changes to apply

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
        fail_config(error, as_json)


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
        print_json(summary)
    else:
        counts = [
            _plural(len(config.streams), "stream"),
            _plural(len(config.sources), "source"),
            _plural(len(config.services), "service"),
            _plural(len(routes), "route"),
        ]
        typer.echo(f"{file}: valid — {', '.join(counts)}")


@app.command("dry-run")
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
    config = _load(file, as_json)
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
    definitions: Annotated[
        Path | None,
        typer.Option(
            help="RabbitMQ definitions export (as for `import rabbitmq`): also show where RabbitMQ routes "
            "the message (exchange-to-exchange bindings, alternate and hash exchanges) and where the mapping "
            "disagrees. With --exchange."
        ),
    ] = None,
    vhost: Annotated[
        str | None,
        typer.Option(
            help="With --definitions: the vhost the message is published in, and of export items naming none "
            "(default /)."
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show which routes take a message and the subject, Nats-Msg-Id and headers they would produce.

    Works offline. Exit 0 when some route takes the message, 1 when none does.
    """
    headers = _parse_headers(header or [])
    amqp_given = exchange is not None or routing_key is not None or queue is not None
    if amqp_given == (topic is not None):
        raise typer.BadParameter("give either --exchange/--queue with --routing-key, or --topic")
    if definitions is not None and exchange is None:
        raise typer.BadParameter("--definitions routes a message published to an exchange: give --exchange")
    if vhost is not None and definitions is None:
        raise typer.BadParameter("--vhost is the vhost of --definitions: give the export too")
    config = _load(file, as_json)
    legacy = None
    if definitions is not None:
        vhost = vhost or "/"
        legacy = Definitions(Topology(load_definitions(definitions), vhost), str(definitions), vhost)
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
            definitions=legacy,
        )
    if as_json:
        print_json(explanation.as_json())
    else:
        typer.echo(format_explanation(explanation), nl=False)
    raise typer.Exit(EXIT_OK if explanation.matches else EXIT_FINDINGS)


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
    http_token_file: Annotated[
        Path | None,
        typer.Option(
            envvar="NATS_BRIDGE_HTTP_TOKEN_FILE",
            help="A file holding a bearer token that /status and /metrics then require "
            "(also NATS_BRIDGE_HTTP_TOKEN). /healthz and /readyz stay open for probes.",
        ),
    ] = None,
) -> None:
    """Run every route in the mapping file until SIGINT/SIGTERM, then drain, settle and exit 0.

    Exits 1 when the NATS connection closes for good (a revoked login, a server -ERR): what
    was stored is settled and the log says why; a supervisor should start the bridge again.
    """
    config = _load(file, as_json=False)
    try:
        stall = parse_duration(stall_after).total_seconds()
        address = None if http.lower() == "off" else HttpAddress.parse(http)
        token = http_token(http_token_file, os.environ)
    except (ValueError, BridgeError) as error:
        fail(str(error))
    secrets = config_secrets(config) + ([token] if token else [])
    configure_logging(log_level, log_format, secrets=secrets)
    try:
        run_bridge(config, RunSettings(http=address, stall_after=stall, http_token=token))
    except (NatsConnectionLostError, JetStreamLostWritesError):
        raise typer.Exit(EXIT_NATS_LOST) from None  # the bridge logged why, as it happened


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
app.add_typer(streams_app)


@streams_app.command("show")
def streams_show(
    file: MappingFile,
    wait_for: Annotated[int, typer.Option(help="Wait until the streams hold this many messages in all.")] = 0,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most.")] = 30.0,
    as_json: JsonFlag = False,
) -> None:
    """Show what the mapping file's streams hold: message counts, bytes and the newest message (the default)."""
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
    config = _load(file, as_json)
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
    config = _load(file, as_json)
    report = asyncio.run(apply_to_server(config, partial=partial))
    if as_json:
        print_json(report.as_json())
    else:
        typer.echo(format_report(report), nl=False)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_INVALID)


@app.command()
def cutover(
    service: Annotated[str, typer.Argument(help="The service (a key under `services`).", show_default=False)],
    file: MappingFile,
    to: Annotated[Phase, typer.Option("--to", help="shadow | drain | retired.", show_default=False)],
    reason: Annotated[str, typer.Option("--reason", help="Why, for the record (required).", show_default=False)],
    by: Annotated[str | None, typer.Option(help="Who, for the record; default user@host.")] = None,
    quiet: Annotated[
        str, typer.Option(help="With --to drain: how long the legacy side must stay empty to count as drained.")
    ] = "30s",
    delete_offsets: Annotated[
        bool, typer.Option("--delete-offsets", help="With --to retired: also delete the bridge's Kafka groups.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Retire a service not reported drained.")] = False,
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
    """
    config = _load(file, as_json=False)
    if service not in config.services:
        known = ", ".join(sorted(config.services))
        raise typer.BadParameter(f"no service '{service}' in {file} (known: {known})", param_hint="SERVICE")
    if not reason.strip():
        raise typer.BadParameter("say why", param_hint="--reason")
    try:
        quiet_for = parse_duration(quiet).total_seconds()
        limit = parse_duration(timeout).total_seconds()
    except (ValueError, BridgeError) as error:
        raise typer.BadParameter(str(error)) from None
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


@app.command()
def status(
    file: MappingFile,
    service: Annotated[str | None, typer.Option(help="Only this service.")] = None,
    interval: Annotated[str, typer.Option(help="Time between the two looks that give the rates.")] = "2s",
    as_json: JsonFlag = False,
) -> None:
    """Each service's phase and, per route, the source backlog, its stream, rates, dead letters,
    and whether it is safe to advance. Read from the brokers and NATS, not from a bridge."""
    config = _load(file, as_json)
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


@app.command("verify")
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


@app.command()
def schema() -> None:
    """Print the mapping file's JSON Schema (for editors: yaml-language-server and friends)."""
    document = BridgeConfig.model_json_schema(by_alias=True)
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "nats-bridge mapping file"
    print_json(document)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


app.add_typer(import_app, name="import")


def main() -> None:
    """Console-script entry point: no traceback ever reaches a user for an error we understand."""
    try:
        app()
    except BridgeError as error:
        print_error(str(error))
        sys.exit(EXIT_INVALID)
    except OSError as error:
        if error.errno not in _OUTPUT_ERRNOS:
            raise
        _output_failed(error)


# What writing the output can fail with (stdout or stderr on a full disk, /dev/full, a quota, a
# terminal gone); every file the commands write themselves handles its own errors. A closed pipe
# (EPIPE) is click's: it exits quietly, as `nats-bridge schema | head` should.
_OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})


def _output_failed(error: OSError) -> NoReturn:
    """One line for output that could not be written, then exit 2 — and no second complaint from
    the interpreter flushing the same stdout at exit: it is pointed at /dev/null first."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    with contextlib.suppress(OSError):
        print_error(f"cannot write the output: {error.strerror or error}")
    sys.exit(EXIT_INVALID)
