"""The `nats-bridge` application: every command registered in the order `--help` lists them,
and the console-script entry point."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from typing import NoReturn

import typer

from bridge import __version__
from bridge.cli_output import EXIT_INVALID, print_error
from bridge.commands import consumers, cutover, dryrun, explain, handoff, reverse, run, streams, validate, verify
from bridge.commands.imports import import_app
from bridge.errors import BridgeError

app = typer.Typer(
    name="nats-bridge",
    help="Move RabbitMQ and Kafka traffic into NATS JetStream, effectively once.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


app.command()(validate.validate)
app.command("dry-run")(dryrun.dry_run)
app.command()(explain.explain)
app.command()(run.run)
app.command()(run.traffic)
app.add_typer(streams.streams_app)
app.add_typer(consumers.consumers_app)
app.command()(cutover.cutover)
app.command()(cutover.status)
app.command("handoff")(handoff.handoff_command)
app.command("reverse")(reverse.reverse_command)
app.command("verify")(verify.verify_cmd)
app.command()(validate.schema)


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
