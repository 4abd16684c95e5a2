"""bridge.fast_map makes each message exactly as the general mapping does, header block included.

Every route below is compiled twice: as the bridge runs it (its FastMap on) and with the
FastMap taken away (the general path: the header dict, then wire.header_block). For any message
the two give the same outcome — the same MappingError, or the same subject, payload, Msg-Id and
headers in the same order — and the block the fast path made is the one the general path's
headers encode to, which tests/unit/test_jetstream_wire.py ties to nats-py's own encoder (here
too, for the common messages).
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_jetstream_wire import nats_py_bytes

from bridge.config import load_config_text
from bridge.deadletters import encoded_size, fits
from bridge.jetstream import wire
from bridge.mapping import CompiledRoute, MappingError
from bridge.message import AmqpOrigin, EncodedHeaders, KafkaOrigin, OutboundMessage, SourceMessage

MAPPING = """
sources:
  k: {type: kafka, bootstrap_servers: ["k:9092"]}
  kc: {type: kafka, bootstrap_servers: ["k:9092"], cluster_name: east}
  r: {type: rabbitmq, url: "amqp://r/"}
services:
  svc:
    routes:
      - {name: k-partition, source: k, from: {topics: [t]}, to: "orders.{partition}"}
      - {name: k-topic, source: kc, from: {topics: [t]}, to: "legacy.{topic}", msg_id: kafka-offset}
      - {name: k-alone, source: k, from: {topics: [t]}, to: "{topic}", headers: {drop: [skip-me]}}
      - {name: k-key, source: k, from: {topics: [t]}, to: "a.b.{key}", headers: {copy: false}}
      - {name: k-constant, source: k, from: {topics: [t]}, to: "fixed.subject", msg_id: "{topic}-{offset}"}
      - {name: k-words, source: k, from: {topics: [t]}, to: "h.{topic[0]}"}
      - {name: k-set, source: k, from: {topics: [t]}, to: "s.{partition}", headers: {set: {X-T: "{topic}"}}}
      - {name: k-rename, source: k, from: {topics: [t]}, to: "s.{partition}", headers: {rename: {a: Kafka-Topic}}}
      - {name: r-rk, source: r, from: {exchange: x, bindings: ["#"]}, to: "events.{rk}"}
      - {name: r-exchange, source: r, from: {exchange: x, bindings: ["#"]}, to: "ex.{exchange}", msg_id: message-id}
      - {name: r-queue, source: r, from: {queue: q, mode: stream}, to: "s.{queue}", msg_id: stream-offset}
      - {name: r-words, source: r, from: {exchange: x, bindings: ["#"]}, to: "w.{rk[0]}", msg_id: content-hash}
      - {name: r-constant, source: r, from: {exchange: x, bindings: ["#"]}, to: "c", msg_id: "{message_id}"}
"""

CONFIG = load_config_text(MAPPING, "m.yaml", {})
FAST = {route.name: CompiledRoute.of(CONFIG, service, route) for service, route in CONFIG.routes()}
KAFKA_ROUTES = sorted(name for name in FAST if name.startswith("k-"))
AMQP_ROUTES = sorted(name for name in FAST if name.startswith("r-"))


def general(route: CompiledRoute) -> CompiledRoute:
    """`route` without its fast path: the general mapping, as before bridge.fast_map."""
    copy = dataclasses.replace(route)
    object.__setattr__(copy, "fast", None)
    return copy


GENERAL = {name: general(route) for name, route in FAST.items()}


def outcome(route: CompiledRoute, message: SourceMessage) -> OutboundMessage | str:
    try:
        return route.map(message)
    except MappingError as error:
        return f"MappingError: {error}"


def assert_same(name: str, message: SourceMessage) -> OutboundMessage | str:
    fast, slow = outcome(FAST[name], message), outcome(GENERAL[name], message)
    if isinstance(slow, str) or isinstance(fast, str):
        assert fast == slow
        return fast
    assert type(slow.headers) is dict
    assert (fast.subject, fast.payload, fast.msg_id) == (slow.subject, slow.payload, slow.msg_id)
    assert list(fast.headers.items()) == list(slow.headers.items())  # order too
    assert fast == slow
    assert encoded_size(fast) == encoded_size(slow)
    assert fits(fast, encoded_size(slow))
    assert not fits(fast, encoded_size(slow) - 1)
    if isinstance(fast.headers, EncodedHeaders):
        assert fast.headers.block == wire.header_block(slow.headers)
    assert wire.hpub_command(fast.subject, "_INBOX.r.1", fast.headers, fast.payload) == wire.hpub_command(
        slow.subject, "_INBOX.r.1", slow.headers, slow.payload
    )
    return fast


texts = st.text(max_size=12)
names = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=0, max_size=8)
header_values: st.SearchStrategy[Any] = st.one_of(
    texts, st.binary(max_size=8), st.integers(), st.booleans(), st.lists(st.integers(), max_size=2)
)
source_headers = st.lists(st.tuples(st.one_of(names, st.sampled_from(["skip-me", "a"])), header_values), max_size=3)
kafka_messages = st.builds(
    SourceMessage,
    st.builds(
        KafkaOrigin,
        topic=st.one_of(st.sampled_from(["orders", "a.b", "with space", " edge", "cr\rlf\n", ""]), texts),
        partition=st.integers(-1, 40),
        offset=st.integers(0, 2**63),
        key=st.one_of(st.none(), st.binary(max_size=6), st.sampled_from([b"k-1", b" k", b"\xff", b"a\nb"])),
        timestamp_ms=st.one_of(st.none(), st.integers(0, 2**45)),
    ),
    st.one_of(st.none(), st.binary(max_size=10)),
    source_headers.map(tuple),
)
property_values: st.SearchStrategy[Any] = st.one_of(
    texts,
    st.binary(max_size=6),
    st.integers(0, 255),
    st.datetimes(min_value=datetime(1971, 1, 1)),
    st.sampled_from([Decimal("1.5"), 2.5, True, "a\r\nb", " pad ", "\u3000"]),
)
properties = st.dictionaries(
    st.sampled_from(["content_type", "delivery_mode", "message_id", "timestamp", "correlation_id", "app_id"]),
    st.one_of(st.none(), property_values),
    max_size=4,
)
amqp_messages = st.builds(
    SourceMessage,
    st.builds(
        AmqpOrigin,
        exchange=st.one_of(st.sampled_from(["x", "", "ex change", "x\n"]), texts),
        routing_key=st.one_of(st.sampled_from(["a.b", "0", "", "a..b", " k", "%"]), texts),
        queue=st.one_of(st.none(), st.sampled_from(["q", "q q", ""]), texts),
        properties=properties,
        stream_offset=st.one_of(st.none(), st.integers(0, 2**40)),
    ),
    st.one_of(st.none(), st.binary(max_size=10)),
    st.lists(st.tuples(names, header_values), max_size=3).map(tuple),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(KAFKA_ROUTES), message=kafka_messages)
def test_any_kafka_record_maps_as_the_general_path_maps_it(name: str, message: SourceMessage) -> None:
    assert_same(name, message)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(AMQP_ROUTES), message=amqp_messages)
def test_any_amqp_delivery_maps_as_the_general_path_maps_it(name: str, message: SourceMessage) -> None:
    assert_same(name, message)


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(KAFKA_ROUTES + AMQP_ROUTES), message=st.one_of(kafka_messages, amqp_messages))
def test_a_message_of_the_other_broker_fails_or_maps_alike(name: str, message: SourceMessage) -> None:
    assert_same(name, message)


COMMON_KAFKA = SourceMessage(KafkaOrigin("orders", 3, 1234567, b"customer-42", 1733400000000), b"x" * 100, ())
COMMON_AMQP = SourceMessage(AmqpOrigin("x", "a.b", None, {"delivery_mode": 2, "message_id": "m-1"}), b"y" * 100, ())


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("k-partition", COMMON_KAFKA),
        ("k-topic", COMMON_KAFKA),
        ("k-alone", dataclasses.replace(COMMON_KAFKA, headers=(("trace", b"1"), ("skip-me", b"2"), ("bin", b"\xff")))),
        ("k-key", dataclasses.replace(COMMON_KAFKA, body=None)),
        ("k-constant", COMMON_KAFKA),
        ("r-rk", COMMON_AMQP),
        ("r-exchange", dataclasses.replace(COMMON_AMQP, headers=(("n", 5), ("b", b"\x00\xff")))),
        ("r-queue", SourceMessage(AmqpOrigin("", "k", "q", {"timestamp": datetime(2026, 1, 2)}, False, 77), b"")),
        ("r-constant", COMMON_AMQP),
    ],
)
async def test_the_common_messages_take_the_fast_path_and_encode_as_nats_py(name: str, message: SourceMessage) -> None:
    mapped = assert_same(name, message)
    assert isinstance(mapped, OutboundMessage)
    assert isinstance(mapped.headers, EncodedHeaders), "the fast path did not take it"
    general_headers = dict(GENERAL[name].map(message).headers)
    expected = await nats_py_bytes(mapped.subject, "_INBOX.r.1", general_headers, mapped.payload)
    assert wire.hpub_command(mapped.subject, "_INBOX.r.1", mapped.headers, mapped.payload) == expected


@pytest.mark.parametrize("name", ["k-words", "k-set", "k-rename", "r-words"])
def test_routes_of_other_shapes_have_no_fast_path_or_leave_the_message_to_the_general_one(name: str) -> None:
    message = COMMON_KAFKA if name.startswith("k-") else COMMON_AMQP
    mapped = assert_same(name, message)
    assert isinstance(mapped, str) or type(mapped.headers) is dict


def test_a_second_base64_list_leaves_the_message_to_the_general_path() -> None:
    """A routing key that needs base64 and a binary source header: two lists to merge."""
    message = SourceMessage(AmqpOrigin("x", " k", None, {"message_id": "m"}), b"", (("bin", b"\xff"),))
    mapped = assert_same("r-exchange", message)
    assert isinstance(mapped, OutboundMessage)
    assert type(mapped.headers) is dict
    assert mapped.headers["Bridge-Base64-Headers"] == "Amqp-Routing-Key,bin"


def test_encoded_headers_read_back_as_the_mapping_they_were_made_from() -> None:
    headers = EncodedHeaders(b"NATS/1.0\r\nA: 1\r\nEmpty: \r\nB: x: y\r\n\r\n")
    assert dict(headers) == {"A": "1", "Empty": "", "B": "x: y"}
    assert list(headers) == ["A", "Empty", "B"]
    assert len(headers) == 3
    assert "A" in headers
    assert "C" not in headers
    assert headers.get("C") is None
    assert headers == {"A": "1", "Empty": "", "B": "x: y"}
    assert headers != {"A": "1"}
    assert {**headers, "C": "3"} == {"A": "1", "Empty": "", "B": "x: y", "C": "3"}
    assert dict(EncodedHeaders(b"NATS/1.0\r\n\r\n")) == {}
    assert "EncodedHeaders({'A': '1'" in repr(headers)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(KAFKA_ROUTES + AMQP_ROUTES), message=st.one_of(kafka_messages, amqp_messages))
def test_any_block_the_fast_path_makes_is_what_nats_py_writes(name: str, message: SourceMessage) -> None:
    mapped = outcome(FAST[name], message)
    if isinstance(mapped, str) or not isinstance(mapped.headers, EncodedHeaders):
        return
    expected = asyncio.run(nats_py_bytes(mapped.subject, "_INBOX.r.1", dict(mapped.headers), mapped.payload))
    assert wire.hpub_command(mapped.subject, "_INBOX.r.1", mapped.headers, mapped.payload) == expected


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(FAST)), message=st.one_of(kafka_messages, amqp_messages))
def test_the_auto_strategy_per_message_is_the_one_explain_gives(name: str, message: SourceMessage) -> None:
    """msg_id: auto picks without building the explanation; it must pick what explain says."""
    route = FAST[name]
    assert route._auto_strategy(message) == route._auto_choice(message).strategy


def test_a_stream_queue_route_is_known_as_one() -> None:
    assert FAST["r-queue"].stream_queue
    assert not FAST["r-rk"].stream_queue
    assert not FAST["k-partition"].stream_queue
