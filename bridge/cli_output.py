"""What every `nats-bridge` command shares on its way out: the exit codes, `--json`, and `error:`.

The codes mean the same in every command:

- 0 (EXIT_OK): done, nothing to report.
- 1 (EXIT_FINDINGS): done, and something needs a look — dry-run warnings, a verify
  difference, pending stream changes, no route takes the message, streams still short of
  `--wait-for`; for `run`, the NATS connection closed for good (a supervisor starts it again).
- 2 (EXIT_INVALID): the command could not do its job — an invalid file or option, a refused or
  failed change, dry-run errors, something verify could not check, output that cannot be written.

Each command names its own cases after these (dry-run's EXIT_WARNINGS is EXIT_FINDINGS).
Errors go to stderr as one `error: ...` line each; `--json` documents go to stdout, indented.

This module sits below the features because verify/command.py, the feature half of its
command, prints with it too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any, NoReturn

import typer

from bridge.errors import BridgeError, ConfigError

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_INVALID = 2


def print_json(document: object) -> None:
    """A `--json` document on stdout, indented by two."""
    typer.echo(json.dumps(document, indent=2))


def print_error(message: str) -> None:
    """One `error: ...` line on stderr."""
    typer.echo(f"error: {message}", err=True)


def fail(message: str, code: int = EXIT_INVALID) -> NoReturn:
    """`error: message` on stderr, then exit with `code`."""
    print_error(message)
    raise typer.Exit(code)


def print_config_errors(error: ConfigError, as_json: bool) -> None:
    """A mapping file that does not load: every issue (file:line), as JSON on stdout with `--json`,
    else one `error:` line each on stderr and a count."""
    if as_json:
        issues = [
            {"file": i.file, "line": i.line, "column": i.column, "path": i.path, "message": i.message, "hint": i.hint}
            for i in error.issues
        ]
        print_json({"valid": False, "errors": issues})
    else:
        for issue in error.issues:
            print_error(str(issue))
        count = len(error.issues)
        typer.echo(f"{count} error{'s' if count != 1 else ''} in {error.issues[0].file}", err=True)


def fail_config(error: ConfigError, as_json: bool) -> NoReturn:
    """`print_config_errors`, then exit 2."""
    print_config_errors(error, as_json)
    raise typer.Exit(EXIT_INVALID)


def run_command(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a command's coroutine; a BridgeError becomes one clear line and exit code 2."""
    try:
        return asyncio.run(coroutine)
    except BridgeError as error:
        fail(str(error))
