"""What the commands share: the mapping-file argument, --json, and loading the file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bridge.cli_output import fail_config
from bridge.config import BridgeConfig, load_config
from bridge.errors import ConfigError

MappingFile = Annotated[Path, typer.Argument(help="Mapping file (YAML).", show_default=False)]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


def load_mapping(path: Path, as_json: bool) -> BridgeConfig:
    """The mapping file, or exit 2 with every error in it (JSON on stdout with --json)."""
    try:
        return load_config(path)
    except ConfigError as error:
        fail_config(error, as_json)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
