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
from bridge.routing.template_syntax import Placeholder
from bridge.routing.templates import TextTemplate

_Origin = KafkaOrigin | AmqpOrigin
_Getter = Callable[[_Origin], object]


def _message_id(origin: _Origin) -> object:
    if type(origin) is not AmqpOrigin:
        return None
    value = origin.properties.get("message_id")
    return None if value is None else str(value)  # as template_context gives it


def _attribute(kafka: str | None, amqp: str | None) -> _Getter:
    def get(origin: _Origin) -> object:
        name = kafka if type(origin) is KafkaOrigin else amqp
        return None if name is None else getattr(origin, name)

    return get


# The placeholders a shape takes, and where each origin keeps the value `template_context` gives
# it (None: the context has none for that origin). The others (headers, key, timestamp, hashes,
# auto, word picks) need the context's conversions.
_GETTERS: dict[str, _Getter] = {
    "exchange": _attribute(None, "exchange"),
    "queue": _attribute(None, "queue"),
    "rk": _attribute(None, "routing_key"),
    "topic": _attribute("topic", None),
    "partition": _attribute("partition", None),
    "offset": _attribute("offset", "stream_offset"),
    "message_id": _message_id,
}


def _getter(placeholder: Placeholder) -> _Getter | None:
    if placeholder.header is not None or placeholder.index is not None or placeholder.bounds is not None:
        return None
    return _GETTERS.get(placeholder.name)


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
