"""(2b) MAP, when mapping fails: the dead letter a message becomes instead of being lost.

A message that cannot be delivered as its route says (a template that cannot be rendered,
no Msg-Id, a payload over the server's max_payload, a message the server or the client
refuses, a subject no stream captures) is published to `<prefix>.<service>.<route>` in
the dead-letter stream, and only once JetStream stored it is the source acknowledged.

A dead letter keeps what a person needs to repair and replay it:

- the original payload (or, when it is too large for a NATS message, an empty payload and
  the name of an object-store object holding it, `Bridge-Dlq-Payload-Object`);
- the original headers: for a message that could not be mapped, the source headers and
  the bridge's metadata headers, encoded as any published message's are; for a message
  refused on the way out, the headers it was sent with;
- `Bridge-Dlq-Reason` (a short kind, also the metric label), `Bridge-Dlq-Error` (what went
  wrong, one line), `Bridge-Dlq-Route` (`service/route`) and, when known,
  `Bridge-Dlq-Subject` (where it was meant to go).

Its Nats-Msg-Id is derived from the message like any other, so a redelivered message is
dead-lettered once, not once per delivery.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from bridge.config.model import DeadLetterConfig
from bridge.fast_map import metadata_headers
from bridge.headers import encode_headers, merge_headers
from bridge.mapping import (
    MSG_ID_HEADER,
    ROUTE_NAME_HEADER,
    CompiledRoute,
    MappingError,
    content_hash,
)
from bridge.message import AmqpOrigin, EncodedHeaders, KafkaOrigin, OutboundMessage, SourceMessage
from bridge.routing import TemplateRenderError

REASON_HEADER = "Bridge-Dlq-Reason"
ERROR_HEADER = "Bridge-Dlq-Error"
ROUTE_HEADER = "Bridge-Dlq-Route"
SUBJECT_HEADER = "Bridge-Dlq-Subject"
PAYLOAD_OBJECT_HEADER = "Bridge-Dlq-Payload-Object"
PAYLOAD_SIZE_HEADER = "Bridge-Dlq-Payload-Size"
TRUNCATED_HEADER = "Bridge-Dlq-Truncated-Headers"

_MAX_ERROR_TEXT = 1000  # a header value is one line; very long errors are cut here
# A subject can be far longer than any NATS publish allows (that is one reason to be here):
# the dead letter keeps its start, enough to see where it was meant to go, and its length.
_MAX_SUBJECT_TEXT = 1000
_TRUNCATED_VALUE = 256  # what is kept of a header value cut so that a dead letter fits


class DeadLetterReason(StrEnum):
    """Why a message was dead-lettered; the `reason` label of the metric."""

    UNMAPPABLE = "unmappable"  # a subject, Msg-Id or header template could not be rendered
    PAYLOAD_TOO_LARGE = "payload-too-large"  # over the server's max_payload
    REFUSED = "refused"  # the client or JetStream refuses this message for good
    NO_STREAM = "no-stream"  # no stream captures the subject it maps to
    UNREADABLE = "unreadable"  # the source cannot hand over its content (a stream offset RabbitMQ cannot deliver)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message on its way to the dead-letter stream, and why."""

    reason: DeadLetterReason
    error: str
    message: OutboundMessage  # what the dead-letter stream will store
    payload: bytes | None = None  # set when the payload must go to the object store first


class DeadLetters:
    """Builds dead letters for one route; pure, like the mapping it stands in for."""

    def __init__(self, config: DeadLetterConfig, route: CompiledRoute) -> None:
        self.subject = config.subject_for(route.service, route.config.name)
        self.bucket = config.payload_bucket
        self._route = route

    def for_unmappable(
        self, message: SourceMessage, error: str, reason: DeadLetterReason = DeadLetterReason.UNMAPPABLE
    ) -> DeadLetter:
        """A message the route cannot map (or the source cannot read, `unreadable`): keep the
        source's payload and headers as they came (an unreadable one has neither)."""
        headers = metadata_headers(message)
        if message.headers:
            merge_headers(headers, encode_headers(message.headers))
        return self._letter(reason, error, message.body or b"", headers, self._id(message))

    def for_refused(self, outbound: OutboundMessage, reason: DeadLetterReason, error: str) -> DeadLetter:
        """A mapped message that cannot be stored where it was meant to go."""
        headers = {name: value for name, value in outbound.headers.items() if not name.lower().startswith("nats-")}
        subject = outbound.subject
        if len(subject) > _MAX_SUBJECT_TEXT:
            subject = f"{subject[:_MAX_SUBJECT_TEXT]}... ({len(subject.encode())} bytes)"
        headers[SUBJECT_HEADER] = subject
        return self._letter(reason, error, outbound.payload, headers, outbound.msg_id)

    def _letter(
        self, reason: DeadLetterReason, error: str, payload: bytes, headers: Mapping[str, str], msg_id: str
    ) -> DeadLetter:
        # Dead letters of every route share one stream: the id names the route even when the
        # route's own id (a template) does not, so two routes' dead letters never collapse.
        prefix = self._route.id_prefix
        dlq_id = f"dlq:{msg_id}" if msg_id.startswith(prefix) else f"dlq:{prefix}{msg_id}"
        out = dict(headers)
        out[ROUTE_NAME_HEADER] = self._route.key
        out[REASON_HEADER] = reason.value
        out[ERROR_HEADER] = " ".join(error.split())[:_MAX_ERROR_TEXT]
        out[ROUTE_HEADER] = self._route.key
        out[MSG_ID_HEADER] = dlq_id
        letter = OutboundMessage(subject=self.subject, payload=payload, msg_id=dlq_id, headers=out)
        return DeadLetter(reason, error, letter)

    def too_large(self, letter: DeadLetter, max_payload: int | None = None) -> DeadLetter:
        """The same dead letter with its payload moved out to the object store (named by its Msg-Id).

        Given `max_payload`, it also makes sure the rest fits: headers alone can be over it (a
        huge Kafka header), and a dead letter the server refuses would close the connection
        instead of storing anything. The longest of the message's own header values are then
        cut to their first bytes, and named in `Bridge-Dlq-Truncated-Headers`.
        """
        message = letter.message
        headers = dict(message.headers)
        headers[PAYLOAD_OBJECT_HEADER] = f"{self.bucket}/{message.msg_id}"
        headers[PAYLOAD_SIZE_HEADER] = str(len(message.payload))
        slim = OutboundMessage(subject=message.subject, payload=b"", msg_id=message.msg_id, headers=headers)
        if max_payload is not None and not fits(slim, max_payload):
            slim = _truncated(slim, max_payload)
        return DeadLetter(letter.reason, letter.error, slim, payload=message.payload)

    def _id(self, message: SourceMessage) -> str:
        """The route's Msg-Id when it can be built; otherwise one from the message's coordinates.

        A message the source could not read has only coordinates: a route's template rendered
        from them (or a content hash of nothing) could be the same for two such messages."""
        origin = message.origin
        if message.unreadable is not None and isinstance(origin, AmqpOrigin) and origin.stream_offset is not None:
            return f"{origin.queue}/{origin.stream_offset}"
        try:
            return self._route.msg_id(message)
        except (MappingError, TemplateRenderError):
            origin = message.origin
            if isinstance(origin, KafkaOrigin):
                return f"{origin.topic}/{origin.partition}/{origin.offset}"
            return content_hash(message)


def encoded_size(message: OutboundMessage) -> int:
    """Bytes the server counts against max_payload: payload plus the NATS/1.0 header block."""
    headers = message.headers
    if type(headers) is EncodedHeaders:
        return len(message.payload) + len(headers.block)
    size = len(message.payload) + 12  # "NATS/1.0\r\n" ... "\r\n"
    for name, value in message.headers.items():
        size += len(name.encode()) + len(value.encode()) + 4  # ": " and "\r\n"
    return size


_OWN_HEADERS = frozenset(
    {
        REASON_HEADER,
        ERROR_HEADER,
        ROUTE_HEADER,
        SUBJECT_HEADER,
        PAYLOAD_OBJECT_HEADER,
        PAYLOAD_SIZE_HEADER,
        MSG_ID_HEADER,
    }
)


def _truncated(message: OutboundMessage, max_payload: int) -> OutboundMessage:
    """`message` with its longest foreign header values cut, longest first, until it fits."""
    headers = dict(message.headers)
    cut: list[str] = []
    foreign = [name for name in headers if name not in _OWN_HEADERS]
    longest_first = sorted(foreign, key=lambda name: -len(headers[name]))
    for name in longest_first:
        value = headers[name]
        if len(value) <= _TRUNCATED_VALUE:
            break
        headers[name] = f"{value[:_TRUNCATED_VALUE]}... ({len(value.encode())} bytes)"
        cut.append(name)
        headers[TRUNCATED_HEADER] = ",".join(cut)
        if fits(OutboundMessage(message.subject, message.payload, message.msg_id, headers), max_payload):
            break
    return OutboundMessage(subject=message.subject, payload=message.payload, msg_id=message.msg_id, headers=headers)


# nats-server's default `max_control_line`; its INFO does not say when a server changed it.
DEFAULT_MAX_CONTROL_LINE = 4096
# The publisher's reply subject: nats-py's inbox ("_INBOX." and a 22-character NUID), a dot and a
# token of up to 20 digits.
INBOX_REPLY_LENGTH = len("_INBOX.") + 22 + 1 + 20


def subject_room_for(max_payload: int, reply_length: int, max_control_line: int = DEFAULT_MAX_CONTROL_LINE) -> int:
    """The longest subject, in bytes, whose publish the server accepts.

    The server bounds `<subject> <reply> <header bytes> <total bytes>` (the arguments of `HPUB`)
    by its max_control_line; both sizes are at most max_payload, so the rest is the subject's.
    """
    return max_control_line - reply_length - 2 * len(str(max_payload)) - 3


def offline_subject_room(max_payload: int) -> int:
    """subject_room for a bridge not connected yet (explain, dry-run): nats-py's inbox, the
    default control line."""
    return subject_room_for(max_payload, INBOX_REPLY_LENGTH)


def subject_fits(subject: str, room: int) -> bool:
    """Whether a publish to `subject` stays within the server's control line (`room` bytes are
    the subject's: JetStreamPublisher.subject_room). Past it the server does not refuse the one
    message, it sends -ERR, and nats-py closes the client for good.

    Runs per message: the exact byte length is computed only when a cheap bound (4 bytes per
    character) could exceed the room.
    """
    return len(subject) * 4 <= room or len(subject.encode()) <= room


def fits(message: OutboundMessage, max_payload: int) -> bool:
    """Whether the server accepts `message` (nats-py checks only the payload; headers count too).

    Runs per message, so the exact size is computed only when a cheap upper bound (4 bytes
    per character) could exceed the limit.
    """
    headers = message.headers
    if type(headers) is EncodedHeaders:
        return len(message.payload) + len(headers.block) <= max_payload
    chars = sum(map(len, headers)) + sum(map(len, headers.values())) + 4 * len(headers)
    if len(message.payload) + 12 + 4 * chars <= max_payload:
        return True
    return encoded_size(message) <= max_payload
