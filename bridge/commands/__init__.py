"""The `nats-bridge` command line: thin typer modules, one per command group, each a call into a feature.

* app: the application, every command registered in `--help` order, and `main` (the console script).
* common: the mapping-file argument, `--json`, loading the file (a bad one exits 2 with every error).
* validate (`validate`, `schema`), dryrun (`dry-run`), explain, run (`run`, `traffic`),
  streams (`streams show|plan|apply`), cutover (`cutover`, `status`), verify.
* `import rabbitmq|kafka`: imports.py, a typer group attached in app.

Exit codes and the output helpers they share are bridge.cli_output.
"""

from bridge.commands.app import app, main

__all__ = ["app", "main"]
