"""Message identity per route: Msg-Ids two routes can never share, templates that tell
messages apart, and content hashes that survive a redelivery."""

from __future__ import annotations

import pytest

from bridge.config import load_config_text
from bridge.config.model import DeadLetterConfig
from bridge.deadletters import DeadLetters
from bridge.errors import ConfigError
from bridge.headers import stable_id
from bridge.mapping import _MSG_ID_BUILDERS, ROUTE_NAME_HEADER, CompiledRoute, content_hash
from bridge.message import AmqpOrigin, KafkaOrigin, SourceMessage

HEAD = """
sources:
  k: {type: kafka, bootstrap_servers: ["k:9092"]}
  r: {type: rabbitmq, url: "amqp://r/"}
streams: [{name: S, subjects: ["a.>", "b.>", "x.>"]}]
services:
"""

TWO_ROUTES_ONE_TOPIC = (
    HEAD
    + """
  one:
    routes: [{name: copy, source: k, from: {topics: [t]}, to: "a.{partition}"}]
  two:
    routes: [{name: copy, source: k, from: {topics: [t]}, to: "b.{partition}"}]
"""
)


def _routes(text: str) -> dict[str, CompiledRoute]:
    config = load_config_text(text, "m.yaml", {})
    return {f"{s}/{r.name}": CompiledRoute.compile(s, r) for s, r in config.routes()}


def _record(offset: int = 7) -> SourceMessage:
    return SourceMessage(KafkaOrigin("t", 2, offset, key=b"k"), b"v")


def test_two_routes_on_one_topic_give_one_record_two_ids() -> None:
    routes = _routes(TWO_ROUTES_ONE_TOPIC)
    one, two = routes["one/copy"].map(_record()), routes["two/copy"].map(_record())
    assert one.msg_id == "one/copy/t/2/7"
    assert two.msg_id == "two/copy/t/2/7"
    assert one.headers[ROUTE_NAME_HEADER] == "one/copy"
    assert two.headers[ROUTE_NAME_HEADER] == "two/copy"


def test_strategy_ids_name_the_route_for_every_strategy() -> None:
    routes = _routes(
        HEAD
        + """
  svc:
    routes:
      - {name: mid, source: r, from: {exchange: x, bindings: ["#"]}, to: "x.{rk}"}
      - {name: sq, source: r, from: {queue: sq, mode: stream}, to: "x.s"}
"""
    )
    with_id = SourceMessage(AmqpOrigin("x", "a", properties={"message_id": "m-1"}), b"v")
    without = SourceMessage(AmqpOrigin("x", "a"), b"v")
    streamed = SourceMessage(AmqpOrigin("", "sq", queue="sq", stream_offset=9), b"v")
    assert routes["svc/mid"].msg_id(with_id) == "svc/mid/m-1"
    assert routes["svc/mid"].msg_id(without) == "svc/mid/" + content_hash(without)
    assert routes["svc/sq"].msg_id(streamed) == "svc/sq/sq/9"


def test_dead_letters_of_two_routes_never_share_an_id() -> None:
    routes = _routes(TWO_ROUTES_ONE_TOPIC)
    config = DeadLetterConfig()
    letters = [DeadLetters(config, route).for_unmappable(_record(), "broken") for route in routes.values()]
    ids = {letter.message.msg_id for letter in letters}
    assert ids == {"dlq:one/copy/t/2/7", "dlq:two/copy/t/2/7"}
    assert {letter.message.headers[ROUTE_NAME_HEADER] for letter in letters} == {"one/copy", "two/copy"}


def test_a_template_routes_dead_letter_is_named_by_the_route() -> None:
    (route,) = _routes(
        HEAD
        + """
  svc:
    routes: [{name: r, source: k, from: {topics: [t]}, to: "a.{partition}", msg_id: "{topic}:{offset}"}]
"""
    ).values()
    letter = DeadLetters(DeadLetterConfig(), route).for_unmappable(_record(), "broken")
    assert letter.message.msg_id == "dlq:svc/r/t:7"


@pytest.mark.parametrize(
    ("template", "kind", "hint"),
    [
        ("{topic}", "kafka", "{offset}"),
        ("{topic}/{partition}", "kafka", "{offset}"),
        ("{key}", "kafka", "{offset}"),
        ("k-{timestamp}", "kafka", "{offset}"),
        ("{exchange}", "rabbitmq", "{message_id}"),
        ("{exchange}/{rk}", "rabbitmq", "{content_hash}"),
    ],
)
def test_a_msg_id_template_without_a_per_message_part_is_refused(template: str, kind: str, hint: str) -> None:
    source = (
        "from: {topics: [t]}, source: k, to: 'a.{partition}'"
        if kind == "kafka"
        else "from: {exchange: x, bindings: ['#']}, source: r, to: 'x.{rk}'"
    )
    text = (
        HEAD
        + f"""
  svc:
    routes:
      - {{name: r, {source}, msg_id: "{template}"}}
"""
    )
    with pytest.raises(ConfigError) as raised:
        load_config_text(text, "m.yaml", {})
    message = str(raised.value)
    assert "m.yaml:10:" in message  # the route's line
    assert "no part unique to one message" in message
    assert hint in message


def test_a_header_declared_unique_makes_a_template_valid() -> None:
    text = (
        HEAD
        + """
  svc:
    routes:
      - {name: r, source: k, from: {topics: [t]}, to: "a.{partition}", msg_id: "ev-{header:event-id}",
         unique_headers: [event-id]}
"""
    )
    (route,) = _routes(text).values()
    record = SourceMessage(KafkaOrigin("t", 0, 1), b"v", headers=(("event-id", b"e-42"),))
    assert route.map(record).msg_id == "ev-e-42"
    undeclared = text.replace("unique_headers: [event-id]", "unique_headers: [other]")
    with pytest.raises(ConfigError, match="unique_headers"):
        load_config_text(undeclared, "m.yaml", {})


def test_auto_in_a_template_is_the_strategy_id_without_the_route() -> None:
    routes = _routes(
        HEAD
        + """
  svc:
    routes:
      - {name: one, source: r, from: {exchange: x, type: headers, arguments: {a: "1"}}, to: "x.h",
         msg_id: "{exchange}/{auto}"}
      - {name: two, source: r, from: {exchange: x, type: headers, arguments: {b: "1"}}, to: "x.h",
         msg_id: "{exchange}/{auto}"}
"""
    )
    message = SourceMessage(AmqpOrigin("x", "", properties={"message_id": "m-1"}), b"v")
    assert routes["svc/one"].msg_id(message) == routes["svc/two"].msg_id(message) == "x/m-1"
    plain = SourceMessage(AmqpOrigin("x", ""), b"v")
    assert routes["svc/one"].msg_id(plain) == "x/" + content_hash(plain)


def _delivery(headers: tuple[tuple[str, object], ...], **properties: object) -> SourceMessage:
    return SourceMessage(AmqpOrigin("x", "a.b", properties=properties), b"body", headers=headers)


def test_content_hash_leaves_out_what_rabbitmq_adds_on_redelivery() -> None:
    first = _delivery((("tenant", "acme"),), content_type="text/plain")
    again = _delivery((("tenant", "acme"), ("x-delivery-count", 1)), content_type="text/plain")
    on_4x = _delivery((("x-acquired-count", 2), ("tenant", "acme")), content_type="text/plain")
    assert content_hash(first) == content_hash(again) == content_hash(on_4x)
    other_tenant = _delivery((("tenant", "other"),), content_type="text/plain")
    assert content_hash(other_tenant) != content_hash(first)


def test_a_dead_lettered_retry_hashes_like_its_first_delivery() -> None:
    first = _delivery((("tenant", "acme"),), expiration="60000")
    death = [{"count": 1, "reason": "expired", "queue": "retry", "exchange": "x", "routing-keys": ["a.b"]}]
    retry = _delivery(
        (
            ("tenant", "acme"),
            ("x-death", death),
            ("x-first-death-exchange", "x"),
            ("x-first-death-queue", "retry"),
            ("x-first-death-reason", "expired"),
            ("x-last-death-exchange", "x"),
        )
    )  # dead lettering drops the expiration property
    assert content_hash(retry) == content_hash(first)
    (route,) = _routes(
        HEAD + '\n  svc:\n    routes: [{name: r, source: r, from: {exchange: x, bindings: ["#"]}, to: "x.{rk}"}]\n'
    ).values()
    choice = route.msg_id_choice(retry)
    assert choice.strategy == "content-hash"
    assert "dead-lettered retry" in choice.reason
    assert "same message" in choice.reason
    assert "dead-lettered" not in route.msg_id_choice(first).reason


def test_the_per_message_id_shortcut_agrees_with_the_strategy_explain_names() -> None:
    """`msg_id` picks a fixed strategy at compile time and takes Kafka's offset at once for auto:
    for every kind of route and message it must give what `msg_id_choice` (explain's) says."""
    routes = _routes(
        HEAD
        + """
  svc:
    routes:
      - {name: kauto, source: k, from: {topics: [t]}, to: "a.{partition}"}
      - {name: koff, source: k, from: {topics: [t]}, to: "a.{partition}", msg_id: kafka-offset}
      - {name: rauto, source: r, from: {exchange: x, bindings: ["#"]}, to: "x.{rk}"}
      - {name: rmid, source: r, from: {exchange: x, bindings: ["#"]}, to: "x.{rk}", msg_id: message-id}
      - {name: rhash, source: r, from: {exchange: x, bindings: ["#"]}, to: "x.{rk}", msg_id: content-hash}
      - {name: sq, source: r, from: {queue: sq, mode: stream}, to: "x.s"}
"""
    )
    kafka = _record(11)
    with_id = SourceMessage(AmqpOrigin("x", "rk", properties={"message_id": "m-1"}), b"v")
    without_id = SourceMessage(AmqpOrigin("x", "rk"), b"v", (("x-delivery-count", 1),))
    in_stream = SourceMessage(AmqpOrigin("", "rk", queue="sq", stream_offset=42), b"v")
    cases = [
        ("svc/kauto", kafka),
        ("svc/koff", kafka),
        ("svc/rauto", with_id),
        ("svc/rauto", without_id),
        ("svc/rmid", with_id),
        ("svc/rhash", without_id),
        ("svc/sq", in_stream),
    ]
    for key, message in cases:
        route = routes[key]
        strategy = route.msg_id_choice(message).strategy
        expected = stable_id(route.id_prefix + _MSG_ID_BUILDERS[strategy](route, message))
        assert route.msg_id(message) == expected, (key, strategy)
    assert routes["svc/koff"].fixed_strategy == "kafka-offset"
    assert routes["svc/kauto"].fixed_strategy is None
