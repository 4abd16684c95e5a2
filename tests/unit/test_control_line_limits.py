"""The limits a message must fit before it is sent, and the dead letter that must always fit.

Pure arithmetic against nats-server's rules (the integration tests send to a real server):
its control line bounds `<subject> <reply> <hdr_len> <total_len>` by max_control_line, and
max_payload bounds headers plus payload.
"""

from __future__ import annotations

import textwrap
from typing import Any, cast

from nats.aio.client import Client as NatsClient

from bridge.config import load_config_text
from bridge.deadletters import (
    DEFAULT_MAX_CONTROL_LINE,
    SUBJECT_HEADER,
    TRUNCATED_HEADER,
    DeadLetterReason,
    DeadLetters,
    fits,
    subject_fits,
)
from bridge.jetstream.publisher import JetStreamPublisher
from bridge.mapping import CompiledRoute
from bridge.message import OutboundMessage

INBOX = "_INBOX.0123456789abcdefghijkl"  # nats-py's shape: _INBOX. and 22 characters


class FakeClient:
    """Just what the publisher reads of a client before it starts."""

    def __init__(self, max_payload: int) -> None:
        self.max_payload = max_payload

    def new_inbox(self) -> str:
        return INBOX

    def jetstream(self, **_options: Any) -> object:
        return object()


def publisher(max_payload: int = 1024 * 1024, max_control_line: int = DEFAULT_MAX_CONTROL_LINE) -> JetStreamPublisher:
    return JetStreamPublisher(cast(NatsClient, FakeClient(max_payload)), max_control_line=max_control_line)


def test_the_subject_room_is_what_the_longest_hpub_control_line_leaves() -> None:
    for max_payload, max_control_line in ((1024 * 1024, 4096), (4096, 4096), (64 * 1024 * 1024, 1024)):
        room = publisher(max_payload, max_control_line).subject_room
        longest_reply = f"{INBOX}.{'9' * 20}"
        # What the server measures: the HPUB arguments, with both sizes at their largest.
        line = f"{'s' * room} {longest_reply} {max_payload} {max_payload}"
        assert len(line) == max_control_line


def test_subject_fits_counts_bytes_not_characters() -> None:
    assert subject_fits("a" * 4029, 4029)
    assert not subject_fits("a" * 4030, 4029)
    assert subject_fits("é" * 2014, 4029)  # 4,028 bytes
    assert not subject_fits("é" * 2015, 4029)  # 4,030 bytes


def route_and_letters() -> DeadLetters:
    config = load_config_text(
        textwrap.dedent("""\
            streams:
              - name: ORDERS
                subjects: ["orders.>"]
            sources:
              k: {type: kafka, bootstrap_servers: ["unused:9092"]}
            services:
              svc:
                routes:
                  - {name: r, source: k, from: {topics: [orders]}, to: "orders.{key}"}
            """),
        "test.yaml",
        {},
    )
    service, route = config.routes()[0]
    return DeadLetters(config.dead_letters, CompiledRoute.compile(service, route))


def test_a_dead_letter_keeps_only_the_start_of_a_huge_subject_and_its_length() -> None:
    letters = route_and_letters()
    subject = "orders." + "%2A" * 3000
    outbound = OutboundMessage(subject, b"p", "orders/0/0", {"Nats-Msg-Id": "orders/0/0", "Kafka-Key": "*" * 3000})
    letter = letters.for_refused(outbound, DeadLetterReason.UNMAPPABLE, "too long")
    meant = letter.message.headers[SUBJECT_HEADER]
    assert meant.startswith(subject[:1000])
    assert meant.endswith(f"... ({len(subject)} bytes)")
    assert len(meant) < 1100
    assert letter.message.subject == "nats-bridge.dlq.svc.r"
    assert fits(letter.message, 8192)  # the 9,007-byte subject alone would not


def test_a_dead_letter_whose_headers_alone_exceed_max_payload_has_the_longest_cut_until_it_fits() -> None:
    letters = route_and_letters()
    headers = {"Nats-Msg-Id": "orders/0/1", "huge": "h" * 9000, "big": "b" * 3900, "small": "s" * 100}
    outbound = OutboundMessage("orders.k", b"x" * 10, "orders/0/1", headers)
    letter = letters.for_refused(outbound, DeadLetterReason.PAYLOAD_TOO_LARGE, "too large")
    assert not fits(letter.message, 4096)

    slim = letters.too_large(letter, 4096)

    assert fits(slim.message, 4096)
    kept = slim.message.headers
    assert kept[TRUNCATED_HEADER] == "huge,big"
    assert kept["huge"].startswith("h" * 256)
    assert kept["huge"].endswith("... (9000 bytes)")
    assert kept["small"] == "s" * 100  # short values are never cut
    assert kept["Bridge-Dlq-Reason"] == "payload-too-large"
    assert slim.payload == b"x" * 10  # the payload goes to the object store whole


def test_a_dead_letter_that_fits_once_its_payload_is_out_keeps_every_header() -> None:
    letters = route_and_letters()
    headers = {"Nats-Msg-Id": "orders/0/2", "big": "b" * 3000}
    letter = letters.for_refused(
        OutboundMessage("orders.k", b"x" * 5000, "orders/0/2", headers), DeadLetterReason.PAYLOAD_TOO_LARGE, "large"
    )
    slim = letters.too_large(letter, 4096)
    assert slim.message.headers["big"] == "b" * 3000
    assert TRUNCATED_HEADER not in slim.message.headers
