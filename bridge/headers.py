"""Source headers as NATS headers, losslessly.

NATS headers are text: a name that is an RFC 7230 token and one line of text as the value.
Source headers are richer — AMQP tables hold ints, decimals, timestamps, byte arrays,
nested tables and arrays; Kafka headers are raw bytes — and a migration must not quietly
turn `5` into `"5"` or drop a binary value. So each value is carried in one of three forms,
and the forms are recorded so a consumer (or a reverse route) can decode them:

- text: a `str` (or UTF-8 bytes) of printable characters, without spaces at either end,
  travels as it is;
- base64: other bytes, or text with control characters or edge spaces, travel base64-encoded,
  and the header's name is listed in `Bridge-Base64-Headers` (comma-separated). nats-py strips
  a header value and turns CR/LF into spaces, so such text would arrive altered;
- typed: numbers, booleans, void, decimals, timestamps, arrays and tables travel as JSON,
  and the name is listed in `Bridge-Typed-Headers`. In that JSON a decimal is
  `{"$decimal": "1.50"}`, a timestamp `{"$timestamp": "<ISO 8601>"}`, a byte array
  `{"$bytes": "<base64>"}`; a table key that starts with `$` gets one more `$`.

Names: a source header keeps its name when it is a valid token outside the prefixes the
bridge reserves (`Nats-`, `Kafka-`, `Amqp-`, `Source-`, `Bridge-`); any other name travels
as `Source-<name with every other byte %XX-escaped>`, which is reversible.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

RESERVED_HEADER_PREFIXES = ("nats-", "kafka-", "amqp-", "source-", "bridge-")
BASE64_HEADERS = "Bridge-Base64-Headers"
TYPED_HEADERS = "Bridge-Typed-Headers"

# Loop prevention between forward and reverse routes. A reverse route (NATS -> legacy) marks
# what it writes with ORIGIN_HEADER: ORIGIN_NATS (an AMQP header, a Kafka record header), and
# forward routes never copy a message so marked back into NATS. A JetStream message carrying
# one of FORWARDED_HEADERS was written by a forward route, and reverse routes never write it
# back to the legacy broker. Either way the message is counted as filtered and acknowledged.
ORIGIN_HEADER = "nats-bridge-origin"
# A record copied again after JetStream lost it ("lost": the bridge saw its checkpoint behind the
# source's commit; "repair": `verify --repair`) is stored after later records of its lane, on
# purpose: this header says so, and verify's order check does not count it as a reorder.
RECOPIED_HEADER = "Bridge-Recopied"
ORIGIN_NATS = "nats"
# What a reverse route writes also names the stream message it copies, `<stream>:<sequence>`:
# the position `handoff` reads at a legacy consumer's head (a Kafka group's committed offset, a
# queue's first message) to start its JetStream durable exactly there.
STREAM_POSITION_HEADER = "nats-bridge-stream-seq"
FORWARDED_HEADERS = ("Kafka-Topic", "Amqp-Exchange")
_TOKEN_CHARS = frozenset(b"!#$&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

Form = Literal["text", "base64", "typed"]


def header_name_for(name: str) -> str:
    """A source header's name in NATS: as-is when safe, else `Source-<%XX-escaped name>`."""
    raw = name.encode("utf-8")
    if raw and all(byte in _TOKEN_CHARS for byte in raw) and not name.lower().startswith(RESERVED_HEADER_PREFIXES):
        return name
    return "Source-" + "".join(chr(byte) if byte in _TOKEN_CHARS else f"%{byte:02X}" for byte in raw)


def source_name_of(header: str) -> str:
    """The inverse of header_name_for."""
    if not header.startswith("Source-"):
        return header
    escaped = header[len("Source-") :]
    out = bytearray()
    index = 0
    while index < len(escaped):
        if escaped[index] == "%":
            out.append(int(escaped[index + 1 : index + 3], 16))
            index += 3
        else:
            out.append(ord(escaped[index]))
            index += 1
    return out.decode("utf-8")


def encode_value(value: Any) -> tuple[str, Form]:
    """A header value as one line of text, and the form it took."""
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii"), "base64"
        return _text_or_base64(text)
    if isinstance(value, str):
        return _text_or_base64(value)
    return json.dumps(_tagged(value), separators=(",", ":"), ensure_ascii=True), "typed"


def decode_value(text: str, form: Form) -> Any:
    """The inverse of encode_value (text comes back as str, base64 as bytes)."""
    if form == "base64":
        return base64.b64decode(text)
    if form == "typed":
        return _untagged(json.loads(text))
    return text


def wire_stable(text: str) -> bool:
    """Whether `text` reaches the server unchanged as a header value: nats-py strips values and
    turns CR/LF into spaces, and the server trims them too."""
    return text.isprintable() and text == text.strip()


def stable_id(text: str) -> str:
    """`text` as a Nats-Msg-Id that survives the wire and stays distinct from every other id.

    Ids that are wire-stable and hold no `%` travel as they are (nearly all). Any other id is
    percent-encoded — `%`, spaces and every character that is not printable, as UTF-8 bytes —
    so `order-7`, `order-7 `, `order-7\n` stay three ids (nats-py would make them one, and
    JetStream would drop two as duplicates), and an all-blank id never becomes empty. The two
    forms cannot meet: only an encoded id contains `%`.
    """
    if "%" not in text and wire_stable(text):
        return text
    return "".join(
        char if char.isprintable() and char not in "% " else "".join(f"%{byte:02X}" for byte in char.encode())
        for char in text
    )


def _text_or_base64(text: str) -> tuple[str, Form]:
    if wire_stable(text):
        return text, "text"
    return base64.b64encode(text.encode("utf-8")).decode("ascii"), "base64"


def merge_headers(into: dict[str, str], more: Mapping[str, str]) -> None:
    """Add `more` to `into`, joining their Bridge-Base64-Headers / Bridge-Typed-Headers lists
    (both the bridge's metadata and the copied source headers may list names)."""
    for name, value in more.items():
        if name in (BASE64_HEADERS, TYPED_HEADERS) and into.get(name):
            names = into[name].split(",")
            names += [listed for listed in value.split(",") if listed not in names]
            into[name] = ",".join(names)
        else:
            into[name] = value


def _tagged(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, datetime):
        return {"$timestamp": value.isoformat()}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        return {("$" + key if key.startswith("$") else key): _tagged(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_tagged(item) for item in value]
    return {"$repr": repr(value)}


def _untagged(value: Any) -> Any:
    if isinstance(value, list):
        return [_untagged(item) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((key, item),) = value.items()
        if key == "$decimal":
            return Decimal(item)
        if key == "$timestamp":
            return datetime.fromisoformat(item)
        if key == "$bytes":
            return base64.b64decode(item)
    return {(key[1:] if key.startswith("$$") else key): _untagged(item) for key, item in value.items()}


def encode_headers(
    items: tuple[tuple[str, Any], ...], *, rename: Mapping[str, str] | None = None, drop: frozenset[str] = frozenset()
) -> dict[str, str]:
    """Source headers as NATS headers, with the Bridge-*-Headers lists that say how to decode them."""
    headers: dict[str, str] = {}
    base64_names: list[str] = []
    typed_names: list[str] = []
    for name, value in items:
        if name in drop:
            continue
        target = (rename or {}).get(name) or header_name_for(name)
        text, form = encode_value(value)
        headers[target] = text
        if form == "base64":
            base64_names.append(target)
        elif form == "typed":
            typed_names.append(target)
    if base64_names:
        headers[BASE64_HEADERS] = ",".join(base64_names)
    if typed_names:
        headers[TYPED_HEADERS] = ",".join(typed_names)
    return headers


def decode_headers(headers: Mapping[str, str]) -> dict[str, Any]:
    """The source headers back from NATS headers (bridge metadata headers left out)."""
    base64_names = set(filter(None, headers.get(BASE64_HEADERS, "").split(",")))
    typed_names = set(filter(None, headers.get(TYPED_HEADERS, "").split(",")))
    decoded: dict[str, Any] = {}
    for name, text in headers.items():
        if name.lower().startswith(RESERVED_HEADER_PREFIXES) and not name.startswith("Source-"):
            continue
        form: Form = "base64" if name in base64_names else "typed" if name in typed_names else "text"
        decoded[source_name_of(name)] = decode_value(text, form)
    return decoded
