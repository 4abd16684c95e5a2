"""The vocabulary of forward templates (subjects, Msg-Ids, header values): which placeholders a
source message offers, which of them have words to index, and the hints for a misspelt one.
The syntax itself is bridge.routing.template_syntax's."""

from __future__ import annotations

import difflib
import re
from typing import Final

from bridge.routing.template_syntax import Placeholder, Unit, lex, parse_index, syntax_error

_SINGLE_FIELDS: Final = ("exchange", "queue", "topic", "partition", "key")
WORD_FIELDS: Final = ("rk", "topic")
_TEXT_ONLY_FIELDS: Final = ("offset", "message_id", "timestamp", "content_hash", "auto")
SUBJECT_FIELDS: Final = frozenset({*_SINGLE_FIELDS, "rk"})
TEXT_FIELDS: Final = SUBJECT_FIELDS | frozenset(_TEXT_ONLY_FIELDS)
# Names people reach for first, mapped to the placeholder they mean.
_ALIASES: Final = {
    "routing_key": "rk",
    "routingkey": "rk",
    "routing-key": "rk",
    "rkey": "rk",
    "header": "header:NAME",
    "headers": "header:NAME",
    "msg_id": "message_id",
    "messageid": "message_id",
    "message-id": "message_id",
    "ts": "timestamp",
    "hash": "content_hash",
    "content-hash": "content_hash",
}
_NAME_AND_INDEX: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)(\[[^\]]*\])?")


def _suggestion(name: str, known: frozenset[str]) -> str:
    candidate = _ALIASES.get(name.lower())
    if candidate is None or (candidate not in known and candidate != "header:NAME"):
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        candidate = close[0] if close else None
    if candidate is not None:
        return f" — did you mean '{{{candidate}}}'?"
    names = " ".join(f"{{{known_name}}}" for known_name in sorted(known))
    return f"; known placeholders: {names} {{header:NAME}}"


def _parse_placeholder(body: str, column: int, template: str, known: frozenset[str]) -> Placeholder:
    source = f"{{{body}}}"
    if not body:
        raise syntax_error("empty placeholder '{}'; write '{{' for a literal brace", column, template)
    if body.startswith("header:"):
        header = body[len("header:") :]
        if not header:
            raise syntax_error("'{header:}' needs a header name, e.g. '{header:tenant}'", column, template)
        return Placeholder(source, column, "header", header=header)
    match = _NAME_AND_INDEX.fullmatch(body)
    if match is None and ":" in body and "[" not in body:
        header = body.partition(":")[2]
        raise syntax_error(f"unknown placeholder '{source}' — did you mean '{{header:{header}}}'?", column, template)
    if match is None:
        raise syntax_error(
            f"malformed placeholder '{source}': expected a name such as '{{rk}}', an index such as "
            "'{rk[1:]}', or '{header:NAME}'",
            column,
            template,
        )
    name, brackets = match.group(1), match.group(2)
    if name not in known:
        if name in TEXT_FIELDS:
            raise syntax_error(
                f"'{{{name}}}' cannot be used in a subject (it would give every message its own "
                "subject); it is available in Msg-Id and header templates",
                column,
                template,
            )
        raise syntax_error(f"unknown placeholder '{source}'{_suggestion(name, known)}", column, template)
    if brackets is None:
        return Placeholder(source, column, name)
    if name not in WORD_FIELDS:
        raise syntax_error(f"'{source}': only {{rk}} and {{topic}} have words to index", column, template)
    index, bounds = parse_index(source, brackets[1:-1], column, template)
    return Placeholder(source, column, name, index=index, bounds=bounds)


def lex_forward(template: str, known: frozenset[str]) -> list[Unit]:
    """`template` lexed with the placeholders `known` to its kind (SUBJECT_FIELDS or TEXT_FIELDS)."""
    return lex(template, lambda body, column: _parse_placeholder(body, column, template, known))
