"""A forward route: `from` a source, `to` a subject template, with its Msg-Id, headers and `on_error`."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from bridge.config.base import HEADER_TOKEN, NAME_PATTERN, Strict, not_a_bool
from bridge.routing import (
    ExchangeType,
    SubjectTemplate,
    TemplateSyntaxError,
    TextTemplate,
)

RABBITMQ_FIELDS = frozenset({"exchange", "queue", "rk", "message_id", "content_hash"})
KAFKA_FIELDS = frozenset({"topic", "partition", "key", "offset"})
# Template fields that tell one message of a route from every other: a Msg-Id template needs
# one (or a header the route declares unique), or distinct messages share an id and JetStream
# keeps only the first of them.
PER_MESSAGE_FIELDS = frozenset({"offset", "message_id", "content_hash", "auto"})


class RabbitMQMode(StrEnum):
    """How a RabbitMQ route receives its messages."""

    SHADOW = "shadow"
    QUEUE = "queue"
    STREAM = "stream"


def stream_start(value: str | int) -> int | str | datetime:
    """A stream route's start: an offset (0 or more), first / last / next, or an ISO 8601 time;
    ValueError for anything else."""
    if isinstance(value, int) or value.isdigit():
        if int(value) < 0:
            raise ValueError("an offset is 0 or more")
        return int(value)
    if value in ("first", "last", "next"):
        return value
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"'{value}' is none of first, last, next, an offset or an ISO 8601 time (2026-12-06T10:00:00Z)"
        ) from None


class FromRabbitMQ(Strict):
    """Where a RabbitMQ route's messages come from.

    `shadow` (the default with `exchange`) gives the bridge its own queue bound like a
    legacy consumer's, so existing consumers keep every message; `queue` drains an
    existing queue (competing with its consumers); `stream` reads a stream queue.
    """

    exchange: str | None = Field(None, description="Exchange to copy from (shadow mode).")
    type: ExchangeType = Field(
        ExchangeType.TOPIC, description="The exchange's type: topic | direct | fanout | headers."
    )
    bindings: list[str] = Field(
        default_factory=list,
        description="Binding keys (topic: `*` one word, `#` zero or more; direct: exact key).",
        examples=[["order.#", "*.created"]],
    )
    arguments: dict[str, Any] = Field(
        default_factory=dict,
        description="Headers-exchange binding arguments, e.g. `{x-match: any, format: pdf}`.",
    )
    queue: str | None = Field(None, description="Existing queue (queue/stream mode) or shadow queue name.")
    mode: RabbitMQMode | None = Field(
        None, description="shadow | queue | stream; defaults to shadow with `exchange`, queue otherwise."
    )
    single_active_consumer: bool = Field(
        False,
        description=(
            "Declare the shadow queue with `x-single-active-consumer`: with several bridge instances only "
            "one consumes at a time (the others stand by), which keeps the queue's order at the cost of "
            "scale-out."
        ),
    )
    queue_type: Literal["quorum", "classic"] = Field(
        "quorum", description="Type of the shadow queue the bridge declares."
    )
    stream_offset: Annotated[str | int, BeforeValidator(not_a_bool)] = Field(
        "next",
        description="Where a stream route starts: first | last | next | an offset | an ISO timestamp.",
    )

    @field_validator("stream_offset")
    @classmethod
    def _known_start(cls, value: str | int) -> str | int:
        """A word, an offset or an ISO 8601 time: anything else would fail only at the route's
        first connect, and a typo of `first` must not silently mean something else."""
        stream_start(value)
        return value

    @property
    def stream_start(self) -> int | str | datetime:
        """`stream_offset` as RabbitMQ's x-stream-offset takes it: an offset, a word, or a time."""
        return stream_start(self.stream_offset)

    @property
    def effective_mode(self) -> RabbitMQMode:
        if self.mode is not None:
            return self.mode
        return RabbitMQMode.SHADOW if self.exchange is not None else RabbitMQMode.QUEUE

    @model_validator(mode="after")
    def _consistent(self) -> FromRabbitMQ:
        mode = self.effective_mode
        if mode is RabbitMQMode.SHADOW:
            if self.exchange is None:
                raise ValueError("shadow mode needs 'exchange'")
            if self.type in (ExchangeType.TOPIC, ExchangeType.DIRECT) and not self.bindings:
                raise ValueError(f"a {self.type} exchange needs at least one binding key in 'bindings'")
            if self.type is ExchangeType.HEADERS and self.bindings:
                raise ValueError("a headers exchange matches on 'arguments', not 'bindings'")
        elif self.queue is None:
            raise ValueError(f"{mode} mode needs 'queue'")
        if self.type is not ExchangeType.HEADERS and self.arguments:
            raise ValueError("'arguments' are for headers exchanges; set 'type: headers'")
        match = self.arguments.get("x-match", "all")
        if match not in ("all", "any", "all-with-x", "any-with-x"):
            raise ValueError("x-match must be all, any, all-with-x or any-with-x")
        return self


class FromKafka(Strict):
    """Which Kafka topics a route reads, through the bridge's own consumer group."""

    topics: list[str] = Field(default_factory=list, description="Topic names.", examples=[["orders"]])
    topic_pattern: str | None = Field(
        None, description="Java-style regex that must match a whole topic name, e.g. `orders\\..*`."
    )
    group: str | None = Field(
        None, description="Consumer group; defaults to `nats-bridge.<service>.<route>`, never a legacy one."
    )
    start: str = Field("earliest", description="Where a new group starts: earliest | latest | an ISO-8601 timestamp.")
    tombstones: Literal["forward", "skip"] = Field(
        "forward", description="Records with a null value: forward with a marker header, or skip."
    )

    @model_validator(mode="after")
    def _one_subscription(self) -> FromKafka:
        if bool(self.topics) == (self.topic_pattern is not None):
            raise ValueError("give either 'topics' or 'topic_pattern', exactly one")
        if self.topic_pattern is not None:
            try:
                re.compile(self.topic_pattern)
            except re.error as error:
                raise ValueError(f"topic_pattern is not a valid regex: {error}") from None
        return self


def _from_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        if "topics" in value or "topic_pattern" in value:
            return "kafka"
        if "exchange" in value or "queue" in value:
            return "rabbitmq"
        return None
    return "kafka" if isinstance(value, FromKafka) else "rabbitmq"


RouteSource = Annotated[
    Annotated[FromRabbitMQ, Tag("rabbitmq")] | Annotated[FromKafka, Tag("kafka")],
    Discriminator(
        _from_kind,
        custom_error_type="route_from",
        custom_error_message=("'from' needs 'exchange' or 'queue' (RabbitMQ) or 'topics' or 'topic_pattern' (Kafka)"),
    ),
]


class MsgIdStrategy(StrEnum):
    """How the deterministic Nats-Msg-Id of a message is derived."""

    AUTO = "auto"
    KAFKA_OFFSET = "kafka-offset"
    MESSAGE_ID = "message-id"
    STREAM_OFFSET = "stream-offset"
    CONTENT_HASH = "content-hash"

    @property
    def source_kind(self) -> Literal["rabbitmq", "kafka"] | None:
        """The one kind of route a strategy fits (None: any)."""
        if self is MsgIdStrategy.AUTO:
            return None
        return "kafka" if self is MsgIdStrategy.KAFKA_OFFSET else "rabbitmq"


class HeaderMapping(Strict):
    """Which headers a published message carries besides the bridge's own metadata."""

    copy_source: bool = Field(
        True, alias="copy", description="Copy the source message's headers (AMQP headers table, Kafka headers)."
    )
    drop: list[str] = Field(default_factory=list, description="Source headers not to copy.")
    rename: dict[str, str] = Field(default_factory=dict, description="Source header -> NATS header name.")
    set: dict[str, str] = Field(
        default_factory=dict, description="Extra headers: name -> text template (e.g. `{topic}`)."
    )

    @field_validator("rename")
    @classmethod
    def _renamed_to_valid_names(cls, value: dict[str, str]) -> dict[str, str]:
        for target in value.values():
            _check_header_name(target)
        return value

    @field_validator("set")
    @classmethod
    def _set_valid_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, template in value.items():
            _check_header_name(name)
            try:
                TextTemplate.parse(template)
            except TemplateSyntaxError as error:
                raise ValueError(f"header '{name}': {error}") from None
        return value


def _check_header_name(name: str) -> None:
    if not HEADER_TOKEN.match(name):
        raise ValueError(f"'{name}' is not a valid header name (RFC 7230 token: no spaces or ':')")
    if name.lower().startswith("nats-"):
        raise ValueError(f"'{name}' is reserved by NATS (Nats-* headers steer JetStream)")


class OnError(StrEnum):
    """What happens to a message that cannot be delivered as mapped."""

    DEAD_LETTER = "dead-letter"
    STOP = "stop"
    SKIP = "skip"


class RouteConfig(Strict):
    """One flow: messages from a source, mapped to subjects, published into JetStream."""

    name: str = Field(pattern=NAME_PATTERN, description="Route name, unique within its service.")
    source: str = Field(description="Name of an entry under `sources`.")
    from_: RouteSource = Field(alias="from", description="What to read from the source.")
    to: str = Field(
        description=(
            "Subject template: literal tokens and whole-token placeholders {exchange} {queue} {rk} "
            "{rk[i]} {rk[i:j]} {topic} {topic[i:j]} {partition} {key} {header:NAME}."
        ),
        examples=["orders.{rk}", "legacy.kafka.{topic[0:]}"],
    )
    msg_id: str = Field(
        MsgIdStrategy.AUTO.value,
        description=(
            "Nats-Msg-Id: a strategy (auto | kafka-offset | message-id | stream-offset | content-hash) "
            "or a text template such as `{topic}/{partition}/{offset}`. Strategy ids start with "
            "`service/route/`, so two routes never share one; `{auto}` in a template is the strategy's "
            "id without that prefix (routes with one such template share ids on purpose)."
        ),
    )
    unique_headers: list[str] = Field(
        default_factory=list,
        description=(
            "Source headers whose value is unique to one message (a producer's event id): a msg_id "
            "template may be built on `{header:NAME}` of these instead of {offset}, {message_id} or "
            "{content_hash}."
        ),
    )
    headers: HeaderMapping = Field(default_factory=HeaderMapping, description="Header mapping.")
    on_error: OnError = Field(
        OnError.DEAD_LETTER, description="dead-letter (default) | stop | skip, for unmappable messages."
    )
    ordering: Literal["pipelined", "strict", "batched"] = Field(
        "batched",
        description=(
            "Left out: batched into a stream with replicas (where a leader can change), pipelined into a "
            "single-replica one. batched: up to 500 messages of a partition/queue in one JetStream atomic "
            "batch, one batch in flight (nats-server 2.12+; the file's streams get allow_atomic): stored "
            "whole or not at all, so order holds through every fault; stored messages keep the server's "
            "Nats-Batch-Id/-Sequence headers (drop them before republishing a stored message). pipelined: "
            "many publishes in flight per partition; a JetStream error reply for one message while the "
            "next is accepted, or a stream leader stopping gracefully, can reorder them (each reorder is "
            "reported). strict: one publish in flight per partition/queue, which rules that out at about "
            "40% of the throughput."
        ),
    )

    @property
    def ordering_chosen(self) -> bool:
        """The file names this route's `ordering` (rather than leaving it to the default)."""
        return "ordering" in self.model_fields_set

    @field_validator("to")
    @classmethod
    def _template_parses(cls, text: str) -> str:
        try:
            SubjectTemplate.parse(text)
        except TemplateSyntaxError as error:
            raise ValueError(str(error)) from None
        return text

    @field_validator("msg_id")
    @classmethod
    def _msg_id_known(cls, text: str) -> str:
        if "{" in text:
            try:
                TextTemplate.parse(text)
            except TemplateSyntaxError as error:
                raise ValueError(str(error)) from None
            return text
        if text not in {strategy.value for strategy in MsgIdStrategy}:
            options = ", ".join(strategy.value for strategy in MsgIdStrategy)
            raise ValueError(f"unknown msg_id strategy '{text}'; use one of {options} or a template")
        return text

    # Parsed once per route, on first use (the validators below, then the compiled route): the
    # model is frozen, so a template can never go stale against its text.
    @cached_property
    def subject_template(self) -> SubjectTemplate:
        return SubjectTemplate.parse(self.to)

    @cached_property
    def msg_id_template(self) -> TextTemplate | None:
        """The `msg_id` template, or None when it names a strategy."""
        return TextTemplate.parse(self.msg_id) if "{" in self.msg_id else None

    @cached_property
    def header_templates(self) -> tuple[tuple[str, TextTemplate], ...]:
        """(name, template) of each header the route sets."""
        return tuple((name, TextTemplate.parse(text)) for name, text in self.headers.set.items())

    @property
    def source_kind(self) -> Literal["rabbitmq", "kafka"]:
        return "kafka" if isinstance(self.from_, FromKafka) else "rabbitmq"

    @model_validator(mode="after")
    def _fields_fit_the_source(self) -> RouteConfig:
        used = set(self.subject_template.fields)
        if self.msg_id_template is not None:
            used |= self.msg_id_template.fields
        foreign = KAFKA_FIELDS if self.source_kind == "rabbitmq" else RABBITMQ_FIELDS
        if isinstance(self.from_, FromRabbitMQ) and self.from_.effective_mode is RabbitMQMode.STREAM:
            foreign = foreign - {"offset"}  # a stream queue's offset
        wrong = sorted(used & foreign)
        if wrong:
            names = ", ".join("{" + name + "}" for name in wrong)
            raise ValueError(f"{names} cannot be used in a {self.source_kind} route")
        if self.msg_id_template is not None:
            self._msg_id_template_tells_messages_apart(self.msg_id_template)
        elif (kind := MsgIdStrategy(self.msg_id).source_kind) not in (None, self.source_kind):
            raise ValueError(f"msg_id '{self.msg_id}' is for {kind} routes")
        return self

    def _msg_id_template_tells_messages_apart(self, template: TextTemplate) -> None:
        """A template whose every part can repeat (`{topic}`, `{key}`, `{exchange}`) gives many
        messages one id; JetStream stores the first and drops the rest as duplicates."""
        fields = template.fields
        unique = PER_MESSAGE_FIELDS | {f"header:{name}" for name in self.unique_headers}
        if fields & unique:
            return
        if self.source_kind == "kafka":
            hint = "add {offset} (e.g. '" + self.msg_id + "/{offset}')"
        elif isinstance(self.from_, FromRabbitMQ) and self.from_.effective_mode is RabbitMQMode.STREAM:
            hint = "add {offset} (the stream queue's offset)"
        else:
            hint = "add {message_id} (the AMQP property) or {content_hash}"
        raise ValueError(
            f"msg_id '{self.msg_id}' has no part unique to one message, so different messages get the same "
            f"Nats-Msg-Id and JetStream keeps only the first of them: {hint}, or a {{header:NAME}} whose "
            "header is listed in unique_headers"
        )
