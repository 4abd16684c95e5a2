"""Ids and header values as the wire carries them: nats-py strips header values and turns CR/LF
into spaces, so the bridge writes only values that survive that, and keeps distinct ones
distinct (encoding the others reversibly)."""

from __future__ import annotations

import base64
from urllib.parse import unquote

from hypothesis import given
from hypothesis import strategies as st

from bridge.config import load_config_text
from bridge.headers import BASE64_HEADERS, stable_id, wire_stable
from bridge.mapping import CompiledRoute
from bridge.message import AmqpOrigin, KafkaOrigin, SourceMessage

MAPPING = """
sources:
  k: {type: kafka, bootstrap_servers: ["k:9092"]}
  r: {type: rabbitmq, url: "amqp://r/"}
services:
  svc:
    routes:
      - {name: amqp, source: r, from: {exchange: x, bindings: ["#"]}, to: "x", headers: {set: {Where: " {exchange}"}}}
      - {name: kafka, source: k, from: {topics: [t]}, to: "t", msg_id: "{header:event-id}",
         unique_headers: [event-id]}
"""


def _routes() -> dict[str, CompiledRoute]:
    config = load_config_text(MAPPING, "m.yaml", {})
    return {route.name: CompiledRoute.compile(service, route) for service, route in config.routes()}


def _as_nats_py_sends(value: str) -> str:
    """What nats-py 2.16 puts on the wire for a header value (client.py, publish)."""
    return value.strip().translate(str.maketrans({"\r": " ", "\n": " "}))


def test_message_ids_that_differ_only_in_white_space_stay_distinct_on_the_wire() -> None:
    route = _routes()["amqp"]
    variants = ["order-7", "order-7 ", "order-7\n", "\torder-7", "   ", "50%", "50%25"]
    ids = [route.map(SourceMessage(AmqpOrigin("x", "k", properties={"message_id": v}), b"")).msg_id for v in variants]
    sent = [_as_nats_py_sends(msg_id) for msg_id in ids]
    assert sent == ids, "every id reaches the server as written"
    assert len(set(sent)) == len(variants)
    assert ids[0] == "svc/amqp/order-7"
    assert ids[4] == "svc/amqp/%20%20%20"
    assert [unquote(i.removeprefix("svc/amqp/")) for i in ids[1:]] == variants[1:]


def test_a_header_id_with_edge_white_space_keeps_its_own_identity() -> None:
    route = _routes()["kafka"]
    keys = ["dup", "dup ", " dup", "dup\t"]
    ids = [
        route.map(SourceMessage(KafkaOrigin("t", 0, i), b"", headers=(("event-id", key.encode()),))).msg_id
        for i, key in enumerate(keys)
    ]
    assert len({_as_nats_py_sends(msg_id) for msg_id in ids}) == 4


def test_a_routing_key_with_line_breaks_and_edge_spaces_travels_base64_and_is_listed() -> None:
    route = _routes()["amqp"]
    key = " order.\r\nnew "
    message = SourceMessage(AmqpOrigin("x", key, properties={"message_id": "a\nb"}), b"", headers=(("t", " x"),))
    headers = route.map(message).headers
    listed = headers[BASE64_HEADERS].split(",")
    assert {"Amqp-Routing-Key", "Amqp-Message-Id", "t", "Where"} <= set(listed)
    assert base64.b64decode(headers["Amqp-Routing-Key"]).decode() == key
    assert base64.b64decode(headers["Amqp-Message-Id"]).decode() == "a\nb"
    assert base64.b64decode(headers["t"]).decode() == " x"
    assert base64.b64decode(headers["Where"]).decode() == " x"
    assert all(_as_nats_py_sends(value) == value for value in headers.values())


@given(st.text())
def test_stable_ids_are_wire_stable_and_distinct(text: str) -> None:
    encoded = stable_id(text)
    assert wire_stable(encoded) or encoded == ""
    assert _as_nats_py_sends(encoded) == encoded
    if encoded != text:
        assert unquote(encoded, errors="strict") == text


@given(st.text(), st.text())
def test_stable_id_never_joins_two_ids(first: str, second: str) -> None:
    if first != second:
        assert stable_id(first) != stable_id(second)
