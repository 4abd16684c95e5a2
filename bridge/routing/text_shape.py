"""The common Msg-Id templates, rendered straight from a message's origin.

A route that names its Msg-Id by a template of the message's own coordinates — `{message_id}`,
`{exchange}/{message_id}`, `{topic}-{partition}-{offset}` — renders it per message through
`TextTemplate.render`, which walks its steps over a `TemplateContext` the mapping builds for it:
about 1.5 µs of a RabbitMQ delivery's 17 in the bridge (bench/README.md). A `TextShape` joins the
literal texts with the values read from the origin, as the template's verbatim steps write them.

It gives up — None — wherever the template might do anything else: a value the message lacks, a
line break, an empty id. The caller then renders through the template, which raises the error it
always raised. tests/unit/test_text_shape.py holds both renderers to the same texts.
"""

from __future__ import annotations

from collections.abc import Callable

from bridge.message import AmqpOrigin, KafkaOrigin
from bridge.routing.subject_shape import ORIGIN_ATTRIBUTES
from bridge.routing.template_syntax import Placeholder
from bridge.routing.templates import TextTemplate

_Origin = KafkaOrigin | AmqpOrigin
_Getter = Callable[[_Origin], object]


def _message_id(origin: _Origin) -> object:
    if not isinstance(origin, AmqpOrigin):
        return None
    value = origin.properties.get("message_id")
    return None if value is None else str(value)  # as template_context gives it


def _offset(origin: _Origin) -> object:
    return origin.offset if isinstance(origin, KafkaOrigin) else origin.stream_offset


def _origin_attribute(attribute: str) -> _Getter:
    return lambda origin: getattr(origin, attribute, None)


def _getter(placeholder: Placeholder) -> _Getter | None:
    """Where the origin keeps the value `template_context` gives the placeholder; None for what
    needs the context's conversions (headers, the key's bytes, timestamps, hashes, auto, word picks)."""
    if placeholder.header is not None or placeholder.index is not None or placeholder.bounds is not None:
        return None
    name = placeholder.name
    if name == "message_id":
        return _message_id
    if name == "offset":
        return _offset
    attribute = ORIGIN_ATTRIBUTES.get(name)
    return None if attribute is None or name == "key" else _origin_attribute(attribute)


class TextShape:
    """One route's Msg-Id template over the origin: `render(origin)` is its text, or None."""

    __slots__ = ("_parts",)

    def __init__(self, parts: tuple[str | _Getter, ...]) -> None:
        self._parts = parts

    @classmethod
    def of(cls, template: TextTemplate) -> TextShape | None:
        """The shape of `template`, or None when it reads anything a shape does not."""
        parts: list[str | _Getter] = []
        for part in template.parts:
            if isinstance(part, str):
                parts.append(part)
                continue
            getter = _getter(part)
            if getter is None:
                return None
            parts.append(getter)
        return cls(tuple(parts)) if any(not isinstance(part, str) for part in parts) else None

    def render(self, origin: _Origin) -> str | None:
        texts: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                texts.append(part)
                continue
            value = part(origin)
            if isinstance(value, str):
                texts.append(value)
            elif value is None or isinstance(value, bytes):
                return None  # missing, or a key the template decodes (and may refuse) itself
            else:
                texts.append(str(value))  # as the template's verbatim step writes it
        text = "".join(texts)
        if not text or "\n" in text or "\r" in text:
            return None  # the template's error (a line break), or the route's (an empty id)
        return text
