"""Turning arbitrary source names into NATS subject tokens, and checking subjects.

RabbitMQ routing keys, exchange names, Kafka topics, keys and header values may contain
anything; a NATS subject token may not contain `.`, whitespace, or be a lone `*` or `>`.
The bridge therefore escapes every value it puts into a subject with one scheme:

Token escaping
--------------
* The value is taken as bytes (text is encoded as UTF-8 first).
* The bytes 0x21..0x7E (printable ASCII) stand for themselves, except `.` `*` `>` `%` `$`.
* Every other byte — space, control characters, DEL, every non-ASCII byte, and those five —
  is written `%XX`, two uppercase hex digits: `orders.created` becomes `orders%2Ecreated`,
  `café` becomes `caf%C3%A9`, a space becomes `%20`.
* The empty value is the token `%` alone. No other value produces it, because a literal `%`
  is always written `%25`, so a `%` is otherwise always followed by two hex digits.
* Decoding reverses this exactly and accepts only the canonical form (uppercase hex, and no
  escape of a byte that stands for itself), so values and tokens correspond one to one:
  two different values never share a token, and every token reads back to its value.

Why `$` is escaped too: NATS reserves subjects that start with `$` for its own APIs
(`$JS.API.STREAM.DELETE.<name>`, `$KV.…`, `$SYS.…`). A template such as `{exchange}.{rk}`
fed an exchange named `$JS` would otherwise publish into the JetStream API. Escaping `$`
everywhere (not only in the first token) keeps the scheme context-free; `$` is rare in
routing keys and topics, so the cost is nil.

The result is plain printable ASCII, so it also survives logs, URLs and shells unharmed.
"""

from __future__ import annotations

from typing import Final

# Printable ASCII that NATS treats specially or that the scheme itself needs.
_ESCAPED_ASCII: Final = frozenset(b".*>%$")
SAFE_BYTES: Final = frozenset(b for b in range(0x21, 0x7F) if b not in _ESCAPED_ASCII)

# One table for str.translate: the string is first made one char per byte (latin-1), so the
# escaping runs in C even for binary keys.
_ESCAPE_TABLE: Final[dict[int, str]] = {b: f"%{b:02X}" for b in range(256) if b not in SAFE_BYTES}
# The same but leaving "." alone: used to escape a whole dotted routing key word by word in
# one pass when none of its words is empty.
ESCAPE_TABLE_KEEPING_DOTS: Final[dict[int, str]] = {b: text for b, text in _ESCAPE_TABLE.items() if b != ord(".")}

# For bytes.translate(None, delete): what is left after deleting these needs escaping.
_SAFE_DELETE: Final = bytes(sorted(SAFE_BYTES))
SAFE_OR_DOT_DELETE: Final = bytes(sorted({*SAFE_BYTES, ord(".")}))

EMPTY_TOKEN: Final = "%"
_HEX_DIGITS: Final = frozenset("0123456789ABCDEF")


def escape_token(value: str | bytes) -> str:
    """Escape one value into exactly one subject token, per the module's scheme.

    Text with lone surrogates cannot be encoded as UTF-8 and raises UnicodeEncodeError;
    no broker delivers such text.
    """
    if isinstance(value, str):
        if not value:
            return EMPTY_TOKEN
        if value.isascii():
            # Most names need no escaping; checking that first is several times faster.
            if value.isalnum() or not value.encode("ascii").translate(None, _SAFE_DELETE):
                return value
            return value.translate(_ESCAPE_TABLE)
        return value.encode("utf-8").decode("latin-1").translate(_ESCAPE_TABLE)
    if not value:
        return EMPTY_TOKEN
    if not value.translate(None, _SAFE_DELETE):
        return value.decode("ascii")
    return bytes(value).decode("latin-1").translate(_ESCAPE_TABLE)


def unescape_token(token: str) -> bytes:
    """Recover the bytes a token was made from; only canonical tokens are accepted.

    Rejecting non-canonical spellings (`%41` for `A`, lowercase hex) is what makes the scheme
    a bijection: otherwise two tokens could name the same value and dedup or filters keyed
    on subjects would split one stream of messages in two.
    """
    if token == EMPTY_TOKEN:
        return b""
    if not token:
        raise ValueError("an escaped token is never empty (the empty value is written '%')")
    if token.isascii() and "%" not in token and token.translate(_ESCAPE_TABLE) == token:
        return token.encode("ascii")
    out = bytearray()
    i = 0
    length = len(token)
    while i < length:
        char = token[i]
        if char == "%":
            digits = token[i + 1 : i + 3]
            if len(digits) != 2 or not _HEX_DIGITS.issuperset(digits):
                raise ValueError(
                    f"malformed escaped token {token!r}: '%' at column {i} must be followed by two uppercase hex digits"
                )
            byte = int(digits, 16)
            if byte in SAFE_BYTES:
                raise ValueError(
                    f"malformed escaped token {token!r}: '%{digits}' at column {i} escapes "
                    f"{chr(byte)!r}, which is always written as itself"
                )
            out.append(byte)
            i += 3
        else:
            code = ord(char)
            if code not in SAFE_BYTES:
                spelling = f"%{code:02X}" if code < 0x80 else "its UTF-8 bytes, each as %XX"
                raise ValueError(
                    f"malformed escaped token {token!r}: {char!r} at column {i} must be written as {spelling}"
                )
            out.append(code)
            i += 1
    return bytes(out)


def unescape_token_str(token: str) -> str:
    """Recover the text a token was made from, for values that were text at the source."""
    raw = unescape_token(token)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"escaped token {token!r} decodes to bytes that are not UTF-8 text") from error


def _is_literal_token(token: str) -> bool:
    # isprintable() rejects controls and every Unicode separator except the ASCII space.
    return bool(token) and token.isprintable() and " " not in token and token not in ("*", ">")


def is_valid_subject(subject: str) -> bool:
    """Whether NATS accepts `subject` as the subject of a published message.

    A published subject must be literal: `*` and `>` tokens are only for subscriptions and
    stream filters. Printable non-ASCII text is allowed, as nats-server allows it.
    """
    if not subject:
        return False
    return all(_is_literal_token(token) for token in subject.split("."))


def is_valid_subject_filter(subject: str) -> bool:
    """Whether `subject` is a valid subscription or stream filter: `*` tokens, a final `>`."""
    if not subject:
        return False
    tokens = subject.split(".")
    last = len(tokens) - 1
    for position, token in enumerate(tokens):
        if token == "*" or (token == ">" and position == last):
            continue
        if not _is_literal_token(token):
            return False
    return True
