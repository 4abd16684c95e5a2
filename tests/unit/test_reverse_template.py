"""Reverse-route key templates: a routing key or record key from a NATS subject and headers."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import BridgeError
from bridge.routing.key_template import KeyTemplate, TemplateRenderError, TemplateSyntaxError, parse

PROPERTY = settings(max_examples=300, deadline=None)
SUBJECT = "orders.eu.created"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{subject}", "orders.eu.created"),
        ("{subject[0]}", "orders"),
        ("{subject[2]}", "created"),
        ("{subject[-1]}", "created"),
        ("{subject[-3]}", "orders"),
        ("{subject[1:]}", "eu.created"),
        ("{subject[:2]}", "orders.eu"),
        ("{subject[:]}", "orders.eu.created"),
        ("{subject[-2:]}", "eu.created"),
        ("{subject[1:-1]}", "eu"),
        ("{subject[5:]}", ""),  # a slice past the end is empty, as in Python
        ("legacy.{subject[1:]}", "legacy.eu.created"),
        ("{subject[0]}-{subject[-1]}", "orders-created"),
        ("{header:tenant}.{subject[-1]}", "acme.created"),
        ("fixed", "fixed"),
        ("", ""),
        ("{{literal}}.{subject[0]}", "{literal}.orders"),
    ],
)
def test_renders_subject_tokens_headers_and_literals(template: str, expected: str) -> None:
    assert parse(template).render(SUBJECT, {"tenant": "acme"}) == expected


def test_whole_subject_is_returned_as_is_even_with_odd_tokens() -> None:
    # `{subject}` is the default routing key: nothing is escaped or re-joined.
    assert parse("{subject}").render("a..b.>", None) == "a..b.>"


def test_header_lookup_is_exact_first_then_case_insensitive() -> None:
    template = parse("{header:Tenant}")
    assert template.render(SUBJECT, {"Tenant": "exact", "tenant": "other"}) == "exact"
    assert template.render(SUBJECT, {"TENANT": "upper"}) == "upper"


def test_missing_header_names_the_header() -> None:
    with pytest.raises(TemplateRenderError, match=r"no header 'tenant'") as caught:
        parse("k.{header:tenant}").render(SUBJECT, {"other": "x"})
    assert caught.value.placeholder == "{header:tenant}"
    assert isinstance(caught.value, BridgeError)  # the project's error tree, not a bare KeyError


def test_missing_header_without_any_headers() -> None:
    with pytest.raises(TemplateRenderError, match=r"no header 'tenant'"):
        parse("{header:tenant}").render(SUBJECT, None)


def test_token_index_out_of_range_says_how_many_tokens_there_are() -> None:
    with pytest.raises(TemplateRenderError, match=r"subject 'a\.b' has 2 token\(s\), so index 3 is out of range"):
        parse("{subject[3]}").render("a.b")
    with pytest.raises(TemplateRenderError, match=r"index -3 is out of range"):
        parse("{subject[-3]}").render("a.b")


@pytest.mark.parametrize(
    ("template", "message", "column"),
    [
        ("{subjet}", r"unknown placeholder '\{subjet\}' — did you mean '\{subject\}'\?$", 0),
        ("{Subject[-1]}", r"did you mean '\{subject\[-1\]\}'\?", 0),
        ("x.{rk}", r"unknown placeholder '\{rk\}'; a reverse route knows \{subject\} \{subject\[i\]\}", 2),
        ("{tenant:x}", r"did you mean '\{header:x\}'", 0),
        ("{}", r"empty placeholder", 0),
        ("{subject", r"not closed", 0),
        ("a}", r"single '\}'", 1),
        ("{sub{ject}", r"'\{' inside placeholder", 4),
        ("{header:}", r"needs a header name", 0),
        ("{header:bad name}", r"not a valid NATS header name", 0),
        ("{subject[x]}", r"'x' is not an integer index", 0),
        ("{subject[]}", r"empty index", 0),
        ("{subject[1:2:3]}", r"slices take no step", 0),
        ("ab{subject[1.5]}", r"'1\.5' is not an integer index", 2),
    ],
)
def test_parse_rejects_bad_templates_with_a_message_and_column(template: str, message: str, column: int) -> None:
    with pytest.raises(TemplateSyntaxError, match=message) as caught:
        parse(template)
    assert caught.value.column == column
    assert caught.value.template == template


def test_syntax_errors_are_value_errors_for_pydantic_validators() -> None:
    with pytest.raises(ValueError, match="unknown placeholder"):
        parse("{nope}")


def test_parse_records_headers_used_and_compares_by_text() -> None:
    template = parse("{header:a}.{subject[0]}.{header:b}")
    assert template.headers == frozenset({"a", "b"})
    assert template == parse("{header:a}.{subject[0]}.{header:b}")
    assert template != parse("{subject}")
    assert hash(template) == hash(parse(template.text))
    assert repr(template) == "KeyTemplate('{header:a}.{subject[0]}.{header:b}')"
    assert isinstance(template, KeyTemplate)


TOKENS = st.lists(st.text(alphabet="abcxyz09-_", min_size=1, max_size=5), min_size=1, max_size=6)


@PROPERTY
@given(tokens=TOKENS, start=st.integers(-8, 8) | st.none(), stop=st.integers(-8, 8) | st.none())
def test_slices_match_python_slices_of_the_tokens(tokens: list[str], start: int | None, stop: int | None) -> None:
    bounds = f"{'' if start is None else start}:{'' if stop is None else stop}"
    assert parse(f"{{subject[{bounds}]}}").render(".".join(tokens)) == ".".join(tokens[start:stop])


@PROPERTY
@given(tokens=TOKENS, index=st.integers(-8, 8))
def test_index_matches_python_indexing_or_raises(tokens: list[str], index: int) -> None:
    template = parse(f"{{subject[{index}]}}")
    if -len(tokens) <= index < len(tokens):
        assert template.render(".".join(tokens)) == tokens[index]
    else:
        with pytest.raises(TemplateRenderError):
            template.render(".".join(tokens))


@PROPERTY
@given(literal=st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=20))
def test_literal_text_renders_verbatim(literal: str) -> None:
    assert parse(literal).render("a.b") == literal


def test_a_header_the_bridge_sent_base64_is_read_as_the_original_text() -> None:
    # What a forward route writes for AMQP routing key " order.\r\nnew " (bridge.mapping).
    key = " order.\r\nnew "
    headers = {
        "Amqp-Routing-Key": base64.b64encode(key.encode()).decode(),
        "Bridge-Base64-Headers": "Amqp-Routing-Key",
        "tenant": "acme",
    }
    assert parse("{header:Amqp-Routing-Key}").render("s", headers) == key
    assert parse("{header:tenant}").render("s", headers) == "acme"
    broken = {"Amqp-Routing-Key": "not base64!", "Bridge-Base64-Headers": "Amqp-Routing-Key"}
    with pytest.raises(TemplateRenderError, match="listed as base64"):
        parse("{header:Amqp-Routing-Key}").render("s", broken)
