"""The one template language of a mapping file: literal text and `{placeholders}`, `{{` and `}}`
for literal braces, `[i]` and `[i:j]` to pick words or tokens, `{header:NAME}` for a header.

Forward routes speak it over a source message (subjects, Msg-Ids and header values:
bridge.routing.templates); reverse routes over a NATS message (routing and record keys:
bridge.routing.key_template). Each names its own vocabulary of placeholders; the syntax, its
errors (with the column of the problem) and the index rules are here, once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from bridge.errors import TemplateSyntaxError

INTEGER: Final = re.compile(r"-?[0-9]+")


def syntax_error(message: str, column: int, text: str) -> TemplateSyntaxError:
    return TemplateSyntaxError(message, column, template=text)


@dataclass(frozen=True, slots=True)
class Placeholder:
    """One `{...}` of a template, as its vocabulary parsed it."""

    source: str  # as written, braces included, for messages
    column: int
    name: str  # "rk", "exchange", "subject", "header"
    header: str | None = None
    index: int | None = None
    bounds: tuple[int | None, int | None] | None = None  # a slice

    @property
    def field_name(self) -> str:
        return f"header:{self.header}" if self.header is not None else self.name


# A lexed template: each literal character with its column, or a placeholder.
Unit = tuple[str, int] | Placeholder


def lex(text: str, placeholder: Callable[[str, int], Placeholder]) -> list[Unit]:
    """`text` as units; `placeholder(body, column)` parses each `{body}` in the vocabulary of
    the template's kind (raising TemplateSyntaxError for what it does not know)."""
    units: list[Unit] = []
    i = 0
    length = len(text)
    while i < length:
        char = text[i]
        if char == "{":
            if text.startswith("{{", i):
                units.append(("{", i))
                i += 2
                continue
            close = text.find("}", i + 1)
            if close < 0:
                raise syntax_error(f"placeholder '{text[i:]}' is not closed: add '}}'", i, text)
            nested = text.find("{", i + 1, close)
            if nested >= 0:
                raise syntax_error(
                    f"'{{' inside placeholder '{text[i : close + 1]}'; write '{{{{' for a literal brace",
                    nested,
                    text,
                )
            units.append(placeholder(text[i + 1 : close], i))
            i = close + 1
        elif char == "}":
            if not text.startswith("}}", i):
                raise syntax_error("single '}' outside a placeholder; write '}}' for a literal brace", i, text)
            units.append(("}", i))
            i += 2
        else:
            units.append((char, i))
            i += 1
    return units


def parse_index(
    placeholder: str, inside: str, column: int, text: str
) -> tuple[int | None, tuple[int | None, int | None] | None]:
    """`[i]` -> (i, None); `[i:j]` -> (None, (i, j)), either end open."""
    parts = inside.split(":")
    if len(parts) > 2:
        raise syntax_error(f"'{placeholder}': slices take no step; write [i:j]", column, text)
    for part in parts:
        if part and not INTEGER.fullmatch(part):
            raise syntax_error(f"'{placeholder}': '{part}' is not an integer index", column, text)
    if len(parts) == 1:
        if not parts[0]:
            raise syntax_error(f"'{placeholder}': empty index; write [i] or [i:j]", column, text)
        return int(parts[0]), None
    start, stop = (int(part) if part else None for part in parts)
    return None, (start, stop)
