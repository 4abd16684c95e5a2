"""A route's common mapping compiled to text templates of the HPUB header block.

Why: the general `CompiledRoute.map` builds every message's headers as a dict (metadata, source
headers, route, Msg-Id), `decide` walks it to size the message and the publisher walks it again
to encode the NATS/1.0 block nats-py would write: about 3 µs of a Kafka record's 20. Most of
that block is the same for every message of a route — the status line, the header names,
`Bridge-Route: service/route` — and much of the rest for every message of a lane (a Kafka
record's topic and partition, its Msg-Id up to the offset). `FastMap` keeps those parts as text
made once, joins only what changes and encodes once; the result is an `EncodedHeaders`, whose
block the publisher sends as it is.

It takes only what it can make exactly as the general path does, byte for byte and header for
header (tests/unit/test_fast_map.py holds the two to each other, and to nats-py's encoder):
routes without `headers.set` or renames, values the wire carries unchanged. For anything else
— a route of another shape, a Kafka topic nats-py would alter, a property of an unusual type,
two Bridge-Base64-Headers lists to merge — `map` returns None and the general path runs.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from bridge.config.routes import RouteConfig
from bridge.headers import BASE64_HEADERS, encode_headers, encode_value, stable_id
from bridge.message import AmqpOrigin, EncodedHeaders, KafkaOrigin, OutboundMessage, SourceMessage
from bridge.routing import SubjectTemplate
from bridge.routing.subject_shape import SubjectShape

# AMQP basic properties in the order RabbitMQ lists them, with their header names.
AMQP_PROPERTY_HEADERS = {
    "content_type": "Amqp-Content-Type",
    "content_encoding": "Amqp-Content-Encoding",
    "delivery_mode": "Amqp-Delivery-Mode",
    "priority": "Amqp-Priority",
    "correlation_id": "Amqp-Correlation-Id",
    "reply_to": "Amqp-Reply-To",
    "expiration": "Amqp-Expiration",
    "message_id": "Amqp-Message-Id",
    "timestamp": "Amqp-Timestamp",
    "type": "Amqp-Type",
    "user_id": "Amqp-User-Id",
    "app_id": "Amqp-App-Id",
}
_PROPERTY_LINES = tuple((prop, header + ": ") for prop, header in AMQP_PROPERTY_HEADERS.items())
_STATUS = "NATS/1.0\r\n"
_LANES_MAX = 4096  # Kafka lanes kept per route; past it a lane's head is made per message


def metadata_headers(message: SourceMessage) -> dict[str, str]:
    """The bridge's own headers describing where a message came from (the general path's)."""
    origin = message.origin
    headers: dict[str, str]
    if isinstance(origin, KafkaOrigin):
        headers = {
            "Kafka-Topic": origin.topic,
            "Kafka-Partition": str(origin.partition),
            "Kafka-Offset": str(origin.offset),
        }
        if origin.timestamp_ms is not None:
            headers["Kafka-Timestamp"] = str(origin.timestamp_ms)
        if origin.key is not None:
            text, form = encode_value(origin.key)
            headers["Kafka-Key" if form == "text" else "Kafka-Key-Base64"] = text
        if message.body is None:
            headers["Kafka-Tombstone"] = "true"
        return headers
    texts: dict[str, Any] = {"Amqp-Exchange": origin.exchange, "Amqp-Routing-Key": origin.routing_key}
    if origin.stream_offset is not None:
        texts["Amqp-Queue"] = origin.queue or ""
    for prop, header in AMQP_PROPERTY_HEADERS.items():
        value = origin.properties.get(prop)
        if value is not None:
            texts[header] = value
    headers = {}
    encoded: list[str] = []
    for header, value in texts.items():
        text, base64_form = property_text(value)
        headers[header] = text
        if base64_form:
            encoded.append(header)  # a routing key or message_id with line breaks or edge spaces
    if origin.stream_offset is not None:
        headers["Amqp-Stream-Offset"] = str(origin.stream_offset)
    if encoded:
        headers[BASE64_HEADERS] = ",".join(encoded)
    return headers


def property_text(value: Any) -> tuple[str, bool]:
    """An AMQP basic property as header text (timestamps as epoch seconds, as AMQP sends them),
    and whether it is base64 (text that would not survive the wire as it is)."""
    if isinstance(value, datetime):
        return str(calendar.timegm(value.utctimetuple())), False
    if isinstance(value, str | bytes):
        text, form = encode_value(value)
        return text, form == "base64"
    return str(value), False


def plain(value: str) -> bool:
    """Whether nats-py writes `value` as it is: it strips a header value and makes CR and LF spaces."""
    return "\r" not in value and "\n" not in value and value.strip() == value


class FastMap:
    """One route's mapping of the common shapes; `map` gives the message, or None (the general path)."""

    __slots__ = ("_copy", "_drop", "_heads", "_id_prefix", "_kafka_ids", "_lanes", "_msg_id", "_subject", "_tail")

    def __init__(
        self,
        tail: str,
        subject: SubjectShape | str,
        msg_id: Callable[[SourceMessage], str],
        kafka_id_prefix: str | None,
        config: RouteConfig,
    ) -> None:
        self._tail = tail  # "Bridge-Route: service/route\r\nNats-Msg-Id: "
        self._subject = subject  # a constant subject, or the shape that renders it
        self._msg_id = msg_id  # the route's own Msg-Id, raising MappingError as map does
        # `service/route/[cluster/]` when a Kafka record's Msg-Id is its coordinates (kafka-offset,
        # or auto), and that prefix needs no escaping; None: the route's msg_id per message.
        self._id_prefix = kafka_id_prefix
        rules = config.headers
        self._copy = rules.copy_source
        self._drop = frozenset(rules.drop)
        # Per Kafka lane (topic, partition): the block up to the offset's value, and the Msg-Id
        # up to the offset (None: made per message). None for a lane whose topic is not plain.
        self._lanes: dict[tuple[str, int], tuple[str, str | None] | None] = {}
        # Per (exchange, routing key) of a queue or exchange route: the block's first lines, when
        # neither needs base64 (a stream queue's deliveries add their queue and offset).
        self._heads: dict[tuple[str, str], str] = {}

    @classmethod
    def of(
        cls,
        key: str,
        config: RouteConfig,
        subject: SubjectTemplate,
        msg_id: Callable[[SourceMessage], str],
        kafka_id_prefix: str | None,
    ) -> FastMap | None:
        """The fast mapping of a route, or None when its headers are not of a shape it makes."""
        if config.header_templates or config.headers.rename or not plain(key):
            return None
        shape: SubjectShape | str | None = subject.constant or SubjectShape.of(subject)
        if shape is None:
            return None
        return cls(f"Bridge-Route: {key}\r\nNats-Msg-Id: ", shape, msg_id, kafka_id_prefix, config)

    def map(self, message: SourceMessage) -> OutboundMessage | None:
        """`message` mapped, its headers encoded; None: the general path maps it (or says why not)."""
        shape = self._subject
        origin = message.origin
        subject = shape if isinstance(shape, str) else shape.render(origin)
        if subject is None:
            return None
        parts = self._kafka(message, origin) if isinstance(origin, KafkaOrigin) else self._amqp(message, origin)
        if parts is None:
            return None
        msg_id = parts.pop()
        if self._copy and message.headers:
            source = encode_headers(message.headers, drop=self._drop)
            if BASE64_HEADERS in source and any(part is _BASE64_LINE for part in parts):
                return None  # two lists of base64 names, which the general path merges
            for name, value in source.items():
                parts += (name, ": ", value, "\r\n")
        parts += (self._tail, msg_id, "\r\n\r\n")
        try:
            block = "".join(parts).encode()
        except UnicodeEncodeError:
            return None  # text that is no text (a lone surrogate): the general path's business
        return OutboundMessage(subject, message.body or b"", msg_id, EncodedHeaders(block))

    def _kafka(self, message: SourceMessage, origin: KafkaOrigin) -> list[str] | None:
        """The Kafka metadata lines, and last the Msg-Id."""
        lane = (origin.topic, origin.partition)
        known = self._lanes.get(lane, _UNKNOWN)
        if known is _UNKNOWN:
            known = self._lane(origin)
        if known is None:
            return None
        head, id_head = known
        offset = str(origin.offset)
        parts = [head, offset, "\r\n"]
        if origin.timestamp_ms is not None:
            parts += ("Kafka-Timestamp: ", str(origin.timestamp_ms), "\r\n")
        if origin.key is not None:
            text, form = encode_value(origin.key)
            parts += ("Kafka-Key: " if form == "text" else "Kafka-Key-Base64: ", text, "\r\n")
        if message.body is None:
            parts.append("Kafka-Tombstone: true\r\n")
        parts.append(self._msg_id(message) if id_head is None else id_head + offset)
        return parts

    def _lane(self, origin: KafkaOrigin) -> tuple[str, str | None] | None:
        topic, partition = origin.topic, origin.partition
        known: tuple[str, str | None] | None = None
        if plain(topic):
            head = f"{_STATUS}Kafka-Topic: {topic}\r\nKafka-Partition: {partition}\r\nKafka-Offset: "
            id_head = None
            if self._id_prefix is not None:
                id_head = f"{self._id_prefix}{topic}/{partition}/"
                if stable_id(id_head + "0") != id_head + "0":
                    id_head = None  # an id stable_id escapes: made by the route per message
            known = (head, id_head)
        if len(self._lanes) < _LANES_MAX:
            self._lanes[(topic, partition)] = known
        return known

    def _amqp(self, message: SourceMessage, origin: AmqpOrigin) -> list[str] | None:
        """The AMQP metadata lines (Bridge-Base64-Headers last when there is one), and last the Msg-Id."""
        encoded: list[str] = []
        stream_offset = origin.stream_offset
        where = (origin.exchange, origin.routing_key)
        head = self._heads.get(where) if stream_offset is None else None
        if head is not None:
            parts = [head]
        else:
            parts = [_STATUS]
            if not _property_lines(parts, encoded, "Amqp-Exchange: ", origin.exchange):
                return None
            if not _property_lines(parts, encoded, "Amqp-Routing-Key: ", origin.routing_key):
                return None
            if stream_offset is not None:
                if not _property_lines(parts, encoded, "Amqp-Queue: ", origin.queue or ""):
                    return None
            elif not encoded and len(self._heads) < _HEADS_MAX:
                self._heads[where] = "".join(parts)  # text as it is: the same lines every time
        properties: Mapping[str, Any] = origin.properties
        for prop, line in _present_properties(properties):
            value = properties[prop]
            if value is not None and not _property_lines(parts, encoded, line, value):
                return None
        if stream_offset is not None:
            parts += ("Amqp-Stream-Offset: ", str(stream_offset), "\r\n")
        if encoded:
            parts += (_BASE64_LINE, ",".join(encoded), "\r\n")
        parts.append(self._msg_id(message))
        return parts


def _present_properties(properties: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The basic properties `properties` holds, with their header lines, in RabbitMQ's order (the
    order `metadata_headers` writes them in): a delivery visits its two or three, not all twelve.
    Kept per set of names as the dict lists them; a route sees few such sets."""
    names = tuple(properties)
    present = _PRESENT.get(names)
    if present is None:
        present = tuple((prop, line) for prop, line in _PROPERTY_LINES if prop in properties)
        if len(_PRESENT) < _PRESENT_MAX:
            _PRESENT[names] = present
    return present


_PRESENT: dict[tuple[str, ...], tuple[tuple[str, str], ...]] = {}
_PRESENT_MAX = 1024
_HEADS_MAX = 1024  # (exchange, routing key) heads kept per route; past it each is made again

_UNKNOWN: Any = object()
_BASE64_LINE = BASE64_HEADERS + ": "


def _property_lines(parts: list[str], encoded: list[str], line: str, value: Any) -> bool:
    """Add `line` (`Name: `) with `value` as `metadata_headers` writes it; False when the text is
    one nats-py would alter (a property of a type that is neither text, a number nor a time)."""
    kind = type(value)
    if kind is str and value.isprintable() and value.strip() == value:
        parts += (line, value, "\r\n")  # what property_text gives text that is wire-stable
        return True
    if kind is int:
        parts += (line, str(value), "\r\n")
        return True
    text, base64_form = property_text(value)
    if base64_form:
        encoded.append(line[:-2])
    elif not isinstance(value, str | bytes | int | datetime) and not plain(text):
        return False
    parts += (line, text, "\r\n")
    return True
