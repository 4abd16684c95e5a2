"""Subject templates place each value in exactly one token; text templates write values verbatim."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import BridgeError
from bridge.routing import (
    SubjectTemplate,
    TemplateContext,
    TemplateError,
    TemplateRenderError,
    TemplateSyntaxError,
    TextTemplate,
    escape_token,
    is_valid_subject,
    split_amqp_words,
    unescape_token_str,
)

PROPERTY = settings(max_examples=300, deadline=None)


def amqp(routing_key: str = "a.b.c", **kwargs: object) -> TemplateContext:
    fields: dict[str, object] = {"exchange": "orders", "queue": "q1", "routing_key": routing_key}
    fields.update(kwargs)
    return TemplateContext(**fields)  # type: ignore[arg-type]


def kafka(topic: str = "orders.created", **kwargs: object) -> TemplateContext:
    fields: dict[str, object] = {"topic": topic, "partition": 3, "key": b"k1", "offset": 42}
    fields.update(kwargs)
    return TemplateContext(**fields)  # type: ignore[arg-type]


def render(template: str, ctx: TemplateContext) -> str:
    return SubjectTemplate.parse(template).render(ctx)


# --------------------------------------------------------------------------- subject rendering


@pytest.mark.parametrize(
    ("template", "ctx", "subject"),
    [
        ("orders.{exchange}.{rk}", amqp("eu.created"), "orders.orders.eu.created"),
        ("legacy.{topic}.{key}", kafka(), "legacy.orders%2Ecreated.k1"),
        ("events.{rk[1:]}", amqp("x.eu.created"), "events.eu.created"),
        ("events.{rk[0]}", amqp("x.eu.created"), "events.x"),
        ("events.{rk[-1]}", amqp("x.eu.created"), "events.created"),
        ("events.{rk[-2:]}", amqp("x.eu.created"), "events.eu.created"),
        ("events.{rk[5:]}.end", amqp("x.eu"), "events.end"),
        ("audit.{header:tenant}", amqp(headers={"tenant": "acme inc"}), "audit.acme%20inc"),
        ("k.{topic[0:]}", kafka("orders.created"), "k.orders.created"),
        ("k.{topic[1]}", kafka("orders.created"), "k.created"),
        ("k.{topic[:-1]}.{partition}", kafka("a.b.c"), "k.a.b.3"),
        ("q.{queue}", amqp(), "q.q1"),
        ("x.{exchange}", amqp(exchange=""), "x.%"),
        ("x.{exchange}", amqp(exchange="$JS"), "x.%24JS"),
        ("a.{rk}.b", amqp(""), "a.b"),
        ("a.{rk}.b", amqp("."), "a.%.%.b"),
        ("a.{rk}", amqp("x..y."), "a.x.%.y.%"),
        ("a.{rk}", amqp("é.*.>"), "a.%C3%A9.%2A.%3E"),
        ("a.{rk}", amqp("a b.c"), "a.a%20b.c"),
        ("a.{rk[1]}", amqp("a..b"), "a.%"),
        ("{rk}", amqp("x"), "x"),
        ("k.{key}", kafka(key=b"\x00."), "k.%00%2E"),
        ("static.subject", amqp(), "static.subject"),
        ("lit{{eral}}.{rk}", amqp("x"), "lit{eral}.x"),
    ],
)
def test_subject_template_renders_each_value_as_escaped_tokens(
    template: str, ctx: TemplateContext, subject: str
) -> None:
    assert render(template, ctx) == subject
    assert is_valid_subject(subject)


def test_a_dotted_topic_inserted_by_topic_is_one_token() -> None:
    assert render("legacy.{topic}", kafka("orders.created")) == "legacy.orders%2Ecreated"


def test_an_empty_routing_key_contributes_no_tokens() -> None:
    assert render("orders.{rk}", amqp("")) == "orders"


@pytest.mark.parametrize(
    ("template", "ctx", "problem"),
    [
        ("{rk}", amqp(""), "empty subject"),
        ("{rk[1:]}", amqp("a"), "empty subject"),
        ("a.{rk[3]}", amqp("a.b"), r"'\{rk\[3\]\}': rk 'a.b' has 2 word\(s\), so index 3 is out of range"),
        ("a.{rk[-3]}", amqp("a.b"), "out of range"),
        ("a.{rk[0]}", amqp(""), "out of range"),
        ("a.{topic[2]}", kafka("a.b"), "out of range"),
        ("a.{header:tenant}", amqp(), "no header 'tenant'"),
        ("a.{key}", kafka(key=None), r"'\{key\}': the message has no key"),
        ("a.{exchange}", kafka(), r"'\{exchange\}': the message has no exchange"),
        ("a.{rk}", kafka(), r"'\{rk\}'"),
        ("a.{rk[1:]}", kafka(), r"'\{rk\[1:\]\}'"),
        ("a.{topic}", amqp(), r"'\{topic\}'"),
        ("a.{partition}", amqp(), r"'\{partition\}'"),
        ("a.{exchange}", amqp(exchange="\ud800"), "not valid text"),
    ],
)
def test_subject_render_errors_name_the_placeholder(template: str, ctx: TemplateContext, problem: str) -> None:
    with pytest.raises(TemplateRenderError, match=problem):
        render(template, ctx)


def test_render_error_carries_the_placeholder() -> None:
    with pytest.raises(TemplateRenderError) as caught:
        render("a.{header:tenant}", amqp())
    assert caught.value.placeholder == "{header:tenant}"


# --------------------------------------------------------------------------- subject syntax


@pytest.mark.parametrize(
    ("template", "column", "problem"),
    [
        ("orders.{rkey}", 7, r"unknown placeholder '\{rkey\}' — did you mean '\{rk\}'\?"),
        ("orders.{routing_key}", 7, r"did you mean '\{rk\}'"),
        ("orders.{exchnage}", 7, r"did you mean '\{exchange\}'"),
        ("orders.{headers}", 7, r"did you mean '\{header:NAME\}'"),
        ("orders.{hdr:tenant}", 7, r"did you mean '\{header:tenant\}'"),
        ("orders.{zzz}", 7, r"known placeholders: .*\{rk\}"),
        ("a{rk}", 1, r"'\{rk\}' must be a whole subject token"),
        ("{exchange}-x", 0, r"'\{exchange\}' must be a whole subject token"),
        ("a.{rk}{exchange}", 2, "whole subject token"),
        ("a..b", 2, "empty token"),
        ("a.", 1, "empty token"),
        (".a", 0, "empty token"),
        ("", 0, "empty subject template"),
        ("a.*", 2, "wildcard '\\*'"),
        ("a.>", 2, "wildcard '>'"),
        ("a.b c", 3, "whitespace"),
        ("a.b\tc", 3, "whitespace"),
        ("a.{offset}", 2, r"'\{offset\}' cannot be used in a subject"),
        ("a.{message_id}", 2, "cannot be used in a subject"),
        ("a.{timestamp}", 2, "cannot be used in a subject"),
        ("a.{exchange[0]}", 2, r"only \{rk\} and \{topic\} have words to index"),
        ("a.{rk[1:2:3]}", 2, "no step"),
        ("a.{rk[x]}", 2, "not an integer"),
        ("a.{rk[]}", 2, "empty index"),
        ("a.{rk[1]x}", 2, "malformed placeholder"),
        ("a.{}", 2, "empty placeholder"),
        ("a.{header:}", 2, "needs a header name"),
        ("a.{rk", 2, "not closed"),
        ("a.{r{k}", 4, "inside placeholder"),
        ("a.}", 2, "single '}'"),
    ],
)
def test_subject_syntax_errors_point_at_the_problem(template: str, column: int, problem: str) -> None:
    with pytest.raises(TemplateSyntaxError, match=problem) as caught:
        SubjectTemplate.parse(template)
    assert caught.value.column == column
    assert caught.value.template == template


def test_syntax_error_pointer_shows_a_caret_under_the_column() -> None:
    with pytest.raises(TemplateSyntaxError) as caught:
        SubjectTemplate.parse("orders.{rkey}")
    assert caught.value.pointer().splitlines()[1:] == ["  orders.{rkey}", "         ^"]


def test_template_errors_fit_the_bridge_error_tree_and_pydantic() -> None:
    assert issubclass(TemplateSyntaxError, TemplateError)
    assert issubclass(TemplateSyntaxError, ValueError)  # pydantic validators report it
    assert issubclass(TemplateRenderError, TemplateError)
    assert issubclass(TemplateError, BridgeError)


@pytest.mark.parametrize(
    ("template", "fields"),
    [
        ("orders.{exchange}.{rk}", {"exchange", "rk"}),
        ("events.{rk[1:]}.{header:tenant}", {"rk", "header:tenant"}),
        ("legacy.{topic[0]}.{topic}.{partition}.{key}", {"topic", "partition", "key"}),
        ("static", set()),
    ],
)
def test_fields_list_what_a_template_uses_for_config_checks(template: str, fields: set[str]) -> None:
    assert SubjectTemplate.parse(template).fields == frozenset(fields)


def test_parsed_templates_are_shared_and_compare_by_text() -> None:
    assert SubjectTemplate.parse("a.{rk}") is SubjectTemplate.parse("a.{rk}")
    assert SubjectTemplate.parse("a.{rk}") == SubjectTemplate.parse("a.{rk}")
    assert len({SubjectTemplate.parse("a.{rk}"), SubjectTemplate.parse("b.{rk}")}) == 2
    assert SubjectTemplate.parse("a") != TextTemplate.parse("a")


# --------------------------------------------------------------------------- text templates


@pytest.mark.parametrize(
    ("template", "ctx", "text"),
    [
        ("{topic}/{partition}/{offset}", kafka("orders.created"), "orders.created/3/42"),
        ("{exchange}:{rk}", amqp("a b.c"), "orders:a b.c"),
        ("id-{message_id}-x", amqp(message_id="m-1"), "id-m-1-x"),
        ("{rk[1:]}|{rk[0]}", amqp("a.b.c"), "b.c|a"),
        ("{topic[-1]}", kafka("a.b"), "b"),
        ("{timestamp}", kafka(timestamp=1700000000000), "1700000000000"),
        ("{key}", kafka(key="clé".encode()), "clé"),
        ("{header:tenant}", amqp(headers={"tenant": "acme"}), "acme"),
        ("{{{rk}}}", amqp("x"), "{x}"),
        ("{rk}", amqp(""), ""),
        ("plain", amqp(), "plain"),
        ("", amqp(), ""),
    ],
)
def test_text_template_writes_values_verbatim_anywhere(template: str, ctx: TemplateContext, text: str) -> None:
    assert TextTemplate.parse(template).render(ctx) == text


@pytest.mark.parametrize(
    ("template", "ctx", "problem"),
    [
        ("{offset}", amqp(), r"'\{offset\}'"),
        ("{message_id}", kafka(), r"'\{message_id\}'"),
        ("{key}", kafka(key=b"\xff"), "not UTF-8"),
        ("{key}", kafka(key=None), "no key"),
        ("{header:h}", amqp(headers={"h": "a\r\nNats-Expected-Stream: x"}), "line break"),
        ("{rk[4]}", amqp("a"), "out of range"),
    ],
)
def test_text_render_errors_name_the_problem(template: str, ctx: TemplateContext, problem: str) -> None:
    with pytest.raises(TemplateRenderError, match=problem):
        TextTemplate.parse(template).render(ctx)


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{topic}/{ofset}", r"did you mean '\{offset\}'"),
        ("{msg_id}", r"did you mean '\{message_id\}'"),
        ("{partition[0]}", "have words to index"),
        ("{topic", "not closed"),
    ],
)
def test_text_syntax_errors(template: str, problem: str) -> None:
    with pytest.raises(TemplateSyntaxError, match=problem):
        TextTemplate.parse(template)


def test_text_template_fields_include_text_only_placeholders() -> None:
    template = TextTemplate.parse("{topic}/{partition}/{offset}-{header:x}")
    assert template.fields == frozenset({"topic", "partition", "offset", "header:x"})


# --------------------------------------------------------------------------- properties

routing_keys = st.text(alphabet="ab.%*>$ é\t\x00", max_size=12)


@PROPERTY
@given(routing_keys)
def test_prefix_rk_always_renders_a_valid_subject_that_decodes_back_to_the_key(routing_key: str) -> None:
    subject = render("prefix.{rk}", amqp(routing_key))
    assert is_valid_subject(subject)
    tokens = subject.split(".")
    assert tokens[0] == "prefix"
    assert ".".join(unescape_token_str(token) for token in tokens[1:]) == routing_key


@PROPERTY
@given(routing_keys, routing_keys)
def test_prefix_rk_is_injective_over_routing_keys(left: str, right: str) -> None:
    template = SubjectTemplate.parse("prefix.{rk}")
    assert (template.render(amqp(left)) == template.render(amqp(right))) is (left == right)


@PROPERTY
@given(st.text(max_size=20))
def test_rk_renders_each_word_escaped_whatever_the_text(routing_key: str) -> None:
    expected = ".".join(escape_token(word) for word in split_amqp_words(routing_key))
    assert render("p.{rk}", amqp(routing_key)) == ("p." + expected).rstrip(".")


@PROPERTY
@given(
    st.text(alphabet="abz09._-", min_size=1, max_size=20),
    st.one_of(st.none(), st.integers(-4, 4)),
    st.one_of(st.none(), st.integers(-4, 4)),
)
def test_topic_slices_render_valid_subjects_of_the_sliced_words(
    topic: str, start: int | None, stop: int | None
) -> None:
    bounds = f"{'' if start is None else start}:{'' if stop is None else stop}"
    template = SubjectTemplate.parse(f"legacy.{{topic[{bounds}]}}.{{partition}}")
    subject = template.render(kafka(topic))
    assert is_valid_subject(subject)
    words = topic.split(".")[start:stop]
    assert subject == ".".join(["legacy", *(escape_token(word) for word in words), "3"])


@PROPERTY
@given(st.text(max_size=10), st.text(max_size=10))
def test_single_token_placeholders_always_render_one_token(exchange: str, tenant: str) -> None:
    subject = render("x.{exchange}.{header:tenant}", amqp(exchange=exchange, headers={"tenant": tenant}))
    assert is_valid_subject(subject)
    assert [unescape_token_str(token) for token in subject.split(".")[1:]] == [exchange, tenant]
