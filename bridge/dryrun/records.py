"""The input of `dry-run --input FILE.jsonl`: recorded messages, one JSON object a line.

The input is JSON Lines, one object per line (blank lines are ignored)::

    {"kafka": {"topic": "orders", "partition": 0, "offset": 17,
               "key": "text" | {"base64": "..."} | null,
               "value": "text" | {"base64": "..."} | null,          (null: a tombstone)
               "headers": [["name", "text" | {"base64": "..."}], ...],
               "timestamp_ms": 1718000000000}}                       (optional)
    {"amqp": {"exchange": "orders", "routing_key": "order.eu.created",
              "properties": {"content_type": "application/json", "message_id": "m-1", ...},
              "headers": {"name": <any JSON value, or {"base64": "..."} for bytes>},
              "body": "text" | {"base64": "..."}}}

`partition`/`offset` default to 0; `properties` uses aio-pika's attribute names; an AMQP
message may give `"queue"` instead of (or beside) `"exchange"`, as `explain --queue` does.
A line that does not fit this shape is an error naming the file and line; the other lines
are still replayed, so one bad record does not hide what the rest would do. Each line is read
within bridge.config.limits' bounds: nested at most MAX_JSON_DEPTH levels, plain JSON (no NaN,
no lone surrogate such as `"\\ud800"`, which no output could carry), and at most the line size
limit (8 MiB, or 3 x `--max-payload` if larger; `NATS_BRIDGE_MAX_INPUT_BYTES` sets it). A line
over the size limit ends the replay there, since what follows it cannot be told apart from it
(`/dev/zero` has no line breaks at all).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.config.limits import MAX_INPUT_LINE_BYTES, loads_json, size_limit, too_large
from bridge.decide import DEFAULT_MAX_PAYLOAD


class ReplayInputError(ValueError):
    """One line of the input file that is not a recorded message (the text names the problem)."""


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """A recorded Kafka record, with bytes where the file had text or base64."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int | None


@dataclass(frozen=True, slots=True)
class AmqpRecord:
    """A recorded RabbitMQ message."""

    exchange: str | None
    routing_key: str
    queue: str | None
    properties: Mapping[str, Any]
    headers: Mapping[str, Any]
    body: bytes


def _required_bytes(value: object, what: str) -> bytes:
    """Text (as UTF-8) or {"base64": "..."} as bytes."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and set(value) == {"base64"} and isinstance(value["base64"], str):
        try:
            return base64.b64decode(value["base64"], validate=True)
        except binascii.Error as error:
            raise ReplayInputError(f"{what}: invalid base64 ({error})") from None
    raise ReplayInputError(f'{what} must be text or {{"base64": "..."}}, not {json.dumps(value)[:60]}')


def _bytes(value: object, what: str) -> bytes | None:
    """As _required_bytes, and null stays None (a tombstone value, a record without a key)."""
    return None if value is None else _required_bytes(value, what)


def _int(fields: Mapping[str, Any], name: str, *, default: int | None) -> int | None:
    value = fields.get(name, default)
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise ReplayInputError(f"'{name}' must be a non-negative integer, not {json.dumps(value)}")


def _only(fields: Mapping[str, Any], kind: str, allowed: set[str]) -> None:
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ReplayInputError(
            f"unknown key(s) in '{kind}': {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})"
        )


def _kafka_record(fields: Mapping[str, Any]) -> KafkaRecord:
    _only(fields, "kafka", {"topic", "partition", "offset", "key", "value", "headers", "timestamp_ms"})
    topic = fields.get("topic")
    if not isinstance(topic, str) or not topic:
        raise ReplayInputError("'kafka' needs a 'topic' (text)")
    raw_headers = fields.get("headers", [])
    if not isinstance(raw_headers, list):
        raise ReplayInputError("'headers' of a Kafka record must be a list of [name, value] pairs")
    headers = []
    for index, pair in enumerate(raw_headers):
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            raise ReplayInputError(f"headers[{index}] must be [name, value], not {json.dumps(pair)[:60]}")
        headers.append((pair[0], _required_bytes(pair[1], f"headers[{index}] value")))
    return KafkaRecord(
        topic=topic,
        partition=_int(fields, "partition", default=0) or 0,
        offset=_int(fields, "offset", default=0) or 0,
        key=_bytes(fields.get("key"), "'key'"),
        value=_bytes(fields.get("value", ""), "'value'"),
        headers=tuple(headers),
        timestamp_ms=_int(fields, "timestamp_ms", default=None),
    )


def _header_value(value: object) -> object:
    """AMQP header values stay as JSON gave them, except {"base64": ...}, which becomes bytes."""
    if isinstance(value, dict) and set(value) == {"base64"}:
        return _required_bytes(value, "header value")
    return value


def _amqp_record(fields: Mapping[str, Any]) -> AmqpRecord:
    _only(fields, "amqp", {"exchange", "routing_key", "queue", "properties", "headers", "body"})
    exchange, queue, routing_key = fields.get("exchange"), fields.get("queue"), fields.get("routing_key")
    if exchange is None and queue is None:
        raise ReplayInputError("'amqp' needs an 'exchange' (or a 'queue')")
    for name, value in (("exchange", exchange), ("queue", queue)):
        if value is not None and not isinstance(value, str):
            raise ReplayInputError(f"'{name}' must be text")
    if not isinstance(routing_key, str):
        raise ReplayInputError("'amqp' needs a 'routing_key' (text; '' is allowed)")
    properties, headers = fields.get("properties", {}), fields.get("headers", {})
    if not isinstance(properties, dict) or not isinstance(headers, dict):
        raise ReplayInputError("'properties' and 'headers' must be JSON objects")
    return AmqpRecord(
        exchange=exchange,
        routing_key=routing_key,
        queue=queue,
        properties=properties,
        headers={name: _header_value(value) for name, value in headers.items()},
        body=_required_bytes(fields.get("body", ""), "'body'"),
    )


def parse_line(text: str) -> KafkaRecord | AmqpRecord:
    """One JSONL line as a record; ReplayInputError says what is wrong with it."""
    try:
        document = loads_json(text)
    except ValueError as error:
        raise ReplayInputError(str(error)) from None
    if not isinstance(document, dict) or len(document) != 1 or next(iter(document)) not in ("kafka", "amqp"):
        raise ReplayInputError('expected one object {"kafka": {...}} or {"amqp": {...}}')
    kind, fields = next(iter(document.items()))
    if not isinstance(fields, dict):
        raise ReplayInputError(f"'{kind}' must be a JSON object")
    return _kafka_record(fields) if kind == "kafka" else _amqp_record(fields)


def line_limit(max_payload: int = DEFAULT_MAX_PAYLOAD) -> int:
    """Longest input line read: room for a `max_payload` message in base64 with its headers,
    at least MAX_INPUT_LINE_BYTES; NATS_BRIDGE_MAX_INPUT_BYTES replaces it (InputLimitError if bad)."""
    return size_limit(max(MAX_INPUT_LINE_BYTES, 3 * max_payload))


def read_records(
    path: Path, limit: int = MAX_INPUT_LINE_BYTES
) -> Iterator[tuple[int, KafkaRecord | AmqpRecord | ReplayInputError]]:
    """(line number, record or the error for that line); OSError when the file cannot be read.

    A line longer than `limit` bytes is an error, and the last thing read."""
    with path.open("rb") as lines:
        number = 0
        while raw := lines.readline(limit + 1):
            number += 1
            if len(raw) > limit:
                message = too_large("the line", limit)
                yield number, ReplayInputError(f"{message}; the rest of the file was not read")
                return
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                yield number, ReplayInputError(f"not UTF-8 text ({error.reason} at byte {error.start})")
                continue
            if not text.strip():
                continue
            try:
                yield number, parse_line(text)
            except ReplayInputError as error:
                yield number, error
