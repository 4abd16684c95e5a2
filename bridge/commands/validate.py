"""`validate` and `schema`: the mapping file checked offline, and its JSON Schema for editors."""

from __future__ import annotations

import typer

from bridge.cli_output import EXIT_FINDINGS, EXIT_INVALID, print_json
from bridge.commands.common import JsonFlag, MappingFile, load_mapping, plural
from bridge.config import BridgeConfig
from bridge.dryrun.consumers import check_consumers
from bridge.dryrun.report import Severity


def validate(file: MappingFile, as_json: JsonFlag = False) -> None:
    """Check a mapping file offline: exit 0 when valid, 2 with every error (file:line) when not.

    Consumers that say what they `replaces` are also checked against it: 2 when one would miss
    what the legacy queue or group received, 1 for warnings (a binding no NATS filter expresses
    exactly, a filter wider than the legacy subscription).
    """
    config = load_mapping(file, as_json)
    routes = config.routes()
    consumers = sum(len(service.consumers) for service in config.services.values())
    findings = check_consumers(config)
    if as_json:
        summary: dict[str, object] = {
            "valid": True,
            "file": str(file),
            "streams": len(config.streams),
            "sources": len(config.sources),
            "services": len(config.services),
            "routes": len(routes),
            "consumers": consumers,
            "findings": [finding.as_json() for finding in findings],
        }
        print_json(summary)
    else:
        counts = [
            plural(len(config.streams), "stream"),
            plural(len(config.sources), "source"),
            plural(len(config.services), "service"),
            plural(len(routes), "route"),
        ]
        if consumers:
            counts.append(plural(consumers, "consumer"))
        typer.echo(f"{file}: valid — {', '.join(counts)}")
        for finding in findings:
            typer.echo(f"{finding.severity.value}: {finding.check}: {finding.subject}: {finding.message}")
    severities = {finding.severity for finding in findings}
    if Severity.ERROR in severities:
        raise typer.Exit(EXIT_INVALID)
    if Severity.WARNING in severities:
        raise typer.Exit(EXIT_FINDINGS)


def schema() -> None:
    """Print the mapping file's JSON Schema (for editors: yaml-language-server and friends)."""
    document = BridgeConfig.model_json_schema(by_alias=True)
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "nats-bridge mapping file"
    print_json(document)
