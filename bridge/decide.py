"""(2c) DECIDE: what happens to one source message on one route, in one pure function.

The running pipeline, `explain`, dry-run (`--input`, `--sample`) and `verify` all ask `decide`,
so none of them can say "publish" for a message another one filters or dead-letters. Sources
hand over everything they read; a tombstone the route skips or a record a reverse route wrote is
filtered here, with its reason.

A verdict is final for everything a message carries. Two things only the server can tell stay
with the pipeline: whether a stream the file does not declare captures the subject (when the
context lists no streams), and whether JetStream refuses the message when it arrives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from bridge.config.routes import FromKafka, OnError
from bridge.config.streams import StreamConfig
from bridge.deadletters import DEFAULT_MAX_CONTROL_LINE, DeadLetterReason, encoded_size, fits, subject_fits
from bridge.headers import ORIGIN_HEADER
from bridge.mapping import CompiledRoute, MappingError
from bridge.message import KafkaOrigin, OutboundMessage, SourceMessage
from bridge.per_message import per_message
from bridge.streams import streams_capturing

DEFAULT_MAX_PAYLOAD = 1024 * 1024  # nats-server's default max_payload


class Fate(StrEnum):
    PUBLISH = "publish"
    FILTERED = "filtered"  # never published, and not an error: the route does not copy it
    DEAD_LETTER = "dead-letter"  # cannot go where the route says; on_error: dead-letter
    SKIP = "skip"  # cannot go where the route says; on_error: skip
    STOP = "stop"  # cannot go where the route says; on_error: stop (the route stops at it)


_FATE_OF = {OnError.DEAD_LETTER: Fate.DEAD_LETTER, OnError.SKIP: Fate.SKIP, OnError.STOP: Fate.STOP}


@dataclass(frozen=True, slots=True)
class DecideContext:
    """What the verdict depends on besides the route and the message.

    `streams`: the streams that exist, to judge "no stream captures the subject"; None leaves it
    to the server (a running bridge may publish into streams its file does not declare).
    `subject_room`: bytes the server's control line leaves for a subject (None: unchecked).
    `mark`: a last change to the message before it is sized (the pipeline's Bridge-Recopied)."""

    max_payload: int = DEFAULT_MAX_PAYLOAD
    streams: Sequence[StreamConfig] | None = None
    subject_room: int | None = None
    max_control_line: int = DEFAULT_MAX_CONTROL_LINE  # what subject_room was worked out from (for the words)
    mark: Callable[[OutboundMessage], OutboundMessage] | None = None


@per_message
class Verdict:
    """One route's decision on one message. `outbound` is the mapped message (None when it could
    not be mapped or was filtered); `reason` says why it cannot be delivered (None otherwise);
    `detail` is the words for people."""

    fate: Fate
    outbound: OutboundMessage | None = None
    reason: DeadLetterReason | None = None
    detail: str = ""
    body_size: int = 0  # the source message's body, for a verdict without an outbound message
    streams: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        """Payload plus header block, as max_payload counts it (worked out on demand: the
        pipeline never needs it for a message that fits)."""
        return encoded_size(self.outbound) if self.outbound is not None else self.body_size

    @property
    def published(self) -> bool:
        return self.fate is Fate.PUBLISH


def filtered_reason(route: CompiledRoute, message: SourceMessage) -> str | None:
    """Why the route does not copy `message` at all, or None when it does."""
    subscription = route.config.from_
    if (
        message.body is None
        and isinstance(subscription, FromKafka)
        and subscription.tombstones == "skip"
        and isinstance(message.origin, KafkaOrigin)
    ):
        return "a tombstone (tombstones: skip)"
    if any(name == ORIGIN_HEADER for name, _ in message.headers):
        return f"written by a reverse route ({ORIGIN_HEADER}): never copied back"
    return None


def decide(route: CompiledRoute, message: SourceMessage, context: DecideContext) -> Verdict:
    """The verdict of `route` on `message`."""
    if message.unreadable is not None:
        # The source could not read it: nothing to map, but its position must not be lost.
        return _undeliverable(route, None, DeadLetterReason.UNREADABLE, message.unreadable)
    why_filtered = filtered_reason(route, message)
    if why_filtered is not None:
        return Verdict(Fate.FILTERED, detail=why_filtered, body_size=len(message.body or b""))
    try:
        outbound = route.map(message)
    except MappingError as error:
        return _undeliverable(route, None, DeadLetterReason.UNMAPPABLE, str(error), len(message.body or b""))
    if context.mark is not None:
        outbound = context.mark(outbound)
    room = context.subject_room
    if room is not None and not subject_fits(outbound.subject, room):
        detail = (
            f"the subject is {len(outbound.subject.encode())} bytes, over the {room} bytes the server's "
            f"max_control_line ({context.max_control_line}) leaves for a subject"
        )
        return _undeliverable(route, outbound, DeadLetterReason.UNMAPPABLE, detail)
    if not fits(outbound, context.max_payload):
        detail = f"{encoded_size(outbound)} bytes of payload with headers exceed max_payload {context.max_payload}"
        return _undeliverable(route, outbound, DeadLetterReason.PAYLOAD_TOO_LARGE, detail)
    streams: tuple[str, ...] = ()
    if context.streams is not None:
        streams = tuple(stream.name for stream in streams_capturing(outbound.subject, context.streams))
        if not streams:
            detail = f"no stream captures subject '{outbound.subject}'"
            return _undeliverable(route, outbound, DeadLetterReason.NO_STREAM, detail)
    return Verdict(Fate.PUBLISH, outbound, streams=streams)


def _undeliverable(
    route: CompiledRoute, outbound: OutboundMessage | None, reason: DeadLetterReason, detail: str, body_size: int = 0
) -> Verdict:
    return Verdict(_FATE_OF[route.config.on_error], outbound, reason, detail, body_size)
