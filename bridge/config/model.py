"""The mapping-file model: what a user may write, validated before anything connects.

Each field carries a description so `nats-bridge schema` documents the format for editors.
Unknown keys are rejected everywhere (`extra="forbid"`): a misspelt `bindngs` silently
ignored would mean a route that copies nothing, which is the worst kind of config bug.

Secrets never live in the file: credential fields take `${VAR}` references (interpolated
by the loader) or file paths, and are held as `SecretStr` so they print as `**********`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bridge.config.base import LOCATE_REFERENCES_LATER, NAME_PATTERN, StreamBytes, Strict, not_a_bool
from bridge.config.consumer_refs import consumer_problems
from bridge.config.durations import Duration
from bridge.config.nats import NatsConfig
from bridge.config.routes import OnError, RouteConfig
from bridge.config.services import ReverseRouteConfig, ServiceConfig
from bridge.config.sources import SourceConfig
from bridge.config.streams import StreamConfig
from bridge.routing import (
    is_valid_subject_filter,
)


class DeadLetterConfig(Strict):
    """Where messages go that cannot be delivered as mapped (routes with `on_error: dead-letter`).

    A dead letter keeps the original payload and headers and says why in `Bridge-Dlq-*`
    headers; the source is acknowledged only once JetStream stored it, so nothing is lost.
    The stream is declared when any route dead-letters.
    """

    stream: str = Field("NATS_BRIDGE_DLQ", pattern=r"^[^\s.*>/\\]+$", description="Stream that keeps the dead letters.")
    subject_prefix: str = Field(
        "nats-bridge.dlq",
        description="Dead letters are published to `<subject_prefix>.<service>.<route>`.",
    )
    max_age: Duration = Field(timedelta(days=14), description="How long dead letters are kept.")
    max_bytes: StreamBytes | None = Field(
        None, description="Most bytes kept; absent means unlimited.", json_schema_extra={"type": ["string", "integer"]}
    )
    replicas: int | None = Field(
        None,
        ge=1,
        le=5,
        strict=True,
        description="Copies kept in a cluster; absent: as many as the most replicated stream.",
    )
    payload_bucket: str = Field(
        "nats_bridge_dlq_payloads",
        pattern=r"^[A-Za-z0-9_-]+$",
        description=(
            "Object-store bucket for payloads too large for a NATS message; the dead letter names the "
            "object in `Bridge-Dlq-Payload-Object`."
        ),
    )

    @field_validator("subject_prefix")
    @classmethod
    def _prefix_is_a_subject(cls, prefix: str) -> str:
        if not is_valid_subject_filter(prefix) or "*" in prefix or ">" in prefix:
            raise ValueError(f"'{prefix}' is not a literal NATS subject (tokens separated by '.', no wildcards)")
        return prefix

    def subject_for(self, service: str, route: str) -> str:
        return f"{self.subject_prefix}.{service}.{route}"

    def stream_config(self, replicas: int) -> StreamConfig:
        """The dead-letter stream, declared like the mapping file's own streams."""
        return StreamConfig(
            name=self.stream,
            subjects=[f"{self.subject_prefix}.>"],
            description="nats-bridge: messages that could not be delivered as mapped, with the reason",
            max_age=self.max_age,
            max_bytes=self.max_bytes,
            replicas=self.replicas or replicas,
        )


class BridgeConfig(Strict):
    """A whole mapping file."""

    version: Annotated[Literal[1], BeforeValidator(not_a_bool)] = Field(1, description="Mapping-file format version.")
    nats: NatsConfig = Field(default_factory=NatsConfig, description="The NATS connection.")
    streams: list[StreamConfig] = Field(default_factory=list, description="Streams to declare.")
    sources: dict[Annotated[str, Field(pattern=NAME_PATTERN)], SourceConfig] = Field(
        description="Named source connections."
    )
    services: dict[Annotated[str, Field(pattern=NAME_PATTERN)], ServiceConfig] = Field(
        description="Services, each a unit of cut-over with its routes."
    )
    dead_letters: DeadLetterConfig = Field(
        default_factory=DeadLetterConfig, description="The dead-letter stream and subjects."
    )

    @model_validator(mode="after")
    def _references_resolve(self, info: ValidationInfo) -> BridgeConfig:
        problems = self.reference_problems()
        if problems and not (info.context or {}).get(LOCATE_REFERENCES_LATER):
            raise ValueError("; ".join(message for _, message in problems))
        return self

    def reference_problems(self) -> list[tuple[tuple[int | str, ...], str]]:
        """Problems that span sections (a route naming a missing source), with their key paths.

        Kept apart from field validation so the loader can point at each one's line.
        """
        problems: list[tuple[tuple[int | str, ...], str]] = []
        seen: set[str] = set()
        for index, stream in enumerate(self.streams):
            if stream.name in seen:
                problems.append((("streams", index, "name"), f"stream '{stream.name}' is declared twice"))
            seen.add(stream.name)
        for service_name, service in self.services.items():
            for index, route in enumerate(service.routes):
                loc: tuple[int | str, ...] = ("services", service_name, "routes", index, "source")
                source = self.sources.get(route.source)
                if source is None:
                    known = ", ".join(sorted(self.sources)) or "none"
                    problems.append((loc, f"source '{route.source}' is not defined (known: {known})"))
                elif source.type != route.source_kind:
                    problems.append(
                        (
                            loc,
                            f"source '{route.source}' is {source.type}, "
                            f"but 'from' describes a {route.source_kind} subscription",
                        )
                    )
            for index, reverse in enumerate(service.reverse):
                loc = ("services", service_name, "reverse", index, "to", "source")
                target = self.sources.get(reverse.to.source)
                if target is None:
                    known = ", ".join(sorted(self.sources)) or "none"
                    problems.append((loc, f"source '{reverse.to.source}' is not defined (known: {known})"))
                elif target.type != reverse.to.kind:
                    what = "an exchange" if reverse.to.kind == "rabbitmq" else "a topic"
                    problems.append((loc, f"source '{reverse.to.source}' is {target.type}, but 'to' names {what}"))
        return problems + consumer_problems(self.services, self.streams)

    def reverse_routes(self) -> list[tuple[str, ReverseRouteConfig]]:
        """Every reverse route with its service name, in file order."""
        return [(name, route) for name, service in self.services.items() for route in service.reverse]

    @property
    def dead_letters_used(self) -> bool:
        return any(route.on_error is OnError.DEAD_LETTER for _, route in self.routes())

    @property
    def state_replicas(self) -> int:
        """Copies of the bridge's own state (checkpoints, dead letters): as many as the most
        replicated stream, so losing a node that the streams survive loses none of it either."""
        return max((stream.replicas for stream in self.streams), default=1)

    @property
    def requires_atomic_batches(self) -> bool:
        """Some route asks for `ordering: batched` in so many words: a server that cannot take
        atomic batches is an error then, not a reason to fall back to pipelined."""
        return any(route.ordering_chosen and route.ordering == "batched" for _, route in self.routes())

    def all_streams(self) -> list[StreamConfig]:
        """The declared streams, plus the dead-letter stream when a route dead-letters."""
        if self.dead_letters_used:
            return [*self.streams, self.dead_letters.stream_config(self.state_replicas)]
        return list(self.streams)

    def routes(self) -> list[tuple[str, RouteConfig]]:
        """Every route with its service name, in file order."""
        return [(name, route) for name, service in self.services.items() for route in service.routes]
