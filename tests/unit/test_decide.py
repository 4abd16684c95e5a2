"""decide(): one route's verdict on one message, the one place every caller asks."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from bridge.config import BridgeConfig, load_config_text
from bridge.deadletters import DeadLetterReason, DeadLetters
from bridge.decide import DecideContext, Fate, decide
from bridge.explain import explain_kafka, format_explanation
from bridge.headers import ORIGIN_HEADER
from bridge.mapping import CompiledRoute
from bridge.message import AmqpOrigin, KafkaOrigin, SourceMessage

MAPPING = """\
streams:
  - name: ORDERS
    subjects: ["orders.>"]
sources:
  k: {type: kafka, bootstrap_servers: ["unused:9092"]}
  r: {type: rabbitmq, url: "amqp://guest:guest@localhost/"}
services:
  svc:
    routes:
      - name: kafka
        source: k
        from: {topics: [orders]%(tombstones)s}
        to: "%(to)s"
        on_error: %(on_error)s
      - name: amqp
        source: r
        from: {queue: orders}
        to: "orders.amqp"
"""


def config(to: str = "orders.{key}", on_error: str = "dead-letter", tombstones: str = "") -> BridgeConfig:
    extra = f", tombstones: {tombstones}" if tombstones else ""
    text = MAPPING % {"to": to, "on_error": on_error, "tombstones": extra}
    return load_config_text(textwrap.dedent(text), "test.yaml", {})


def route(cfg: BridgeConfig, index: int = 0) -> CompiledRoute:
    service, route_config = cfg.routes()[index]
    return CompiledRoute.compile(service, route_config)


def record(
    body: bytes | None = b"v", key: bytes | None = b"k", headers: tuple[tuple[str, bytes], ...] = ()
) -> SourceMessage:
    return SourceMessage(KafkaOrigin("orders", 0, 7, key=key), body, headers)


def test_a_mapped_message_is_published_with_its_stream_and_size() -> None:
    cfg = config()
    verdict = decide(route(cfg), record(), DecideContext(streams=cfg.streams))
    assert verdict.fate is Fate.PUBLISH
    assert verdict.published
    assert verdict.reason is None
    assert verdict.outbound is not None
    assert verdict.outbound.subject == "orders.k"
    assert verdict.streams == ("ORDERS",)
    assert verdict.size > len(b"v")  # headers count


@pytest.mark.parametrize(
    ("tombstones", "fate"), [("skip", Fate.FILTERED), ("forward", Fate.PUBLISH), ("", Fate.PUBLISH)]
)
def test_a_tombstone_is_filtered_only_when_the_route_skips_tombstones(tombstones: str, fate: Fate) -> None:
    verdict = decide(route(config(tombstones=tombstones)), record(body=None), DecideContext())
    assert verdict.fate is fate, verdict
    if fate is Fate.FILTERED:
        assert "tombstones: skip" in verdict.detail
        assert verdict.outbound is None


def test_a_record_a_reverse_route_wrote_is_filtered_on_every_source() -> None:
    cfg = config()
    marked = record(headers=((ORIGIN_HEADER, b"nats"),))
    assert decide(route(cfg), marked, DecideContext()).fate is Fate.FILTERED
    amqp = SourceMessage(AmqpOrigin(exchange="x", routing_key="rk", queue="orders"), b"v", ((ORIGIN_HEADER, "nats"),))
    verdict = decide(route(cfg, 1), amqp, DecideContext())
    assert verdict.fate is Fate.FILTERED
    assert ORIGIN_HEADER in verdict.detail


@pytest.mark.parametrize(
    ("on_error", "fate"), [("dead-letter", Fate.DEAD_LETTER), ("skip", Fate.SKIP), ("stop", Fate.STOP)]
)
def test_an_unmappable_message_gets_its_routes_on_error_fate(on_error: str, fate: Fate) -> None:
    verdict = decide(route(config(on_error=on_error)), record(key=None), DecideContext())
    assert verdict.fate is fate, verdict
    assert verdict.reason is DeadLetterReason.UNMAPPABLE, verdict
    assert verdict.outbound is None
    assert verdict.detail


def test_too_large_counts_the_headers_and_happens_after_the_mark() -> None:
    cfg = config()
    message = record(body=b"x" * 800)
    fits = decide(route(cfg), message, DecideContext(max_payload=1000))
    assert fits.published, fits
    marked = DecideContext(
        max_payload=1000,
        mark=lambda out: dataclasses.replace(out, headers={**out.headers, "Bridge-Recopied": "x" * 200}),
    )
    verdict = decide(route(cfg), message, marked)
    assert verdict.reason is DeadLetterReason.PAYLOAD_TOO_LARGE
    assert verdict.fate is Fate.DEAD_LETTER
    assert "exceed max_payload 1000" in verdict.detail
    assert verdict.size > 1000


def test_a_subject_past_the_control_line_is_unmappable() -> None:
    verdict = decide(route(config()), record(key=b"k" * 300), DecideContext(subject_room=100))
    assert verdict.reason is DeadLetterReason.UNMAPPABLE, verdict
    assert "bytes the server's max_control_line (4096) leaves for a subject" in verdict.detail


def test_no_stream_is_judged_only_against_the_streams_given() -> None:
    cfg = config(to="elsewhere.{key}")
    assert decide(route(cfg), record(), DecideContext()).published  # the server decides
    verdict = decide(route(cfg), record(), DecideContext(streams=cfg.streams))
    assert verdict.reason is DeadLetterReason.NO_STREAM
    assert "elsewhere.k" in verdict.detail


def test_explain_says_filtered_for_a_tombstone_the_route_skips() -> None:
    """Issue 15: explain used to show the subject and Msg-Id the bridge would publish it with."""
    text = format_explanation(explain_kafka(config(tombstones="skip"), topic="orders", key=b"k", body=None))
    assert "route svc/kafka" in text
    assert "filtered: a tombstone (tombstones: skip)" in text
    assert "Nats-Msg-Id" not in text
    kept = format_explanation(explain_kafka(config(), topic="orders", key=b"k", body=None))
    assert "subject      orders.k" in kept


def unreadable_offset(offset: int = 5) -> SourceMessage:
    """A stream offset the source knows holds a message it cannot read (bridge.brokers.rabbitmq.unreadable)."""
    origin = AmqpOrigin(exchange="", routing_key="", queue="events", stream_offset=offset)
    return SourceMessage(origin, b"", unreadable=f"RabbitMQ closes the connection at offset {offset}")


@pytest.mark.parametrize(("on_error", "fate"), [("dead-letter", Fate.DEAD_LETTER), ("skip", Fate.SKIP)])
def test_a_message_the_source_cannot_read_gets_the_routes_on_error_and_says_why(on_error: str, fate: Fate) -> None:
    text = textwrap.dedent(MAPPING % {"to": "orders.x", "on_error": "dead-letter", "tombstones": ""})
    text = text.replace('to: "orders.amqp"', f'to: "orders.amqp"\n        on_error: {on_error}')
    verdict = decide(route(load_config_text(text, "test.yaml", {}), 1), unreadable_offset(), DecideContext())
    assert verdict.fate is fate
    assert verdict.reason is DeadLetterReason.UNREADABLE
    assert verdict.outbound is None
    assert verdict.detail == "RabbitMQ closes the connection at offset 5"


def test_the_dead_letter_of_an_unreadable_offset_is_named_by_queue_and_offset_whatever_the_msg_id_template() -> None:
    """Its Msg-Id must be deterministic (a retry is stored once) and differ per offset: a template
    or a content hash of a message that is only its coordinates could not promise that."""
    text = textwrap.dedent(MAPPING % {"to": "orders.x", "on_error": "dead-letter", "tombstones": ""})
    text = text.replace('to: "orders.amqp"', 'to: "orders.amqp"\n        msg_id: "{message_id}"')
    cfg = load_config_text(text, "test.yaml", {})
    compiled = route(cfg, 1)
    letters = DeadLetters(cfg.dead_letters, compiled)
    ids = []
    for offset in (5, 6):
        message = unreadable_offset(offset)
        letter = letters.for_unmappable(message, message.unreadable or "", DeadLetterReason.UNREADABLE)
        ids.append(letter.message.msg_id)
        assert letter.message.payload == b""
        assert letter.message.headers["Bridge-Dlq-Reason"] == "unreadable"
        assert letter.message.headers["Amqp-Stream-Offset"] == str(offset)
    assert ids == ["dlq:svc/amqp/events/5", "dlq:svc/amqp/events/6"]
