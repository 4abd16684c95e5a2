"""Every subject a route can publish to, as shapes, and which streams those subjects reach.

A route's subject template is literal tokens and placeholders. What a placeholder inserts is
known partly from the route itself, and the shapes stay precise with it:

- `{topic}` / `{topic[i:j]}` of a Kafka route with a topic *list* are the listed topics'
  (escaped) words, one shape per topic; with a `topic_pattern`, the literal words the regex
  starts with (`clicks\\..*` -> `clicks` then any words), else any words;
- `{rk}` / `{rk[i:j]}` of a shadow route are the binding key's words, one shape per binding
  (`*` -> one token, `#` -> zero or more tokens); a direct binding is its literal words; a
  fanout/headers exchange or a consumed queue can carry any routing key (zero or more words);
- `{exchange}` / `{queue}` are literal when the route names them;
- `{partition}` `{key}` `{header:NAME}` are exactly one token (escaping never yields an empty
  or dotted token: an empty value is `%`).

The shapes themselves, and how they meet stream filters, are `bridge.routing.shapes`. The
runner, `cutover status`, dry-run and verify all ask here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bridge.brokers.rabbitmq.names import shadow_queue_name
from bridge.config.routes import FromKafka, FromRabbitMQ, RabbitMQMode, RouteConfig
from bridge.config.streams import StreamConfig
from bridge.routing.amqp import ExchangeType
from bridge.routing.shapes import (
    MANY,
    ONE,
    Lit,
    Shape,
    Unit,
    binding_words,
    filter_shape,
    intersects,
    literal_words,
    regex_words,
    select_words,
)
from bridge.routing.subjects import escape_token


@dataclass(frozen=True, slots=True)
class RouteShape:
    """One family of subjects of a route, and what it is derived from (a topic, a binding...)."""

    shape: Shape
    origin: str  # "topic 'orders'", "binding 'order.#'", "any routing key"
    never_renders: str | None = None  # why every message of this family fails to map, if it does


_TOKEN = re.compile(r"\{([^{}]*)\}")
_INDEX = re.compile(r"^(rk|topic)\[(-?\d*)(?::(-?\d*))?\]$")


def _template_tokens(template: str) -> list[str]:
    """The template's tokens (placeholders are whole tokens; `{{`/`}}` are literal braces)."""
    return template.split(".")


def _unescape_braces(token: str) -> str:
    return token.replace("{{", "{").replace("}}", "}")


def route_shapes(service: str, route: RouteConfig) -> list[RouteShape]:
    """Every subject family a route can publish to, one per topic or binding it reads."""
    subscription = route.from_
    families: list[tuple[str, dict[str, list[Unit]]]] = []
    if isinstance(subscription, FromKafka):
        if subscription.topics:
            families = [
                (f"topic '{topic}'", {"topic": literal_words(topic), "topic-name": [Lit(escape_token(topic))]})
                for topic in subscription.topics
            ]
        else:
            pattern = subscription.topic_pattern or ""
            families = [(f"topic_pattern '{pattern}'", {"topic": regex_words(pattern)})]
    else:
        families = _rabbit_families(service, route.name, subscription)
    return [_render(route.to, origin, words) for origin, words in families]


def streams_reached(service: str, route: RouteConfig, streams: Sequence[StreamConfig]) -> list[StreamConfig]:
    """The streams that take any of the subjects the route can publish to (a `#` binding can also
    produce the bare prefix, which a `prefix.>` stream does not take: dry-run reports that)."""
    shapes = route_shapes(service, route)
    return [
        stream
        for stream in streams
        if any(intersects(shape.shape, filter_shape(f)) for shape in shapes for f in stream.subjects)
    ]


def _rabbit_families(service: str, route: str, subscription: FromRabbitMQ) -> list[tuple[str, dict[str, list[Unit]]]]:
    mode = subscription.effective_mode
    known: dict[str, list[Unit]] = {}
    if mode is RabbitMQMode.SHADOW and subscription.exchange is not None:
        known["exchange"] = [Lit(escape_token(subscription.exchange))]
        known["queue"] = [Lit(escape_token(subscription.queue or shadow_queue_name(service, route)))]
        if subscription.type in (ExchangeType.TOPIC, ExchangeType.DIRECT):
            return [
                (f"binding '{binding}'", {**known, "rk": binding_words(binding, subscription.type)})
                for binding in subscription.bindings
            ]
        return [(f"any routing key ({subscription.type} exchange)", {**known, "rk": [MANY]})]
    if subscription.queue is not None:
        known["queue"] = [Lit(escape_token(subscription.queue))]
    return [(f"any routing key ({mode} mode)", {**known, "rk": [MANY]})]


def _render(template: str, origin: str, words: dict[str, list[Unit]]) -> RouteShape:
    units: list[Unit] = []
    never: str | None = None
    for token in _template_tokens(template):
        placeholder = _TOKEN.fullmatch(token) if not token.startswith("{{") else None
        if placeholder is None:
            units.append(Lit(_unescape_braces(token)))
            continue
        body = placeholder.group(1)
        indexed = _INDEX.match(body)
        if body == "rk":
            units += words.get("rk", [MANY])
        elif body == "topic":
            units += words.get("topic-name", [ONE])  # the whole name as one escaped token
        elif indexed is not None:
            name, first, second = indexed.group(1), indexed.group(2), indexed.group(3)
            base = words.get(name, [MANY])
            if second is None and ":" not in body:
                selected = select_words(base, int(first), None)
            else:
                bounds = (int(first) if first else None, int(second) if second else None)
                selected = select_words(base, None, bounds)
            if selected is None:
                never = f"'{{{body}}}' is out of range for {origin}: every such message fails to map"
                selected = [ONE]
            units += selected
        elif body in ("exchange", "queue"):
            units += words.get(body, [ONE])
        else:
            units.append(ONE)  # {partition} {key} {header:NAME}: exactly one escaped token
    return RouteShape(tuple(units), origin, never)


class SubjectFit:
    """Whether a literal subject is one a route's template can produce (its dry-run shapes).

    Cached per subject: a stream holds few distinct subjects in practice ({partition}), and
    the cache is cleared when many ({key}) would make it grow without bound.
    """

    _LIMIT = 65536

    def __init__(self, shapes: Sequence[Shape]) -> None:
        self._shapes = tuple(shapes)
        self._cache: dict[str, bool] = {}

    def __call__(self, subject: str) -> bool:
        hit = self._cache.get(subject)
        if hit is None:
            literal = filter_shape(subject)
            hit = any(intersects(shape, literal) for shape in self._shapes)
            if len(self._cache) >= self._LIMIT:
                self._cache.clear()
            self._cache[subject] = hit
        return hit

    @classmethod
    def for_route(cls, service: str, route: RouteConfig) -> SubjectFit:
        return cls([family.shape for family in route_shapes(service, route)])
