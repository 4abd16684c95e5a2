"""What explain answers: each route's outcome, RabbitMQ's own routing of the message, and where they differ."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.importers.topology import Topology
from bridge.importers.topology_paths import Routed


@dataclass(frozen=True, slots=True)
class RouteOutcome:
    """What one matching route would do with the message."""

    route: str
    source: str
    subject: str | None
    msg_id: str | None
    msg_id_strategy: str
    msg_id_reason: str
    headers: Mapping[str, str]
    size: int
    streams: tuple[str, ...]
    error: str | None = None  # why it cannot be mapped
    fate: str = "publish"  # bridge.decide.Fate: publish | filtered | dead-letter | skip | stop
    problem: str | None = None  # a DeadLetterReason value when it cannot go where the route says
    detail: str | None = None  # why it is filtered, or what is wrong with it
    encoded_size: int = 0  # payload plus header block: what max_payload is checked against

    def as_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "source": self.source,
            "subject": self.subject,
            "msg_id": self.msg_id,
            "msg_id_strategy": self.msg_id_strategy,
            "msg_id_reason": self.msg_id_reason,
            "headers": dict(self.headers),
            "size": self.size,
            "streams": list(self.streams),
            "error": self.error,
            "fate": self.fate,
            "problem": self.problem,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Definitions:
    """The legacy estate to route through: a checked definitions export, read as `import rabbitmq` reads it.
    `vhost` is the vhost the message is published in (and of export items that name none)."""

    topology: Topology
    name: str
    vhost: str = "/"


@dataclass(frozen=True, slots=True)
class Mismatch:
    """Where RabbitMQ and the bridge disagree about a message, in words a person can act on."""

    kind: str  # "not-copied" | "no-legacy-queue" | "changed-by-bridge"
    message: str

    def as_json(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}


@dataclass(frozen=True, slots=True)
class LegacyRouting:
    """RabbitMQ's routing of the message: `routed` with the bridge's shadow queues bound (how it goes
    while the bridge shadows), `without_bridge` as before it (they differ only through alternate
    exchanges, which a shadow queue that takes the message keeps it from)."""

    definitions: str
    routed: Routed
    without_bridge: Routed

    def as_json(self) -> dict[str, Any]:
        return {
            "definitions": self.definitions,
            **self.routed.as_json(),
            "without_bridge": {
                "queues": list(self.without_bridge.queues),
                "possible_queues": list(self.without_bridge.possible_queues),
            },
        }


@dataclass(frozen=True, slots=True)
class Explanation:
    """Every route's verdict on one message (and RabbitMQ's, when a definitions export was given)."""

    message: str
    matches: list[RouteOutcome] = field(default_factory=list)
    misses: list[tuple[str, str]] = field(default_factory=list)
    legacy: LegacyRouting | None = None
    mismatches: list[Mismatch] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "message": self.message,
            "matches": [outcome.as_json() for outcome in self.matches],
            "misses": [{"route": route, "reason": reason} for route, reason in self.misses],
        }
        if self.legacy is not None:
            document["legacy"] = self.legacy.as_json()
            document["mismatches"] = [mismatch.as_json() for mismatch in self.mismatches]
        return document
