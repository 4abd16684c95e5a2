"""(2) MAP: a source message to the JetStream message it becomes — a pure function.

`CompiledRoute` is built once per route from the mapping file (templates parsed, header
rules resolved) so that mapping one message is a handful of dictionary operations.
Nothing here touches a connection: the same code serves the live pipeline, `explain`
and dry-runs, which is what lets `explain` promise exactly what `run` will do.

Headers the bridge adds (the naming scheme, also in README.md):

- Kafka: `Kafka-Topic`, `Kafka-Partition`, `Kafka-Offset`, `Kafka-Timestamp` (ms since the
  epoch), `Kafka-Key` (the key as text) or `Kafka-Key-Base64` (a key that is not clean
  UTF-8 text), `Kafka-Tombstone: true` for a record whose value is null.
- RabbitMQ: `Amqp-Exchange`, `Amqp-Routing-Key`, `Amqp-Queue` and `Amqp-Stream-Offset` (stream
  queues), and each basic property present as `Amqp-<Property>` (`Amqp-Content-Type`,
  `Amqp-Message-Id`, `Amqp-Timestamp` in epoch seconds, ...).
- Every message: `Bridge-Route` (`service/route`), the route that stored it. Two routes may
  store into one stream; a checkpoint scan and `verify` tell their copies apart by it.
- Source headers: see bridge.headers (names kept or `Source-` escaped; values as text,
  base64 or typed JSON, listed in `Bridge-Base64-Headers` / `Bridge-Typed-Headers`).
"""

from __future__ import annotations

import base64
import calendar
import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from bridge.config.model import BridgeConfig
from bridge.config.routes import FromRabbitMQ, MsgIdStrategy, RabbitMQMode, RouteConfig
from bridge.fast_map import FastMap, metadata_headers
from bridge.headers import BASE64_HEADERS, encode_headers, encode_value, merge_headers, stable_id
from bridge.message import AmqpOrigin, KafkaOrigin, OutboundMessage, SourceMessage
from bridge.routing import SubjectTemplate, TemplateContext, TemplateRenderError, TextTemplate
from bridge.routing.text_shape import TextShape

MSG_ID_HEADER = "Nats-Msg-Id"
ROUTE_NAME_HEADER = "Bridge-Route"

# Headers RabbitMQ itself adds to a message it delivers again or dead-letters: they are not
# part of what the producer sent, so the content hash leaves them out (a redelivery from a
# quorum queue carries x-delivery-count; 4.x adds x-acquired-count; dead lettering adds x-death
# and the x-first-/x-last-death-* summaries).
BROKER_ADDED_HEADERS = frozenset({"x-delivery-count", "x-acquired-count", "x-death"})
BROKER_ADDED_HEADER_PREFIXES = ("x-first-death-", "x-last-death-")


class MappingError(Exception):
    """A message cannot be mapped as its route says; the reason goes to the dead-letter subject."""


@dataclass(frozen=True, slots=True)
class MsgIdChoice:
    """Which Msg-Id strategy applies to a message, and why — `explain` prints both."""

    strategy: str
    reason: str


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A route from the mapping file, prepared for mapping many messages quickly."""

    service: str
    config: RouteConfig
    subject: SubjectTemplate
    msg_id_template: TextTemplate | None
    header_templates: tuple[tuple[str, TextTemplate], ...]
    cluster_name: str | None = None
    needs_headers: bool = False  # whether any template reads {header:NAME}
    needs_hash: bool = False  # whether any template reads {content_hash}
    needs_auto: bool = False  # whether any template reads {auto}
    # The strategy `msg_id` uses for every message when the route names one (not auto); with
    # auto it is chosen per message (a Kafka record: its offset, at once).
    fixed_strategy: str | None = None
    # What starts every Msg-Id a strategy makes (`service/route/`): JetStream de-duplicates per
    # stream, so two routes storing copies of one source message into one stream must never
    # give them one id, or the second copy is dropped as a duplicate. Made once, used per message.
    id_prefix: str = field(init=False)
    # The common shapes, as text templates of the header block (bridge.fast_map); None: none fits.
    fast: FastMap | None = field(init=False, compare=False)
    stream_queue: bool = field(init=False, compare=False)  # a RabbitMQ stream queue's route
    # The Msg-Id template read straight from the origin (bridge.routing.text_shape); None: render it.
    msg_id_shape: TextShape | None = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id_prefix", f"{self.service}/{self.config.name}/")
        subscription = self.config.from_
        stream_queue = isinstance(subscription, FromRabbitMQ) and subscription.effective_mode is RabbitMQMode.STREAM
        object.__setattr__(self, "stream_queue", stream_queue)
        kafka_ids = None
        if self.msg_id_template is None and self.fixed_strategy in (None, _KAFKA_OFFSET):
            kafka_ids = self.id_prefix + (f"{self.cluster_name}/" if self.cluster_name else "")
        shape = TextShape.of(self.msg_id_template) if self.msg_id_template is not None else None
        object.__setattr__(self, "msg_id_shape", shape)
        fast = FastMap.of(self.key, self.config, self.subject, self._checked_msg_id, kafka_ids)
        object.__setattr__(self, "fast", fast)

    @classmethod
    def compile(cls, service: str, route: RouteConfig, cluster_name: str | None = None) -> CompiledRoute:
        msg_id_template = route.msg_id_template
        headers = route.header_templates
        fields = set(route.subject_template.fields)
        for template in (msg_id_template, *(template for _, template in headers)):
            if template is not None:
                fields |= template.fields
        needs_headers = any(field.startswith("header:") for field in fields)
        return cls(
            service,
            route,
            route.subject_template,
            msg_id_template,
            headers,
            cluster_name,
            needs_headers,
            needs_hash="content_hash" in fields,
            needs_auto="auto" in fields,
            fixed_strategy=None if msg_id_template is not None or route.msg_id == _AUTO else route.msg_id,
        )

    @classmethod
    def of(cls, config: BridgeConfig, service: str, route: RouteConfig) -> CompiledRoute:
        """`route` of `config` compiled, its Msg-Ids qualified as its source wants."""
        return cls.compile(service, route, config.sources[route.source].msg_id_cluster)

    @property
    def key(self) -> str:
        """`service/route`, the name metrics, logs and queue names use."""
        return f"{self.service}/{self.config.name}"

    def map(self, message: SourceMessage) -> OutboundMessage:
        """The JetStream message for `message`; raises MappingError when it cannot be built."""
        fast = self.fast
        if fast is not None and (outbound := fast.map(message)) is not None:
            return outbound
        context = self.context(message)
        try:
            subject = self.subject.render(context)
            msg_id = self.msg_id(message, context)
            extra = {name: encode_value(template.render(context)) for name, template in self.header_templates}
        except TemplateRenderError as error:
            raise MappingError(str(error)) from None
        if not msg_id:
            raise MappingError(f"the Msg-Id template '{self.config.msg_id}' produced an empty id")
        headers = self.headers_for(message)
        if extra:
            set_headers = {name: text for name, (text, _) in extra.items()}
            encoded = [name for name, (_, form) in extra.items() if form == "base64"]
            if encoded:
                set_headers[BASE64_HEADERS] = ",".join(encoded)
            merge_headers(headers, set_headers)
        headers[ROUTE_NAME_HEADER] = self.key
        headers[MSG_ID_HEADER] = msg_id
        return OutboundMessage(subject=subject, payload=message.body or b"", msg_id=msg_id, headers=headers)

    def _checked_msg_id(self, message: SourceMessage) -> str:
        """`msg_id` as `map` takes it: a template that cannot render, or renders nothing, is a MappingError."""
        try:
            msg_id = self.msg_id(message)
        except TemplateRenderError as error:
            raise MappingError(str(error)) from None
        if not msg_id:
            raise MappingError(f"the Msg-Id template '{self.config.msg_id}' produced an empty id")
        return msg_id

    def context(self, message: SourceMessage) -> TemplateContext:
        """The values this route's templates read from `message` (and only those that cost)."""
        context = template_context(message, with_headers=self.needs_headers, with_hash=self.needs_hash)
        if self.needs_auto:
            strategy = self._auto_choice(message).strategy
            try:
                auto = _MSG_ID_BUILDERS[strategy](self, message)
            except MappingError:
                return context  # {auto} then renders as missing, with the template's own error
            context = dataclasses.replace(context, auto=auto)
        return context

    def msg_id_choice(self, message: SourceMessage) -> MsgIdChoice:
        """The strategy `msg_id` will use for `message` (with `auto` resolved)."""
        if self.msg_id_template is not None:
            return MsgIdChoice("template", f"the route's template '{self.config.msg_id}'")
        strategy = self.config.msg_id
        if strategy != MsgIdStrategy.AUTO.value:
            return MsgIdChoice(strategy, "set by the route")
        return self._auto_choice(message)

    def _auto_choice(self, message: SourceMessage) -> MsgIdChoice:
        origin = message.origin
        if isinstance(origin, KafkaOrigin):
            return MsgIdChoice(MsgIdStrategy.KAFKA_OFFSET.value, "Kafka records are identified by their offsets")
        if self.stream_queue:
            return MsgIdChoice(MsgIdStrategy.STREAM_OFFSET.value, "stream queues give every message an offset")
        if origin.properties.get("message_id"):
            return MsgIdChoice(MsgIdStrategy.MESSAGE_ID.value, "the producer set the AMQP message_id property")
        if is_dead_lettered(message):
            return MsgIdChoice(
                MsgIdStrategy.CONTENT_HASH.value,
                "no message_id property: a hash of exchange, routing key, properties, headers and body; "
                "this is a dead-lettered retry (x-death), the same message as its first delivery: the "
                "headers RabbitMQ added are left out, so inside the duplicate window it is stored once",
            )
        return MsgIdChoice(
            MsgIdStrategy.CONTENT_HASH.value,
            "no message_id property: a hash of exchange, routing key, properties, headers and body, "
            "without what RabbitMQ adds on redelivery (two identical messages inside the duplicate "
            "window collapse into one)",
        )

    def msg_id(self, message: SourceMessage, context: TemplateContext | None = None) -> str:
        """The deterministic Nats-Msg-Id: the same source message always gets the same id, and
        different ones different ids, as JetStream receives them (bridge.headers.stable_id)."""
        if self.msg_id_template is not None:
            shape = self.msg_id_shape
            if shape is not None and context is None:
                text = shape.render(message.origin)
                if text is not None:
                    return stable_id(text)
            return stable_id(self.msg_id_template.render(context or self.context(message)))
        strategy = self.fixed_strategy
        if strategy is None:
            strategy = self._auto_strategy(message)
        return stable_id(self.id_prefix + _MSG_ID_BUILDERS[strategy](self, message))

    def _auto_strategy(self, message: SourceMessage) -> str:
        """`_auto_choice(message).strategy` without building its explanation: this runs per message."""
        origin = message.origin
        if isinstance(origin, KafkaOrigin):
            return _KAFKA_OFFSET
        if self.stream_queue:
            return MsgIdStrategy.STREAM_OFFSET.value
        if origin.properties.get("message_id"):
            return MsgIdStrategy.MESSAGE_ID.value
        return MsgIdStrategy.CONTENT_HASH.value

    def headers_for(self, message: SourceMessage) -> dict[str, str]:
        """Bridge metadata headers plus the source headers, per the route's header rules."""
        headers = metadata_headers(message)
        rules = self.config.headers
        if rules.copy_source and message.headers:
            merge_headers(headers, encode_headers(message.headers, rename=rules.rename, drop=frozenset(rules.drop)))
        return headers


def template_context(message: SourceMessage, *, with_headers: bool = True, with_hash: bool = False) -> TemplateContext:
    """The values templates may draw on, taken from the message's origin and headers.

    Decoding headers and hashing the body cost time per message, so each is skipped when no
    template reads it.
    """
    headers = {name: encode_value(value)[0] for name, value in message.headers} if with_headers else {}
    origin = message.origin
    if isinstance(origin, KafkaOrigin):
        return TemplateContext(
            topic=origin.topic,
            partition=origin.partition,
            key=origin.key,
            offset=origin.offset,
            timestamp=origin.timestamp_ms,
            headers=headers,
        )
    message_id = origin.properties.get("message_id")
    return TemplateContext(
        exchange=origin.exchange,
        queue=origin.queue,
        routing_key=origin.routing_key,
        offset=origin.stream_offset,
        message_id=str(message_id) if message_id is not None else None,
        timestamp=_epoch_seconds(origin.properties.get("timestamp")),
        headers=headers,
        content_hash=content_hash(message) if with_hash else None,
    )


def _epoch_seconds(value: object) -> int | None:
    """The AMQP timestamp property (pamqp gives a datetime; a replay may give a number)."""
    if isinstance(value, datetime):
        return calendar.timegm(value.utctimetuple())  # as the Amqp-Timestamp header has it
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return None


def _kafka_offset_id(route: CompiledRoute, message: SourceMessage) -> str:
    origin = message.origin
    if not isinstance(origin, KafkaOrigin):
        raise MappingError("msg_id kafka-offset needs a Kafka message")
    coordinates = f"{origin.topic}/{origin.partition}/{origin.offset}"
    return f"{route.cluster_name}/{coordinates}" if route.cluster_name else coordinates


def _message_id(_route: CompiledRoute, message: SourceMessage) -> str:
    origin = message.origin
    value = origin.properties.get("message_id") if isinstance(origin, AmqpOrigin) else None
    if not value:
        raise MappingError("msg_id message-id: the message has no AMQP message_id property")
    return str(value)


def _stream_offset_id(_route: CompiledRoute, message: SourceMessage) -> str:
    origin = message.origin
    if not isinstance(origin, AmqpOrigin) or origin.stream_offset is None:
        raise MappingError("msg_id stream-offset: the message did not come from a stream queue")
    return f"{origin.queue}/{origin.stream_offset}"


def _content_hash_id(_route: CompiledRoute, message: SourceMessage) -> str:
    if not isinstance(message.origin, AmqpOrigin):
        raise MappingError("msg_id content-hash needs a RabbitMQ message")
    return content_hash(message)


def content_hash(message: SourceMessage) -> str:
    """A digest of what the producer sent: the same message, the same hash.

    Left out: the redelivered flag and the headers RabbitMQ adds when it delivers a message
    again or dead-letters it (BROKER_ADDED_HEADERS), so a redelivery after a crash hashes like
    its first delivery and is de-duplicated. A message that comes back through a dead-letter
    exchange (a retry loop) is taken for the same message too — as it is when it carries a
    message_id — and since dead lettering drops the `expiration` property (a delivery hint,
    not content), that is always left out.
    """
    origin = message.origin
    headers = [(name, value) for name, value in message.headers if not _broker_added(name)]
    if isinstance(origin, AmqpOrigin):
        properties = {name: value for name, value in origin.properties.items() if name != "expiration"}
        described: dict[str, object] = {
            "exchange": origin.exchange,
            "routing_key": origin.routing_key,
            "properties": properties,
            "headers": headers,
        }
    else:
        described = {"topic": origin.topic, "key": origin.key, "headers": headers}
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(described, sort_keys=True, default=_json_default).encode("utf-8"))
    digest.update(b"\0")
    digest.update(message.body or b"")
    return digest.hexdigest()


def _broker_added(name: str) -> bool:
    lowered = name.lower()
    return lowered in BROKER_ADDED_HEADERS or lowered.startswith(BROKER_ADDED_HEADER_PREFIXES)


def is_dead_lettered(message: SourceMessage) -> bool:
    """Whether RabbitMQ dead-lettered this message at least once on its way here (x-death)."""
    return isinstance(message.origin, AmqpOrigin) and any(name.lower() == "x-death" for name, _ in message.headers)


def _json_default(value: object) -> object:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"b64": base64.b64encode(bytes(value)).decode("ascii")}
    return {"repr": repr(value)}


_AUTO = MsgIdStrategy.AUTO.value
_KAFKA_OFFSET = MsgIdStrategy.KAFKA_OFFSET.value
_MSG_ID_BUILDERS: Mapping[str, Callable[[CompiledRoute, SourceMessage], str]] = {
    MsgIdStrategy.KAFKA_OFFSET.value: _kafka_offset_id,
    MsgIdStrategy.MESSAGE_ID.value: _message_id,
    MsgIdStrategy.STREAM_OFFSET.value: _stream_offset_id,
    MsgIdStrategy.CONTENT_HASH.value: _content_hash_id,
}
