"""The frozen message types that flow through the bridge.

A `SourceMessage` is what a source connector read, described in the source's own terms
(its origin says where it came from); an `OutboundMessage` is what the publisher sends to
JetStream. Mapping turns one into the other and is a pure function, so both are plain
immutable values with no reference to a connection, a delivery tag or a callback: the
ack travels separately, with the batch, and only the pipeline settles it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import field
from typing import Any

from bridge.per_message import per_message


@per_message
class KafkaOrigin:
    """Where a Kafka record came from: its coordinates are its identity."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    timestamp_ms: int | None = None


@per_message
class AmqpOrigin:
    """Where a RabbitMQ delivery came from, with the AMQP basic properties it carried.

    `properties` uses aio-pika's attribute names (content_type, message_id, ...), absent
    properties omitted; `stream_offset` is set only for deliveries from a stream queue.
    """

    exchange: str
    routing_key: str
    queue: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    redelivered: bool = False
    stream_offset: int | None = None


@per_message
class SourceMessage:
    """One message as read from a source.

    `body` is None only for a Kafka tombstone. `headers` keeps the source's order and
    duplicates (Kafka allows repeated keys); values are as the client delivered them.
    `unreadable` is set, with the reason, for a position the source knows holds a message it
    cannot read (a stream offset RabbitMQ cannot deliver over AMQP 0-9-1): the message is then
    only its origin, and bridge.decide dead-letters it rather than have it lost or stall its lane.
    """

    origin: KafkaOrigin | AmqpOrigin
    body: bytes | None
    headers: tuple[tuple[str, Any], ...] = ()
    unreadable: str | None = None


@per_message
class OutboundMessage:
    """One message ready for JetStream: subject, payload, headers and its Nats-Msg-Id."""

    subject: str
    payload: bytes
    msg_id: str
    headers: Mapping[str, str] = field(default_factory=dict)


class EncodedHeaders(Mapping[str, str]):
    """Headers made as the NATS/1.0 block nats-py would write for them (bridge.fast_map).

    The publisher sends `block` as it is and `decide` sizes the message by its length; the
    names and values are read back from it only when something asks for them (explain, a dead
    letter, a test). Only bridge.fast_map makes one, from names that are header tokens and
    values nats-py sends unchanged (no CR or LF, no edge whitespace), so each line of the block
    is `Name: value` and reading it back gives exactly the headers it was made from.
    """

    __slots__ = ("_items", "block")

    def __init__(self, block: bytes) -> None:
        self.block = block
        self._items: dict[str, str] | None = None

    def _read(self) -> dict[str, str]:
        items = self._items
        if items is None:
            lines = self.block.decode()[10:-4]  # between "NATS/1.0\r\n" and the final "\r\n\r\n"
            items = self._items = dict(line.split(": ", 1) for line in lines.split("\r\n")) if lines else {}
        return items

    def __getitem__(self, name: str) -> str:
        return self._read()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())

    def __contains__(self, name: object) -> bool:
        return name in self._read()

    def __repr__(self) -> str:
        return f"EncodedHeaders({self._read()!r})"
