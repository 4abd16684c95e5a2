"""A TextShape renders a Msg-Id template from the origin exactly as the template renders it, or
leaves the message to the template (None); it never gives another text."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config import load_config_text
from bridge.errors import TemplateRenderError
from bridge.mapping import CompiledRoute, MappingError, template_context
from bridge.message import AmqpOrigin, KafkaOrigin, SourceMessage
from bridge.routing import TextTemplate
from bridge.routing.text_shape import TextShape

SHAPED = [
    "{message_id}",
    "{exchange}/{message_id}",
    "id-{message_id}-{rk}",
    "{topic}-{partition}-{offset}",
    "{queue}:{offset}",
    "{{{message_id}}}",
    "{exchange}{queue}{rk}",
]

texts = st.one_of(st.text(max_size=8), st.sampled_from(["", "a\nb", "a\rb", " x ", "%", "\ud800", "é"]))
ids = st.one_of(st.none(), texts, st.integers(-5, 5), st.binary(max_size=4), st.booleans())
origins = st.one_of(
    st.builds(KafkaOrigin, topic=texts, partition=st.integers(-2, 100), offset=st.integers(0, 10)),
    st.builds(
        AmqpOrigin,
        exchange=texts,
        routing_key=texts,
        queue=st.one_of(st.none(), texts),
        properties=st.fixed_dictionaries({}, optional={"message_id": ids}),
        stream_offset=st.one_of(st.none(), st.integers(0, 10**12)),
    ),
)


def rendered(template: TextTemplate, origin: KafkaOrigin | AmqpOrigin) -> str:
    try:
        return template.render(template_context(SourceMessage(origin, b""), with_headers=False))
    except TemplateRenderError as error:
        return f"error: {error}"


@settings(max_examples=800, deadline=None)
@given(text=st.sampled_from(SHAPED), origin=origins)
def test_a_shape_renders_what_the_template_renders_or_nothing(text: str, origin: KafkaOrigin | AmqpOrigin) -> None:
    template = TextTemplate.parse(text)
    shape = TextShape.of(template)
    assert shape is not None
    result = shape.render(origin)
    if result is not None:
        assert result == rendered(template, origin)


@pytest.mark.parametrize(
    ("text", "origin", "result"),
    [
        ("{message_id}", AmqpOrigin("x", "k", properties={"message_id": "order-7"}), "order-7"),
        ("{message_id}", AmqpOrigin("x", "k", properties={"message_id": 42}), "42"),
        ("{exchange}/{message_id}", AmqpOrigin("ex", "k", properties={"message_id": "m"}), "ex/m"),
        ("{topic}-{partition}-{offset}", KafkaOrigin("orders", 3, 9), "orders-3-9"),
        ("{queue}:{offset}", AmqpOrigin("", "k", queue="q", stream_offset=12), "q:12"),
    ],
)
def test_the_common_ids_are_rendered_by_the_shape(text: str, origin: KafkaOrigin | AmqpOrigin, result: str) -> None:
    template = TextTemplate.parse(text)
    shape = TextShape.of(template)
    assert shape is not None
    assert shape.render(origin) == result == rendered(template, origin)


@pytest.mark.parametrize(
    ("text", "origin"),
    [
        ("{message_id}", AmqpOrigin("x", "k")),  # no message_id: the template names what is missing
        ("{message_id}", KafkaOrigin("t", 1, 2)),  # a field of the other broker
        ("{message_id}", AmqpOrigin("x", "k", properties={"message_id": "a\nb"})),  # a line break
        ("{message_id}", AmqpOrigin("x", "k", properties={"message_id": ""})),  # an empty id
        ("{queue}:{offset}", AmqpOrigin("x", "k", queue="q")),  # not from a stream queue
    ],
)
def test_what_the_template_must_answer_is_left_to_it(text: str, origin: KafkaOrigin | AmqpOrigin) -> None:
    shape = TextShape.of(TextTemplate.parse(text))
    assert shape is not None
    assert shape.render(origin) is None


@pytest.mark.parametrize(
    "text", ["{header:x}", "{key}", "{timestamp}", "{content_hash}", "{auto}", "{rk[0]}", "{topic[1:]}", "const"]
)
def test_other_templates_have_no_shape(text: str) -> None:
    assert TextShape.of(TextTemplate.parse(text)) is None


def _route(msg_id: str) -> CompiledRoute:
    mapping = f"""
sources:
  r: {{type: rabbitmq, url: "amqp://r/"}}
services:
  svc:
    routes:
      - {{name: one, source: r, from: {{queue: q, mode: queue}}, to: "s.{{rk}}", msg_id: "{msg_id}"}}
"""
    config = load_config_text(mapping, "m.yaml", {})
    [(service, route)] = list(config.routes())
    return CompiledRoute.compile(service, route)


@pytest.mark.parametrize(
    "properties",
    [{"message_id": "order-7"}, {"message_id": "with space "}, {"message_id": "100%"}, {"message_id": 5}, {}],
)
def test_a_route_gives_the_same_id_by_its_shape_as_by_its_template(properties: dict[str, Any]) -> None:
    route = _route("{exchange}/{message_id}")
    assert route.msg_id_shape is not None
    message = SourceMessage(AmqpOrigin("ex", "a.b", queue="q", properties=properties), b"body")
    by_template: str | Exception
    try:
        by_template = route.msg_id(message, route.context(message))
    except TemplateRenderError as error:
        by_template = error
    if isinstance(by_template, Exception):
        with pytest.raises(MappingError, match="message_id"):
            route.map(message)
        return
    assert route.msg_id(message) == by_template
    assert route.map(message).msg_id == by_template
