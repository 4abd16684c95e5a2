"""Reading JetStream's answer to a publish: a PubAck (stored, or a duplicate of a stored message),
an error reply, or the no-responders status. Pure: the publisher routes what this reads."""

from __future__ import annotations

import json

from bridge.jetstream.publish_types import NO_RESPONDERS, PERMANENT_ERRORS, STATUS_HEADER, PublishFailure
from bridge.per_message import per_message


@per_message
class Stored:
    """A PubAck: the message (or, for an atomic batch, `count` messages ending at `seq`) is in `stream`."""

    stream: str
    seq: int
    duplicate: bool
    count: int = 1


def read_reply(data: bytes, headers: dict[str, str] | None) -> Stored | PublishFailure:
    """What JetStream answered: stored, or why not."""
    if headers and headers.get(STATUS_HEADER) == NO_RESPONDERS and not data:
        return PublishFailure("no-responders", "no stream captures the subject, or JetStream is down")
    fast = parse_puback(data)
    if fast is not None:
        return Stored(*fast)
    try:
        reply = json.loads(data)
        error = reply.get("error")
        if error is None:
            return Stored(
                str(reply.get("stream", "")),
                int(reply["seq"]),
                bool(reply.get("duplicate", False)),
                int(reply.get("count", 1)),
            )
        err_code = int(error.get("err_code", 0))
        return PublishFailure(
            "error",
            str(error.get("description", "JetStream error")),
            code=int(error.get("code", 0)),
            err_code=err_code,
            permanent=err_code in PERMANENT_ERRORS,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return PublishFailure("error", f"unreadable PubAck: {data[:200]!r}")


_PUBACK_PREFIX = b'{"stream":"'
_SEQ = b',"seq":'
_DUPLICATE_END = b',"duplicate":true}'
# The bytes a stream name may hold in the fast path: printable ASCII but the quote and backslash.
_NAME_BYTES = bytes(byte for byte in range(0x20, 0x7F) if byte not in b'"\\')


def parse_puback(data: bytes) -> tuple[str, int, bool] | None:
    """(stream, seq, duplicate) from a PubAck of the usual shape, without json.loads.

    It runs once per published message; anything but `{"stream":"S","seq":N}` optionally
    followed by `,"duplicate":true` returns None, and the caller parses it as JSON. The sequence
    is found with bytes methods, not a loop over its digits; a stream name with an escape or a
    byte past ASCII (JSON that decoding would change) goes to JSON too.
    """
    if not data.startswith(_PUBACK_PREFIX):
        return None
    end = data.find(b'"', 11)
    if end < 0 or data[end + 1 : end + 8] != _SEQ:
        return None
    name = data[11:end]
    if name.translate(None, _NAME_BYTES):
        return None  # an escape, a control character or a byte past ASCII
    digits = data[end + 8 : -1]
    duplicate = False
    if not digits.isdigit() or data[-1:] != b"}":
        if not data.endswith(_DUPLICATE_END):
            return None
        digits = data[end + 8 : -len(_DUPLICATE_END)]
        if not digits.isdigit():
            return None
        duplicate = True
    if digits[0] == 48 and len(digits) > 1:
        return None  # a leading zero, which JSON refuses
    return name.decode(), int(digits), duplicate
