"""`validate` and `schema`: the mapping file checked offline, and its JSON Schema for editors."""

from __future__ import annotations

import typer

from bridge.cli_output import print_json
from bridge.commands.common import JsonFlag, MappingFile, load_mapping, plural
from bridge.config import BridgeConfig


def validate(file: MappingFile, as_json: JsonFlag = False) -> None:
    """Check a mapping file offline: exit 0 when valid, 2 with every error (file:line) when not."""
    config = load_mapping(file, as_json)
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
            plural(len(config.streams), "stream"),
            plural(len(config.sources), "source"),
            plural(len(config.services), "service"),
            plural(len(routes), "route"),
        ]
        typer.echo(f"{file}: valid — {', '.join(counts)}")


def schema() -> None:
    """Print the mapping file's JSON Schema (for editors: yaml-language-server and friends)."""
    document = BridgeConfig.model_json_schema(by_alias=True)
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "nats-bridge mapping file"
    print_json(document)
