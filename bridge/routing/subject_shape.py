"""The common subject templates, rendered straight from a message's origin.

Nearly every route's subject is a constant prefix and one field — `orders.{partition}`,
`legacy.{topic}`, `events.{rk}` — and the field takes few values (a lane's topic and partition,
a handful of routing keys). `SubjectTemplate.render` walks its steps over a `TemplateContext`,
which the mapping builds per message only for this; a `SubjectShape` reads the one value from the
origin and keeps the subject it made for each value (a bounded cache), so a message of a lane it
has seen costs a dictionary lookup.

It renders with the template's own escaping (`escape_token`, the routing key's words) and gives
up — None — wherever the general renderer might do anything but return `prefix + part`: a
missing value, an empty part, text that cannot be encoded. The caller then renders through the
template, which raises the error it always raised. tests/unit/test_subject_shape.py holds both
renderers to the same subjects.
"""

from __future__ import annotations

from collections.abc import Callable

from bridge.routing.subjects import escape_token
from bridge.routing.templates import SubjectTemplate, _escape_dotted

# The placeholders a shape takes: the template's field -> the origin's attribute (an origin of the
# other broker has none: getattr's default, as template_context leaves it None). The others
# (header, offset, message_id, hashes, word slices) need the context or vary per message.
ORIGIN_ATTRIBUTES = {
    "topic": "topic",
    "partition": "partition",
    "key": "key",
    "exchange": "exchange",
    "queue": "queue",
    "rk": "routing_key",
}
_CACHE_MAX = 1024  # distinct values kept per route; past it each is escaped again (still right)


def _one_token(value: object) -> str:
    return escape_token(value) if isinstance(value, str | bytes) else escape_token(str(value))


def _dotted(value: object) -> str:
    return _escape_dotted(value) if isinstance(value, str) else ""


class SubjectShape:
    """`prefix{field}` of one route: `render(origin)` is its subject, or None (render the template)."""

    __slots__ = ("_cache", "_escape", "attribute", "prefix")

    def __init__(self, prefix: str, attribute: str, escape: Callable[[object], str]) -> None:
        self.prefix = prefix
        self.attribute = attribute
        self._escape = escape
        self._cache: dict[object, str] = {}

    @classmethod
    def of(cls, template: SubjectTemplate) -> SubjectShape | None:
        """The shape of `template`, or None when it is not one this renders."""
        single = template.single
        if single is None:
            return None
        prefix, placeholder = single
        attribute = ORIGIN_ATTRIBUTES.get(placeholder.name)
        if attribute is None or placeholder.header is not None:
            return None
        if placeholder.index is not None or placeholder.bounds is not None:
            return None  # word picks and slices: the template's own steps
        return cls(prefix, attribute, _dotted if placeholder.name == "rk" else _one_token)

    def render(self, origin: object) -> str | None:
        value = getattr(origin, self.attribute, None)
        subject = self._cache.get(value)
        if subject is not None:
            return subject
        if value is None:
            return None  # the template says which value is missing
        try:
            part = self._escape(value)
            part.encode()
        except UnicodeEncodeError:
            return None  # the template says so, in its words
        if not part:
            return None  # an empty part: the template leaves it out, or refuses an empty subject
        subject = self.prefix + part
        if len(self._cache) < _CACHE_MAX:
            self._cache[value] = subject
        return subject
