"""What dry-run found: findings by severity, the --connect part, and the exit code they give."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bridge.cli_output import EXIT_FINDINGS, EXIT_INVALID, EXIT_OK
from bridge.durability import DurabilityReport
from bridge.jetstream.plan import Plan

EXIT_CLEAN, EXIT_WARNINGS, EXIT_ERRORS = EXIT_OK, EXIT_FINDINGS, EXIT_INVALID


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem (or note): which check, about what (a route, stream or broker), and what to do."""

    severity: Severity
    check: str
    subject: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"severity": self.severity.value, "check": self.check, "subject": self.subject, "message": self.message}


@dataclass(slots=True)
class DryRunReport:
    """Everything dry-run found; the --connect part fills `probes` and `plan`."""

    file: str
    findings: list[Finding] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)
    plan: dict[str, Any] | None = None
    drift: Plan | None = None  # the same plan, for the table
    durability: DurabilityReport | None = None  # --connect: streams' posture against the legacy side

    @property
    def exit_code(self) -> int:
        severities = {finding.severity for finding in self.findings}
        if Severity.ERROR in severities:
            return EXIT_ERRORS
        return EXIT_WARNINGS if Severity.WARNING in severities else EXIT_CLEAN

    def count(self, severity: Severity) -> int:
        return sum(1 for finding in self.findings if finding.severity is severity)

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "exit_code": self.exit_code,
            "errors": self.count(Severity.ERROR),
            "warnings": self.count(Severity.WARNING),
            "findings": [finding.as_json() for finding in self.findings],
            "probes": self.probes,
            "streams": self.plan,
            "durability": self.durability.as_json() if self.durability is not None else None,
        }
