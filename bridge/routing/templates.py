"""Subject and text templates: where in NATS a message lands, and what its Msg-Id says.

A subject template is literal tokens and placeholders, each placeholder a whole token::

    orders.{exchange}.{rk}      legacy.{topic}.{key}      events.{rk[1:]}      audit.{header:tenant}

Single-value placeholders ({exchange} {queue} {topic} {partition} {key} {header:NAME})
insert exactly one escaped token (see bridge.routing.subjects), so the topic
`orders.created` becomes the token `orders%2Ecreated`. Word placeholders insert one token
per word: {rk} is the routing key's AMQP words, {rk[i]} one word, {rk[i:j]} a Python-style
slice (possibly empty); {topic[i]} and {topic[i:j]} do the same over a topic split on ".".
Because placeholders are whole tokens and escaping is injective, `prefix.{rk}` gives
every routing key its own subject; messages share a subject only when the template leaves
out what tells them apart (or joins two variable-length slices that could trade words).

A text template (for Nats-Msg-Id and extra header values) has the same placeholders plus
{offset} {message_id} {timestamp}, anywhere in the text, rendered verbatim:
`{topic}/{partition}/{offset}`. `{{` and `}}` write literal braces in both kinds.

Both kinds are parsed once, when the mapping file loads, into a short list of render steps;
rendering a message walks that list without any parsing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import field
from functools import lru_cache
from types import MappingProxyType
from typing import Final

from bridge.errors import TemplateRenderError, TemplateSyntaxError
from bridge.per_message import per_message
from bridge.routing.amqp import split_amqp_words
from bridge.routing.subjects import ESCAPE_TABLE_KEEPING_DOTS, SAFE_OR_DOT_DELETE, escape_token
from bridge.routing.template_fields import SUBJECT_FIELDS, TEXT_FIELDS, WORD_FIELDS, lex_forward
from bridge.routing.template_syntax import Placeholder, Unit, syntax_error

_NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})


@per_message(kw_only=True)
class TemplateContext:
    """The values of one message that templates may use; None where the source has none.

    `timestamp` is the integer the source gave, in the source's unit (Kafka: milliseconds
    since the epoch; AMQP: seconds).
    """

    exchange: str | None = None
    queue: str | None = None
    routing_key: str | None = None
    topic: str | None = None
    partition: int | None = None
    key: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: _NO_HEADERS)  # shared, read-only
    offset: int | None = None
    message_id: str | None = None
    timestamp: int | None = None
    content_hash: str | None = None  # computed only for templates that use it (it hashes the body)
    auto: str | None = None  # the id `msg_id: auto` gives, without the route's prefix; only when used


# --------------------------------------------------------------------------- render steps

_Step = Callable[[TemplateContext], str]


def _missing(placeholder: Placeholder) -> TemplateRenderError:
    what = placeholder.header if placeholder.header is not None else placeholder.name
    if placeholder.header is not None:
        message = f"'{placeholder.source}': the message has no header '{what}'"
    elif placeholder.name == "key":
        message = f"'{placeholder.source}': the message has no key"
    else:
        message = f"'{placeholder.source}': the message has no {what} (is this template for another source?)"
    return TemplateRenderError(message, placeholder.source)


def _value_getter(placeholder: Placeholder) -> Callable[[TemplateContext], object]:
    if placeholder.header is not None:
        header = placeholder.header
        return lambda ctx: ctx.headers.get(header)
    attribute = "routing_key" if placeholder.name == "rk" else placeholder.name
    return lambda ctx: getattr(ctx, attribute)


def _words_step(placeholder: Placeholder, join: Callable[[list[str]], str]) -> _Step:
    """A step for {rk[i]}, {rk[i:j]}, {topic[i]}, {topic[i:j]}: pick words, then `join` them."""
    attribute = "routing_key" if placeholder.name == "rk" else "topic"
    index, bounds = placeholder.index, placeholder.bounds

    def words_of(ctx: TemplateContext) -> tuple[str, ...]:
        value = getattr(ctx, attribute)
        if value is None:
            raise _missing(placeholder)
        return split_amqp_words(value)

    if index is not None:

        def one_word(ctx: TemplateContext) -> str:
            words = words_of(ctx)
            try:
                return join([words[index]])
            except IndexError:
                raise TemplateRenderError(
                    f"'{placeholder.source}': {placeholder.name} {getattr(ctx, attribute)!r} has "
                    f"{len(words)} word(s), so index {index} is out of range",
                    placeholder.source,
                ) from None

        return one_word
    start, stop = bounds if bounds is not None else (None, None)

    def word_slice(ctx: TemplateContext) -> str:
        return join(list(words_of(ctx)[start:stop]))

    return word_slice


def _escape_words(words: list[str]) -> str:
    return ".".join([escape_token(word) for word in words])


def _escape_dotted(value: str) -> str:
    """All the AMQP words of `value`, each escaped, joined with "." — in one pass when possible."""
    if not value:
        return ""
    if value.isascii() and value[0] != "." and value[-1] != "." and ".." not in value:
        if not value.encode("ascii").translate(None, SAFE_OR_DOT_DELETE):
            return value
        return value.translate(ESCAPE_TABLE_KEEPING_DOTS)
    return _escape_words(value.split("."))


def _subject_step(placeholder: Placeholder) -> _Step:
    if placeholder.name == "rk" and placeholder.index is None and placeholder.bounds is None:

        def whole_key(ctx: TemplateContext) -> str:
            routing_key = ctx.routing_key
            if routing_key is None:
                raise _missing(placeholder)
            return _escape_dotted(routing_key)

        return whole_key
    if placeholder.name in WORD_FIELDS and (placeholder.index is not None or placeholder.bounds is not None):
        return _words_step(placeholder, _escape_words)
    get = _value_getter(placeholder)

    def one_token(ctx: TemplateContext) -> str:
        value = get(ctx)
        if value is None:
            raise _missing(placeholder)
        if isinstance(value, str | bytes):
            return escape_token(value)
        return escape_token(str(value))

    return one_token


def _text_step(placeholder: Placeholder) -> _Step:
    if placeholder.name in WORD_FIELDS and (placeholder.index is not None or placeholder.bounds is not None):
        return _words_step(placeholder, ".".join)
    get = _value_getter(placeholder)

    def verbatim(ctx: TemplateContext) -> str:
        value = get(ctx)
        if value is None:
            raise _missing(placeholder)
        if isinstance(value, bytes):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                raise TemplateRenderError(
                    f"'{placeholder.source}': the key is not UTF-8 text, so it cannot be written into text",
                    placeholder.source,
                ) from None
        return value if isinstance(value, str) else str(value)

    return verbatim


# --------------------------------------------------------------------------- templates


def _literal_token_problem(token: str) -> tuple[str, int] | None:
    """Why a literal subject token is invalid and at which offset in it, or None if it is fine."""
    if token in ("*", ">"):
        return f"wildcard '{token}' in a subject template: a published subject must be literal", 0
    for offset, char in enumerate(token):
        if char == " " or not char.isprintable():
            return f"literal token {token!r} contains whitespace or a control character ({char!r})", offset
    return None


class SubjectTemplate:
    """A parsed subject template; render() gives the subject for one message."""

    __slots__ = ("_steps", "fields", "single", "text")

    def __init__(
        self,
        text: str,
        steps: tuple[str | _Step, ...],
        fields: frozenset[str],
        single: tuple[str, Placeholder] | None = None,
    ) -> None:
        self.text = text
        self._steps = steps
        self.fields = fields  # e.g. {"rk", "exchange", "header:tenant"}, for config checks
        # `prefix.{field}` or `{field}` alone: (the prefix with its dot, or "", and the placeholder),
        # the shape bridge.routing.subject_shape renders without a TemplateContext.
        self.single = single

    @property
    def constant(self) -> str | None:
        """The subject every message gets, when the template has no placeholder."""
        return self._steps[0] if not self.fields and isinstance(self._steps[0], str) else None

    @classmethod
    def parse(cls, text: str) -> SubjectTemplate:
        """Parse `text`, raising TemplateSyntaxError with the column of the first problem."""
        return _parse_subject(text)

    def render(self, ctx: TemplateContext) -> str:
        """The subject for one message; TemplateRenderError if a value is missing or the
        subject would be empty (e.g. `{rk}` alone and an empty routing key)."""
        parts: list[str] = []
        try:
            for step in self._steps:
                part = step if isinstance(step, str) else step(ctx)
                if part:
                    parts.append(part)
        except UnicodeEncodeError as error:
            raise TemplateRenderError(f"subject template {self.text!r}: a value is not valid text ({error})") from None
        if not parts:
            raise TemplateRenderError(f"subject template {self.text!r} renders an empty subject for this message")
        return ".".join(parts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SubjectTemplate) and other.text == self.text

    def __hash__(self) -> int:
        return hash((SubjectTemplate, self.text))

    def __repr__(self) -> str:
        return f"SubjectTemplate({self.text!r})"


def _whole_token_error(placeholder: Placeholder, text: str) -> TemplateSyntaxError:
    return syntax_error(
        f"placeholder '{placeholder.source}' must be a whole subject token: put '.' (or the "
        "start or end of the template) on both sides of it",
        placeholder.column,
        text,
    )


def _unit_column(units: list[Unit], offset: int) -> int:
    unit = units[offset]
    return unit[1] if isinstance(unit, tuple) else unit.column


@lru_cache(maxsize=1024)
def _parse_subject(text: str) -> SubjectTemplate:
    if not text:
        raise syntax_error("empty subject template", 0, text)
    units = lex_forward(text, SUBJECT_FIELDS)
    # Cut the units into tokens at each literal ".", remembering where each token starts.
    tokens: list[tuple[list[Unit], int]] = []
    current: list[Unit] = []
    start = 0
    for unit in units:
        if isinstance(unit, tuple) and unit[0] == ".":
            tokens.append((current, start))
            current = []
            start = unit[1] + 1
        else:
            current.append(unit)
    tokens.append((current, start))

    steps: list[str | _Step] = []
    literal: list[str] = []
    for token_units, token_start in tokens:
        placeholders = [unit for unit in token_units if isinstance(unit, Placeholder)]
        if placeholders:
            if len(token_units) > 1:
                raise _whole_token_error(placeholders[0], text)
            placeholder = placeholders[0]
            if literal:
                steps.append(".".join(literal))
                literal = []
            steps.append(_subject_step(placeholder))
            continue
        token = "".join(unit[0] for unit in token_units if isinstance(unit, tuple))
        if not token:
            column = min(token_start, len(text) - 1)
            raise syntax_error(
                "empty token in subject template: two dots in a row, or a dot at the start or end",
                column,
                text,
            )
        problem = _literal_token_problem(token)
        if problem is not None:
            message, offset = problem
            raise syntax_error(message, _unit_column(token_units, offset), text)
        literal.append(token)
    if literal:
        steps.append(".".join(literal))
    placeholders = [unit for unit in units if isinstance(unit, Placeholder)]
    fields = frozenset(unit.field_name for unit in placeholders)
    single = None
    if len(placeholders) == 1 and len(steps) <= 2 and not isinstance(steps[-1], str):
        single = (f"{steps[0]}." if len(steps) == 2 else "", placeholders[0])
    return SubjectTemplate(text, tuple(steps), fields, single)


class TextTemplate:
    """A parsed text template (Nats-Msg-Id, header values); render() fills in one message.

    Values are inserted verbatim, not escaped. The result feeds NATS header values, so a
    rendered line break (from a header value, say) is a TemplateRenderError rather than a
    corrupted header block. An empty result is returned as is: the caller decides whether
    an empty value is acceptable (an empty Msg-Id is not).
    """

    __slots__ = ("_steps", "fields", "parts", "text")

    def __init__(self, text: str, parts: tuple[str | Placeholder, ...]) -> None:
        self.text = text
        self.parts = parts  # the literal texts and placeholders, in order (routing.text_shape reads them)
        self._steps = tuple(part if isinstance(part, str) else _text_step(part) for part in parts)
        self.fields = frozenset(part.field_name for part in parts if not isinstance(part, str))

    @classmethod
    def parse(cls, text: str) -> TextTemplate:
        """Parse `text`, raising TemplateSyntaxError with the column of the first problem."""
        return _parse_text(text)

    def render(self, ctx: TemplateContext) -> str:
        """The text for one message; TemplateRenderError if a value it needs is missing."""
        result = "".join([step if isinstance(step, str) else step(ctx) for step in self._steps])
        if "\n" in result or "\r" in result:
            raise TemplateRenderError(f"text template {self.text!r} renders a line break for this message")
        return result

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TextTemplate) and other.text == self.text

    def __hash__(self) -> int:
        return hash((TextTemplate, self.text))

    def __repr__(self) -> str:
        return f"TextTemplate({self.text!r})"


@lru_cache(maxsize=1024)
def _parse_text(text: str) -> TextTemplate:
    parts: list[str | Placeholder] = []
    literal: list[str] = []
    for unit in lex_forward(text, TEXT_FIELDS):
        if isinstance(unit, tuple):
            literal.append(unit[0])
            continue
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(unit)
    if literal:
        parts.append("".join(literal))
    return TextTemplate(text, tuple(parts))
