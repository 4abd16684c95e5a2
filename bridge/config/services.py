"""The `services:` section: units of cut-over, each with its forward and reverse routes and its phase."""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from typing import Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from bridge.config.base import NAME_PATTERN, Strict
from bridge.config.consumers import ConsumerConfig
from bridge.config.limits import INT64_MAX
from bridge.config.routes import RouteConfig
from bridge.routing import (
    TemplateSyntaxError,
    is_valid_subject_filter,
)
from bridge.routing.key_template import KeyTemplate
from bridge.routing.key_template import parse as parse_key_template


class Phase(StrEnum):
    """Where a service is in its cut-over (kept in NATS KV; see bridge.cutover).

    shadow: its producers still publish to the legacy broker; the bridge copies into JetStream.
    drain: its producers publish to NATS; the bridge copies what is left on the legacy side.
    retired: the legacy side is empty and the bridge's routes for it are stopped and removed.
    """

    SHADOW = "shadow"
    DRAIN = "drain"
    RETIRED = "retired"


class ReverseTo(Strict):
    """Where a reverse route writes: a RabbitMQ exchange or a Kafka topic of a `sources` entry."""

    source: str = Field(description="Name of an entry under `sources` (its connection is used).")
    exchange: str | None = Field(None, description="RabbitMQ exchange to publish to (publisher confirms).")
    routing_key: str = Field(
        "{subject}",
        description="RabbitMQ routing key template: {subject}, {subject[i]}, {subject[i:j]}, {header:NAME}.",
    )
    topic: str | None = Field(None, description="Kafka topic to produce to (idempotent producer, acks=all).")
    key: str | None = Field(
        None, description="Kafka record key template (same placeholders as routing_key); absent: no key."
    )

    @field_validator("routing_key", "key")
    @classmethod
    def _key_template_parses(cls, text: str | None) -> str | None:
        if text is not None:
            try:
                parse_key_template(text)
            except TemplateSyntaxError as error:
                raise ValueError(str(error)) from None
        return text

    @cached_property
    def key_template(self) -> KeyTemplate | None:
        """The target's key template, parsed once: the routing key (RabbitMQ) or the record key
        (Kafka; None: records without a key)."""
        text = self.routing_key if self.exchange is not None else self.key
        return parse_key_template(text) if text is not None else None

    @model_validator(mode="after")
    def _one_target(self) -> ReverseTo:
        if (self.exchange is None) == (self.topic is None):
            raise ValueError("give exactly one of 'exchange' (RabbitMQ) or 'topic' (Kafka)")
        if self.topic is not None and self.routing_key != "{subject}":
            raise ValueError("'routing_key' is for RabbitMQ; a Kafka target takes 'key'")
        if self.exchange is not None and self.key is not None:
            raise ValueError("'key' is for Kafka; a RabbitMQ target takes 'routing_key'")
        return self

    @property
    def kind(self) -> Literal["rabbitmq", "kafka"]:
        return "rabbitmq" if self.exchange is not None else "kafka"


class ReverseRouteConfig(Strict):
    """NATS -> legacy, for legacy consumers that have not moved yet: a JetStream durable
    consumer's messages are written to the legacy broker and acked only once it confirmed.
    Messages the bridge itself copied from the legacy side are never written back."""

    name: str = Field(pattern=NAME_PATTERN, description="Reverse route name, unique within its service.")
    stream: str = Field(description="The JetStream stream to read.")
    filter_subjects: list[str] = Field(
        default_factory=list, description="Subjects to read (wildcards allowed); empty: the whole stream."
    )
    durable: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        description="Durable consumer name; default `nats-bridge-reverse-<service>-<name>`.",
    )
    to: ReverseTo = Field(description="The legacy target.")
    during: list[Phase] = Field(
        default_factory=lambda: [Phase.DRAIN, Phase.RETIRED],
        min_length=1,
        description="Phases of the service in which this reverse route runs.",
    )
    max_ack_pending: int = Field(
        1000, ge=1, le=INT64_MAX, strict=True, description="Messages in flight to the legacy broker at most."
    )

    def durable_name(self, service: str) -> str:
        """The consumer's name: `durable`, or one derived from service and route."""
        return self.durable or f"nats-bridge-reverse-{service}-{self.name}"

    @field_validator("filter_subjects")
    @classmethod
    def _filters_are_subject_filters(cls, subjects: list[str]) -> list[str]:
        for subject in subjects:
            if not is_valid_subject_filter(subject):
                raise ValueError(
                    f"'{subject}' is not a valid NATS subject filter (tokens separated by '.', "
                    "no spaces, '*' for one token, '>' only at the end)"
                )
        return subjects


class ServiceConfig(Strict):
    """A unit of cut-over: the routes one legacy service depends on, moved together."""

    description: str | None = Field(None, description="What this service is, for people.")
    routes: list[RouteConfig] = Field(min_length=1, description="The service's routes.")
    reverse: list[ReverseRouteConfig] = Field(
        default_factory=list,
        description="NATS -> legacy routes for legacy consumers not moved yet (run in `during` phases).",
    )
    consumers: list[ConsumerConfig] = Field(
        default_factory=list,
        description="JetStream durable consumers that take over from the service's legacy consumers "
        "(`consumers plan|apply`).",
    )

    @model_validator(mode="after")
    def _unique_route_names(self) -> ServiceConfig:
        seen: set[str] = set()
        for name in [route.name for route in self.routes] + [route.name for route in self.reverse]:
            if name in seen:
                raise ValueError(f"two routes are named '{name}'")
            seen.add(name)
        return self
