"""A SubjectShape renders `prefix.{field}` from the origin exactly as the template renders it, or
leaves the message to the template (None); it never gives another subject."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import TemplateRenderError
from bridge.mapping import template_context
from bridge.message import AmqpOrigin, KafkaOrigin, SourceMessage
from bridge.routing import SubjectTemplate
from bridge.routing.subject_shape import SubjectShape

SHAPED = ["p.{topic}", "{topic}", "a.b.{partition}", "k.{key}", "x.{exchange}", "{queue}", "e.{rk}", "{rk}"]

values = st.one_of(st.text(max_size=10), st.sampled_from(["a.b", "", "..", ".a", "a.", "%", "x y", "\ud800", "ü.é"]))
origins = st.one_of(
    st.builds(
        KafkaOrigin,
        topic=values,
        partition=st.integers(-2, 100),
        offset=st.integers(0, 10),
        key=st.one_of(st.none(), st.binary(max_size=6), st.sampled_from([b"", b".", b"a.b", b"\xff"])),
    ),
    st.builds(AmqpOrigin, exchange=values, routing_key=values, queue=st.one_of(st.none(), values)),
)


def rendered(template: SubjectTemplate, origin: KafkaOrigin | AmqpOrigin) -> str:
    try:
        return template.render(template_context(SourceMessage(origin, b""), with_headers=False))
    except TemplateRenderError as error:
        return f"error: {error}"


@settings(max_examples=500, deadline=None)
@given(text=st.sampled_from(SHAPED), origin=origins)
def test_a_shape_renders_what_the_template_renders_or_nothing(text: str, origin: KafkaOrigin | AmqpOrigin) -> None:
    template = SubjectTemplate.parse(text)
    shape = SubjectShape.of(template)
    assert shape is not None
    for _ in range(2):  # the second time from its cache
        subject = shape.render(origin)
        if subject is not None:
            assert subject == rendered(template, origin)


@pytest.mark.parametrize(
    ("text", "origin", "subject"),
    [
        ("p.{topic}", KafkaOrigin("orders", 1, 2), "p.orders"),
        ("p.{topic}", KafkaOrigin("a.b", 1, 2), "p.a%2Eb"),
        ("a.b.{partition}", KafkaOrigin("t", 7, 2), "a.b.7"),
        ("k.{key}", KafkaOrigin("t", 7, 2, b"customer-42"), "k.customer-42"),
        ("e.{rk}", AmqpOrigin("x", "a.b.c"), "e.a.b.c"),
        ("{rk}", AmqpOrigin("x", "a b"), "a%20b"),
        ("x.{exchange}", AmqpOrigin("ex", "k"), "x.ex"),
    ],
)
def test_the_common_values_are_rendered_by_the_shape(text: str, origin: KafkaOrigin | AmqpOrigin, subject: str) -> None:
    template = SubjectTemplate.parse(text)
    shape = SubjectShape.of(template)
    assert shape is not None
    assert shape.render(origin) == subject == rendered(template, origin)


@pytest.mark.parametrize(
    ("text", "origin"),
    [
        ("e.{rk}", AmqpOrigin("x", "")),  # an empty part: the template drops it
        ("{rk}", AmqpOrigin("x", "")),  # an empty subject: the template refuses it
        ("k.{key}", KafkaOrigin("t", 1, 2, None)),  # no key: the template names what is missing
        ("p.{topic}", AmqpOrigin("x", "k")),  # a field of the other broker
        ("p.{topic}", KafkaOrigin("\ud800", 1, 2)),  # no text: the template says so
    ],
)
def test_what_the_template_must_answer_is_left_to_it(text: str, origin: KafkaOrigin | AmqpOrigin) -> None:
    shape = SubjectShape.of(SubjectTemplate.parse(text))
    assert shape is not None
    assert shape.render(origin) is None


@pytest.mark.parametrize(
    "text", ["a.{topic}.b", "{topic}.{partition}", "h.{header:x}", "w.{rk[0]}", "w.{rk[1:]}", "c.d"]
)
def test_other_templates_have_no_shape(text: str) -> None:
    assert SubjectShape.of(SubjectTemplate.parse(text)) is None


def test_a_template_without_placeholders_is_constant() -> None:
    assert SubjectTemplate.parse("c.d").constant == "c.d"
    assert SubjectTemplate.parse("c.{topic}").constant is None
