"""The mapping-file model: what a user may write, validated before anything connects.

Each field carries a description so `nats-bridge schema` documents the format for editors.
Unknown keys are rejected everywhere (`extra="forbid"`): a misspelt `bindngs` silently
ignored would mean a route that copies nothing, which is the worst kind of config bug.

Secrets never live in the file: credential fields take `${VAR}` references (interpolated
by the loader) or file paths, and are held as `SecretStr` so they print as `**********`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bridge.config.durations import Duration
from bridge.config.limits import INT32_MAX, INT64_MAX
from bridge.routing import (
    ExchangeType,
    SubjectTemplate,
    TemplateSyntaxError,
    TextTemplate,
    is_valid_subject_filter,
)
from bridge.routing.key_template import parse as parse_key_template

# Names that become parts of queue names, consumer groups and subjects: keep them plain.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
_HEADER_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")

# Validation context flag: the loader locates cross-section problems itself, line by line.
LOCATE_REFERENCES_LATER = "locate_references_later"

RABBITMQ_FIELDS = frozenset({"exchange", "queue", "rk", "message_id", "content_hash"})
KAFKA_FIELDS = frozenset({"topic", "partition", "key", "offset"})
# Template fields that tell one message of a route from every other: a Msg-Id template needs
# one (or a header the route declares unique), or distinct messages share an id and JetStream
# keeps only the first of them.
PER_MESSAGE_FIELDS = frozenset({"offset", "message_id", "content_hash", "auto"})


class Strict(BaseModel):
    """Base for every mapping-file model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _not_a_bool(value: Any) -> Any:
    """YAML's `true` is no number: left to pydantic, `max_msgs: true` would be a one-message stream."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    return value


def _int64_bytes(value: ByteSize) -> ByteSize:
    if value > INT64_MAX:
        raise ValueError(f"{int(value)} bytes is more than JetStream can count (int64: at most {INT64_MAX})")
    return value


def _int32_bytes(value: ByteSize) -> ByteSize:
    if value > INT32_MAX:
        raise ValueError(f"{int(value)} bytes is more than a JetStream message can have (int32: at most {INT32_MAX})")
    return value


# Byte sizes as JetStream holds them: max_bytes an int64, max_msg_size an int32 (nats-server's
# StreamConfig); validated here so that `validate` refuses what the server would refuse at start.
StreamBytes = Annotated[ByteSize, BeforeValidator(_not_a_bool), AfterValidator(_int64_bytes)]
MessageBytes = Annotated[ByteSize, BeforeValidator(_not_a_bool), AfterValidator(_int32_bytes)]


# --------------------------------------------------------------------------- nats


class NatsConfig(Strict):
    """How the bridge reaches NATS. Credentials are references, never literals."""

    servers: list[SecretStr] = Field(
        default_factory=lambda: [SecretStr("nats://127.0.0.1:4222")],
        min_length=1,
        description="NATS server URLs; the client fails over between them. May be `${NATS_URL}`.",
        json_schema_extra={"items": {"type": "string"}, "examples": [["nats://127.0.0.1:4222"]]},
    )
    name: str = Field("nats-bridge", description="Connection name shown in the server's monitoring.")
    user: str | None = Field(None, description="User name for user/password authentication.")
    password: SecretStr | None = Field(None, description="Password; write it as a `${VAR}` reference, never a literal.")
    token: SecretStr | None = Field(
        None, description="Authentication token; write it as a `${VAR}` reference, never a literal."
    )
    credentials_file: str | None = Field(
        None, description="Path of a `.creds` file (JWT and NKey seed) for decentralised auth."
    )
    nkey_seed_file: str | None = Field(None, description="Path of a file holding an NKey seed.")
    tls_ca_file: str | None = Field(None, description="CA bundle to verify the servers' certificates.")
    tls_cert_file: str | None = Field(None, description="Client certificate (PEM) for servers that verify clients.")
    tls_key_file: str | None = Field(None, description="The client certificate's private key (PEM).")
    tls_handshake_first: bool = Field(
        False,
        description="Start with the TLS handshake before the server's INFO (the server needs "
        "`tls { handshake_first: true }`, nats-server 2.10.4+); implies TLS.",
    )
    connect_timeout: Duration = Field(
        timedelta(seconds=5), description="Bound on the initial connect, so a wrong URL fails fast."
    )
    ping_interval: Duration = Field(
        timedelta(seconds=5),
        description=(
            "How often to ping the server; a hung or dead connection is noticed within two intervals "
            "(a round of PubAck timeouts checks it sooner)."
        ),
    )
    max_reconnect_attempts: int = Field(
        -1,
        ge=-1,
        le=INT32_MAX,
        strict=True,
        description="Reconnect attempts before giving up; -1 (the default) retries forever.",
    )
    monitor_urls: list[SecretStr] = Field(
        default_factory=list,
        description=(
            "Monitoring endpoints of the servers (`http://nats-1:8222`), read only by `dry-run --connect` "
            "and `status` for each server's `sync_interval` (/varz), which JetStream does not reveal to "
            "clients. Optional; `run` never uses them."
        ),
        json_schema_extra={"items": {"type": "string"}, "examples": [["http://127.0.0.1:8222"]]},
    )

    @model_validator(mode="after")
    def _one_auth_method(self) -> NatsConfig:
        methods = [
            name
            for name, value in (
                ("password", self.password),
                ("token", self.token),
                ("credentials_file", self.credentials_file),
                ("nkey_seed_file", self.nkey_seed_file),
            )
            if value is not None
        ]
        if len(methods) > 1:
            raise ValueError(f"choose one authentication method, not {' and '.join(methods)}")
        if self.password is not None and self.user is None:
            raise ValueError("'password' needs 'user'")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("'tls_cert_file' and 'tls_key_file' go together")
        return self


# --------------------------------------------------------------------------- streams


class Retention(StrEnum):
    """JetStream retention policies, named as in the NATS docs."""

    LIMITS = "limits"
    INTEREST = "interest"
    WORKQUEUE = "workqueue"


class Storage(StrEnum):
    FILE = "file"
    MEMORY = "memory"


class Discard(StrEnum):
    OLD = "old"
    NEW = "new"


class StreamConfig(Strict):
    """A JetStream stream the bridge declares (or checks) before publishing into it."""

    name: str = Field(
        pattern=r"^[^\s.*>/\\]+$",
        description="Stream name; no whitespace, '.', '*', '>', '/' or '\\\\' (NATS rules).",
        examples=["ORDERS"],
    )
    subjects: list[str] = Field(
        min_length=1, description="Subject filters the stream captures; '*' and a final '>' allowed."
    )
    description: str | None = Field(None, description="Free text shown in `nats stream info`.")
    retention: Retention = Field(Retention.LIMITS, description="limits | interest | workqueue.")
    storage: Storage = Field(Storage.FILE, description="file (durable) | memory (fast, lost on restart).")
    replicas: int = Field(1, ge=1, le=5, strict=True, description="Copies kept in a cluster (1, 3 or 5 in practice).")
    max_msgs: int | None = Field(
        None, ge=1, le=INT64_MAX, strict=True, description="Most messages kept; absent means unlimited."
    )
    max_bytes: StreamBytes | None = Field(
        None,
        description="Most bytes kept, e.g. `10GiB`; absent means unlimited.",
        json_schema_extra={"type": ["string", "integer"], "examples": ["10GiB", 1073741824]},
    )
    max_age: Duration | None = Field(None, description="Oldest message kept, e.g. `7d`; absent means forever.")
    max_msg_size: MessageBytes | None = Field(
        None,
        description="Largest message accepted; absent means the server's max_payload.",
        json_schema_extra={"type": ["string", "integer"]},
    )
    duplicate_window: Duration = Field(
        timedelta(minutes=2),
        description=(
            "How long JetStream remembers a Nats-Msg-Id to drop redelivered duplicates. Each id "
            "costs server memory (~170 B), so size it as rate x window; must not exceed max_age."
        ),
    )
    discard: Discard = Field(Discard.OLD, description="At a limit: `old` drops the oldest, `new` refuses new messages.")

    @field_validator("subjects")
    @classmethod
    def _subjects_are_filters(cls, subjects: list[str]) -> list[str]:
        for subject in subjects:
            if not is_valid_subject_filter(subject):
                raise ValueError(
                    f"'{subject}' is not a valid NATS subject filter (tokens separated by '.', "
                    "no spaces, '*' for one token, '>' only at the end)"
                )
        return subjects

    @model_validator(mode="after")
    def _window_within_age(self) -> StreamConfig:
        if self.max_age and self.duplicate_window > self.max_age:
            raise ValueError("duplicate_window cannot be longer than max_age (JetStream refuses it)")
        return self


# --------------------------------------------------------------------------- sources


class RabbitMQManagement(Strict):
    """RabbitMQ's management HTTP API, read only by `dry-run --connect` and `status`.

    AMQP cannot tell a quorum queue from a classic one (a passive declare answers both alike),
    so what a legacy queue promises about durability — its type, members, durability — and
    which legacy queues are bound where a shadow route copies can only be read here.
    """

    url: SecretStr = Field(
        description="Base URL of the API, e.g. `http://rabbit:15672/`; a password in it only via `${VAR}`.",
        json_schema_extra={"type": "string", "examples": ["http://rabbit:15672/"]},
    )
    username: str | None = Field(
        None, description="A user with the `monitoring` tag; when absent, the URL's user, else the source's."
    )
    password: SecretStr | None = Field(
        None, description="Its password as a `${VAR}` or `${file:PATH}` reference; when absent, the source's."
    )


class RabbitMQSource(Strict):
    """A RabbitMQ broker the bridge reads from."""

    type: Literal["rabbitmq"] = Field(description="Source kind.")
    url: SecretStr = Field(
        description="AMQP URL, e.g. `amqp://bridge@rabbit:5672/`; put a password in it only via `${VAR}`.",
        json_schema_extra={"type": "string", "examples": ["${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}"]},
    )
    vhost: str | None = Field(None, description="Virtual host; overrides the one in the URL.")
    username: str | None = Field(None, description="User name; overrides the one in the URL.")
    password: SecretStr | None = Field(None, description="Password as a `${VAR}` or `${file:PATH}` reference.")
    tls_ca_file: str | None = Field(None, description="CA bundle to verify the broker (amqps:// URLs).")
    tls_cert_file: str | None = Field(None, description="Client certificate (PEM), for EXTERNAL or verify_peer.")
    tls_key_file: str | None = Field(None, description="The client certificate's private key (PEM).")
    auth_mechanism: Literal["PLAIN", "EXTERNAL"] = Field(
        "PLAIN", description="PLAIN (user and password) or EXTERNAL (the client certificate's identity)."
    )
    prefetch: int = Field(
        1000, ge=1, le=65535, strict=True, description="Most unacknowledged deliveries per consumer: the memory bound."
    )
    heartbeat: Duration = Field(timedelta(seconds=30), description="AMQP heartbeat interval.")
    management: RabbitMQManagement | None = Field(
        None,
        description=(
            "The management API, for the durability posture of `dry-run --connect` and `status` "
            "(queue types, bound queues); optional, never used by `run`."
        ),
    )

    @model_validator(mode="after")
    def _tls_consistent(self) -> RabbitMQSource:
        tls = any(f is not None for f in (self.tls_ca_file, self.tls_cert_file, self.tls_key_file))
        scheme = self.url.get_secret_value().split("://", 1)[0].lower()
        if tls and scheme != "amqps":
            raise ValueError("TLS files need an amqps:// URL")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("'tls_cert_file' and 'tls_key_file' go together")
        if self.auth_mechanism == "EXTERNAL" and (self.tls_cert_file is None or scheme != "amqps"):
            raise ValueError("auth_mechanism EXTERNAL needs an amqps:// URL and a client certificate")
        if self.auth_mechanism == "EXTERNAL" and self.password is not None:
            raise ValueError("auth_mechanism EXTERNAL takes no password: the certificate is the credential")
        return self

    @property
    def msg_id_cluster(self) -> str | None:
        """No qualifier: an AMQP delivery's default Msg-Id comes from its message_id or content."""
        return None

    def secret_values(self) -> list[SecretStr | None]:
        """Every setting of this source that is a secret (for the log scrubber)."""
        values = [self.url, self.password]
        if self.management is not None:
            values += [self.management.url, self.management.password]
        return values

    @property
    def effective_vhost(self) -> str:
        """The vhost the bridge opens: `vhost`, else the URL's (percent-decoded) path, else `/`.
        Offline tools (`explain --definitions`) need it to know which vhost's messages a route sees."""
        if self.vhost is not None:
            return self.vhost or "/"
        return unquote(urlsplit(self.url.get_secret_value()).path.removeprefix("/")) or "/"


class KafkaSource(Strict):
    """A Kafka cluster the bridge reads from through its own consumer groups."""

    type: Literal["kafka"] = Field(description="Source kind.")
    bootstrap_servers: list[str] = Field(
        min_length=1, description="host:port of one or more brokers.", examples=[["127.0.0.1:9092"]]
    )
    client_id: str = Field("nats-bridge", description="Client id shown in broker logs and quotas.")
    cluster_name: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        description="Name that qualifies default Msg-Ids, when several Kafka clusters feed one stream.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism when the protocol uses SASL."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(
        None, description="SASL password as a `${VAR}` or `${file:PATH}` reference."
    )
    ssl_ca_file: str | None = Field(None, description="CA bundle (PEM) to verify the brokers (SSL, SASL_SSL).")
    ssl_cert_file: str | None = Field(None, description="Client certificate (PEM) for brokers that verify clients.")
    ssl_key_file: str | None = Field(None, description="The client certificate's private key (PEM).")
    ssl_key_password: SecretStr | None = Field(
        None, description="Password of an encrypted private key, as a `${VAR}` or `${file:PATH}` reference."
    )

    @property
    def msg_id_cluster(self) -> str | None:
        """What qualifies this cluster's default Msg-Ids (`cluster_name`)."""
        return self.cluster_name

    def secret_values(self) -> list[SecretStr | None]:
        """Every setting of this source that is a secret (for the log scrubber)."""
        return [self.sasl_password, self.ssl_key_password]

    @model_validator(mode="after")
    def _security_consistent(self) -> KafkaSource:
        protocol = self.security_protocol
        sasl = protocol.startswith("SASL_")
        if sasl and (self.sasl_mechanism is None or self.sasl_username is None or self.sasl_password is None):
            raise ValueError(f"{protocol} needs 'sasl_mechanism', 'sasl_username' and 'sasl_password'")
        if not sasl and self.sasl_mechanism is not None:
            raise ValueError(f"'sasl_mechanism' needs security_protocol SASL_SSL (or SASL_PLAINTEXT), not {protocol}")
        ssl_files = (self.ssl_ca_file, self.ssl_cert_file, self.ssl_key_file, self.ssl_key_password)
        if any(f is not None for f in ssl_files) and not protocol.endswith("SSL"):
            raise ValueError(f"ssl_* settings need security_protocol SSL or SASL_SSL, not {protocol}")
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise ValueError("'ssl_cert_file' and 'ssl_key_file' go together")
        return self


def _source_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("type")
        return kind if isinstance(kind, str) else None
    return getattr(value, "type", None)


SourceConfig = Annotated[
    Annotated[RabbitMQSource, Tag("rabbitmq")] | Annotated[KafkaSource, Tag("kafka")],
    Discriminator(
        _source_kind,
        custom_error_type="source_type",
        custom_error_message="every source needs 'type: rabbitmq' or 'type: kafka'",
    ),
]


# --------------------------------------------------------------------------- routes


class RabbitMQMode(StrEnum):
    """How a RabbitMQ route receives its messages."""

    SHADOW = "shadow"
    QUEUE = "queue"
    STREAM = "stream"


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
    stream_offset: Annotated[str | int, BeforeValidator(_not_a_bool)] = Field(
        "next",
        description="Where a stream route starts: first | last | next | an offset | an ISO timestamp.",
    )

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
    if not _HEADER_TOKEN.match(name):
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

    @property
    def subject_template(self) -> SubjectTemplate:
        return SubjectTemplate.parse(self.to)

    @property
    def source_kind(self) -> Literal["rabbitmq", "kafka"]:
        return "kafka" if isinstance(self.from_, FromKafka) else "rabbitmq"

    @model_validator(mode="after")
    def _fields_fit_the_source(self) -> RouteConfig:
        used = set(self.subject_template.fields)
        if "{" in self.msg_id:
            used |= TextTemplate.parse(self.msg_id).fields
        foreign = KAFKA_FIELDS if self.source_kind == "rabbitmq" else RABBITMQ_FIELDS
        if isinstance(self.from_, FromRabbitMQ) and self.from_.effective_mode is RabbitMQMode.STREAM:
            foreign = foreign - {"offset"}  # a stream queue's offset
        wrong = sorted(used & foreign)
        if wrong:
            names = ", ".join("{" + name + "}" for name in wrong)
            raise ValueError(f"{names} cannot be used in a {self.source_kind} route")
        strategy_kind = {
            MsgIdStrategy.KAFKA_OFFSET.value: "kafka",
            MsgIdStrategy.MESSAGE_ID.value: "rabbitmq",
            MsgIdStrategy.STREAM_OFFSET.value: "rabbitmq",
            MsgIdStrategy.CONTENT_HASH.value: "rabbitmq",
        }.get(self.msg_id)
        if strategy_kind is not None and strategy_kind != self.source_kind:
            raise ValueError(f"msg_id '{self.msg_id}' is for {strategy_kind} routes")
        if "{" in self.msg_id:
            self._msg_id_template_tells_messages_apart()
        return self

    def _msg_id_template_tells_messages_apart(self) -> None:
        """A template whose every part can repeat (`{topic}`, `{key}`, `{exchange}`) gives many
        messages one id; JetStream stores the first and drops the rest as duplicates."""
        fields = TextTemplate.parse(self.msg_id).fields
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

    @model_validator(mode="after")
    def _unique_route_names(self) -> ServiceConfig:
        seen: set[str] = set()
        for name in [route.name for route in self.routes] + [route.name for route in self.reverse]:
            if name in seen:
                raise ValueError(f"two routes are named '{name}'")
            seen.add(name)
        return self


# --------------------------------------------------------------------------- file


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

    version: Annotated[Literal[1], BeforeValidator(_not_a_bool)] = Field(1, description="Mapping-file format version.")
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
        return problems

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
