"""A message's HPUB command, encoded by the bridge, and handed to nats-py's write buffer.

`Client.publish` costs the bridge about 10 µs per message with its six to eight headers,
against 2 µs without: per header it strips and validates the key with a regular expression,
strips and translates the value, and extends a bytearray four times; then three coroutine
frames deep it appends the command to the client's pending buffer. The bridge sends header
names from a small set (its own, the route's, the renamed source headers), so each name's
line prefix is validated and encoded once and kept; the values are what `encode_value` made of
them, so the strip and translate are the exception, checked for rather than always done.

The bytes are exactly nats-py 2.16's (tests/unit/test_jetstream_wire.py compares them with
`Client._send_publish`), and `send` raises what `Client.publish` raises for the same input, so
the publisher's handling of refusals and lost connections does not change. `send` uses the
client's write buffer and flusher as `_send_publish` does: private parts of nats-py, pinned by
the same test.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from nats.aio.client import Client as NatsClient
from nats.errors import (
    BadHeaderError,
    BadSubjectError,
    ConnectionClosedError,
    ConnectionDrainingError,
    MaxPayloadError,
    OutboundBufferLimitError,
)

from bridge.message import EncodedHeaders

_CRLF = b"\r\n"
# The same rules as nats-py's _HEADER_KEY_RE, _HEADER_VALUE_NEWLINES and _SUBJECT_INVALID_RE.
_HEADER_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE_NEWLINES = str.maketrans({"\r": " ", "\n": " "})
_SUBJECT_INVALID = re.compile(r"[ \t\r\n]")

_KEY_LINES: dict[str, str] = {}  # header name -> "Name: " ("" for a name nats-py skips)
_KEY_LINES_MAX = 4096  # names come from the mapping and the sources' headers; a flood is not cached


def _key_line(name: str) -> str:
    line = _KEY_LINES.get(name)
    if line is not None:
        return line
    key = name.strip()
    if not key:
        line = ""
    elif _HEADER_KEY.fullmatch(key):
        line = key + ": "
    else:
        raise BadHeaderError(key)
    if len(_KEY_LINES) < _KEY_LINES_MAX:
        _KEY_LINES[name] = line
    return line


def header_block(headers: Mapping[str, str]) -> bytes:
    """The NATS/1.0 header block nats-py would write for `headers`; raises BadHeaderError for a
    name it refuses.

    The common case is written as one str and encoded once; a value nats-py would change (edge
    whitespace: `strip()` returns a new string; a CR or LF: more line ends than lines) sends the
    block through the exact, slower path."""
    parts = ["NATS/1.0\r\n"]
    append = parts.append
    lines = _KEY_LINES
    plain = True
    for name, value in headers.items():
        line = lines.get(name)
        if line is None:
            line = _key_line(name)
        if not line:
            continue
        if value.strip() is not value:
            plain = False
        append(line)
        append(value)
        append("\r\n")
    append("\r\n")
    text = "".join(parts)
    ends = len(parts) // 3 + 2  # the status line, each header line, the blank line
    if plain and text.count("\n") == ends and text.count("\r") == ends:
        return text.encode()
    return _exact_header_block(headers)


def _exact_header_block(headers: Mapping[str, str]) -> bytes:
    """nats-py's own rules, header by header: names stripped, values stripped, CR and LF made spaces."""
    text = "NATS/1.0\r\n"
    for name, value in headers.items():
        line = _key_line(name)
        if line:
            text += line + value.strip().translate(_VALUE_NEWLINES) + "\r\n"
    return (text + "\r\n").encode()


def extended(headers: Mapping[str, str], more: Mapping[str, str]) -> Mapping[str, str]:
    """`headers` with `more` set (an atomic batch's Nats-Batch-* headers): `{**headers, **more}`.

    Headers that come as their block (bridge.fast_map) stay a block, with the lines of `more`
    appended, when that is what the dict would encode to: none of its names is in the block
    already and nats-py would write each of them as it is; otherwise the dict."""
    if type(headers) is EncodedHeaders:
        block = headers.block
        lines = []
        for name, value in more.items():
            line = _key_line(name)
            if not line or line != name + ": " or f"\r\n{line}".encode() in block:
                break
            if value.strip() is not value or "\r" in value or "\n" in value:
                break
            lines.append(f"{line}{value}\r\n")
        else:
            return EncodedHeaders(block[:-2] + "".join(lines).encode() + b"\r\n")
    return {**headers, **more}


def hpub_command(subject: str, reply: str, headers: Mapping[str, str], payload: bytes) -> bytes:
    """The whole HPUB command; raises BadSubjectError or BadHeaderError as nats-py would."""
    if not subject or _SUBJECT_INVALID.search(subject) or (reply and _SUBJECT_INVALID.search(reply)):
        raise BadSubjectError
    # A mapped message's headers come as their block, made from the route's templates.
    block = headers.block if type(headers) is EncodedHeaders else header_block(headers)
    size = len(block)
    return b"".join((f"HPUB {subject} {reply} {size} {size + len(payload)}\r\n".encode(), block, payload, _CRLF))


async def send(nc: NatsClient, command: bytes, payload_size: int) -> None:
    """Queue `command` (from `hpub_command`) on `nc` as `Client.publish` would: the same refusals
    in the same order, the client's counters, and a kick of its flusher."""
    if nc.is_closed:
        raise ConnectionClosedError
    if nc.is_draining_pubs:
        raise ConnectionDrainingError
    pending_limit = nc._max_pending_size
    if not nc.is_connected and (pending_limit <= 0 or payload_size + nc._pending_data_size > pending_limit):
        raise OutboundBufferLimitError
    if payload_size > nc._max_payload:
        raise MaxPayloadError
    nc.stats["out_msgs"] += 1
    nc.stats["out_bytes"] += payload_size
    await nc._send_command(command)
    flush_queue = nc._flush_queue
    if flush_queue is not None and flush_queue.empty():
        await nc._flush_pending()
