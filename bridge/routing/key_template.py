"""Target templates of reverse routes: the RabbitMQ routing key or Kafka record key of a NATS message.

A reverse route writes a JetStream message to a legacy broker, which addresses messages by a
routing key (RabbitMQ) or partitions them by a record key (Kafka). Both are text built from
the NATS message, with literal text around placeholders::

    {subject}           the whole subject                       orders.eu.created
    {subject[i]}        one token; negative counts from the end {subject[-1]} -> created
    {subject[i:j]}      tokens i..j-1 joined by '.'; open ends   {subject[1:]} -> eu.created
    {header:NAME}       a NATS header's value (decoded when the   {header:tenant}
                        message lists it in Bridge-Base64-Headers)
    {{ and }}           a literal brace

A template is parsed once, when the mapping file loads (`parse` raises TemplateSyntaxError,
a ValueError, with the column of the problem), into a short tuple of render steps; rendering
one message walks that tuple without any parsing. A value a message lacks (a header it does
not carry, a token index past its last token) raises TemplateRenderError naming the
placeholder: the route terminates that message instead of guessing a key for it.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import re
from collections.abc import Callable, Mapping
from typing import Final

from bridge.errors import TemplateRenderError, TemplateSyntaxError
from bridge.headers import BASE64_HEADERS
from bridge.routing.template_syntax import Placeholder, lex, parse_index, syntax_error

__all__ = ["KeyTemplate", "TemplateRenderError", "TemplateSyntaxError", "parse"]

# One render step: (subject, its tokens (empty unless a step needs them), headers) -> text.
_Step = Callable[[str, list[str], Mapping[str, str]], str]

_SUBJECT_INDEX: Final = re.compile(r"subject\[([^\]]*)\]")
# NATS header names are RFC 7230 tokens: anything else could never match a header.
_HEADER_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_KNOWN: Final = "{subject} {subject[i]} {subject[i:j]} {header:NAME}"


class KeyTemplate:
    """A parsed routing-key / record-key template; `render` gives the key of one message."""

    __slots__ = ("_needs_tokens", "_steps", "_whole_subject", "headers", "text")

    def __init__(
        self, text: str, steps: tuple[str | _Step, ...], *, needs_tokens: bool, headers: frozenset[str]
    ) -> None:
        self.text = text
        self._steps = steps
        self._needs_tokens = needs_tokens
        self.headers = headers  # header names the template reads, for config checks and docs
        # `{subject}` alone is the default routing key: render it without walking any steps.
        self._whole_subject = len(steps) == 1 and steps[0] is _whole_subject

    def render(self, subject: str, headers: Mapping[str, str] | None = None) -> str:
        """The key for a message on `subject` carrying `headers`; TemplateRenderError when the
        message lacks a value the template needs."""
        if self._whole_subject:
            return subject
        tokens = subject.split(".") if self._needs_tokens else _NO_TOKENS
        values = headers if headers is not None else _NO_HEADERS
        return "".join([step if isinstance(step, str) else step(subject, tokens, values) for step in self._steps])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeyTemplate) and other.text == self.text

    def __hash__(self) -> int:
        return hash((KeyTemplate, self.text))

    def __repr__(self) -> str:
        return f"KeyTemplate({self.text!r})"


_NO_TOKENS: Final[list[str]] = []
_NO_HEADERS: Final[Mapping[str, str]] = {}


def parse(text: str) -> KeyTemplate:
    """Parse a routing-key or record-key template; TemplateSyntaxError (a ValueError) says what
    is wrong and where (`column`, 0-based; `pointer()` draws a caret under it)."""
    units = lex(text, lambda body, column: _placeholder(body, column, text))
    placeholders = [unit for unit in units if isinstance(unit, Placeholder)]
    steps: list[str | _Step] = []
    literal: list[str] = []
    for unit in units:
        if isinstance(unit, tuple):
            literal.append(unit[0])
            continue
        if literal:
            steps.append("".join(literal))
            literal.clear()
        steps.append(_step(unit))
    if literal:
        steps.append("".join(literal))
    return KeyTemplate(
        text,
        tuple(steps),
        needs_tokens=any(p.index is not None or p.bounds is not None for p in placeholders),
        headers=frozenset(p.header for p in placeholders if p.header is not None),
    )


def _placeholder(body: str, column: int, text: str) -> Placeholder:
    """One placeholder in a reverse route's vocabulary: {subject}, {subject[i]}, {subject[i:j]},
    {header:NAME}."""
    source = f"{{{body}}}"
    if body == "subject":
        return Placeholder(source, column, "subject")
    if body.startswith("header:"):
        name = body[len("header:") :]
        if not name:
            raise syntax_error("'{header:}' needs a header name, e.g. '{header:tenant}'", column, text)
        if not _HEADER_TOKEN.fullmatch(name):
            raise syntax_error(
                f"'{source}': {name!r} is not a valid NATS header name (no spaces, ':' or braces)", column, text
            )
        return Placeholder(source, column, "header", header=name)
    match = _SUBJECT_INDEX.fullmatch(body)
    if match is not None:
        index, bounds = parse_index(source, match.group(1), column, text)
        return Placeholder(source, column, "subject", index=index, bounds=bounds)
    if not body:
        raise syntax_error("empty placeholder '{}'; write '{{' for a literal brace", column, text)
    hint = f"; a reverse route knows {_KNOWN}"
    name, bracket, rest = body.partition("[")
    if ":" in body and not bracket:
        hint = " — did you mean '{header:" + body.partition(":")[2] + "}'?"
    elif difflib.get_close_matches(name, ["subject"], n=1, cutoff=0.6):
        hint = " — did you mean '{subject" + bracket + rest + "}'?"
    raise syntax_error(f"unknown placeholder '{source}'{hint}", column, text)


def _step(placeholder: Placeholder) -> _Step:
    if placeholder.header is not None:
        return _header_step(placeholder.header, placeholder.source)
    if placeholder.index is not None:
        return _token_step(placeholder.index, placeholder.source)
    if placeholder.bounds is not None:
        return _slice_step(*placeholder.bounds)
    return _whole_subject


def _whole_subject(subject: str, _tokens: list[str], _headers: Mapping[str, str]) -> str:
    return subject


def _header_step(name: str, source: str) -> _Step:
    lowered = name.lower()

    def header(_subject: str, _tokens: list[str], headers: Mapping[str, str]) -> str:
        value = headers.get(name)
        if value is None:
            # NATS header names are case-sensitive on the wire, but people write them as in HTTP.
            value = next((item for key, item in headers.items() if key.lower() == lowered), None)
            if value is None:
                raise TemplateRenderError(f"'{source}': the message has no header '{name}'", source)
        listed = headers.get(BASE64_HEADERS)
        if listed and name in listed.split(","):
            # Text that would not survive the wire as it was (line breaks, edge spaces) travels
            # base64: the key is the original text, so a routing key round-trips exactly.
            try:
                return base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise TemplateRenderError(
                    f"'{source}': header '{name}' is listed as base64 but is not base64 of UTF-8 text", source
                ) from None
        return value

    return header


def _token_step(position: int, source: str) -> _Step:
    def one_token(subject: str, tokens: list[str], _headers: Mapping[str, str]) -> str:
        try:
            return tokens[position]
        except IndexError:
            raise TemplateRenderError(
                f"'{source}': subject '{subject}' has {len(tokens)} token(s), so index {position} is out of range",
                source,
            ) from None

    return one_token


def _slice_step(start: int | None, stop: int | None) -> _Step:
    def token_slice(_subject: str, tokens: list[str], _headers: Mapping[str, str]) -> str:
        return ".".join(tokens[start:stop])

    return token_slice
