"""Dead letters against a real nats-server: every way a message cannot be delivered as mapped.

The pipeline runs with the in-memory source (so positions and settling are visible) and a
nats-server of the test's own (so max_payload can be made small). Each case checks the
three promises: the dead letter holds the original payload and headers plus the reason,
the source is settled only past it once it is stored, and it is counted.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js.errors import NotFoundError
from pipeline_helpers import LANE, Nats, drain
from private_nats import PrivateNatsServer, connect_like_the_bridge

from bridge.config import BridgeConfig, load_config_text
from bridge.errors import RouteStoppedError
from bridge.message import KafkaOrigin, SourceMessage
from bridge.sources.memory import MemorySource

pytestmark = pytest.mark.nats

MAX_PAYLOAD = 4096
MAPPING = """\
streams:
  - name: ORDERS
    subjects: ["orders.>"]
%(stream_extra)s
sources:
  k: {type: kafka, bootstrap_servers: ["unused:9092"]}
services:
  svc:
    routes:
      - name: r
        source: k
        from: {topics: [orders]}
        to: "%(to)s"
        on_error: %(on_error)s
"""


def load(to: str = "orders.{key}", on_error: str = "dead-letter", stream_extra: str = "") -> BridgeConfig:
    text = MAPPING % {"to": to, "on_error": on_error, "stream_extra": stream_extra}
    return load_config_text(textwrap.dedent(text), "test.yaml", {})


def record(offset: int, body: bytes = b"v", key: bytes | None = b"k") -> SourceMessage:
    return SourceMessage(
        KafkaOrigin("orders", 0, offset, key=key, timestamp_ms=1_700_000_000_000 + offset),
        body,
        headers=(("trace", b"abc"), ("binary", b"\x00\xff")),
    )


@pytest.fixture
async def nats(tmp_path: Path) -> AsyncIterator[Nats]:
    config = tmp_path / "nats.conf"
    config.write_text(f"max_payload: {MAX_PAYLOAD}\n")
    server = PrivateNatsServer(tmp_path / "nats", extra_args=("-c", str(config)))
    server.start()
    nc, events = await connect_like_the_bridge(server.url)
    try:
        yield Nats(nc, events)
    finally:
        if not nc.is_closed:
            await nc.close()
        server.stop(kill=True)


async def test_an_unmappable_message_is_dead_lettered_with_its_payload_headers_and_reason(nats: Nats) -> None:
    config = load()
    messages: list[SourceMessage | None] = [record(offset, key=None if offset == 5 else b"k") for offset in range(10)]
    pipeline, source = await drain(nats, config, messages)

    assert source.settled[LANE] == 9
    assert (await nats.js.stream_info("ORDERS")).state.messages == 9
    letters = await nats.messages("NATS_BRIDGE_DLQ")
    assert len(letters) == 1
    letter = letters[0]
    headers = letter.headers or {}
    assert letter.subject == "nats-bridge.dlq.svc.r"
    assert letter.data == b"v"
    assert headers["Bridge-Dlq-Reason"] == "unmappable"
    assert "{key}" in headers["Bridge-Dlq-Error"]
    assert headers["Bridge-Dlq-Route"] == "svc/r"
    assert (headers["Kafka-Topic"], headers["Kafka-Partition"], headers["Kafka-Offset"]) == ("orders", "0", "5")
    assert headers["trace"] == "abc"
    assert headers["binary"] == "AP8="  # base64, listed as such
    assert headers["Bridge-Base64-Headers"] == "binary"
    assert headers["Nats-Msg-Id"] == "dlq:svc/r/orders/0/5"
    assert pipeline.stats.dead_lettered == {"unmappable": 1}
    assert pipeline.stats.published == 9


async def test_batched_a_dead_letter_goes_alone_and_the_rest_in_atomic_batches_in_order(nats: Nats) -> None:
    """`ordering: batched`: records 0-4 and 6-9 go in atomic batches (their stored copies keep the
    server's Nats-Batch-Id), stored in offset order; the dead letter for 5 goes alone, so a person
    can republish it with its headers (a stored Nats-Batch-Id would make that a broken batch)."""
    config = load()
    messages: list[SourceMessage | None] = [record(offset, key=None if offset == 5 else b"k") for offset in range(10)]
    pipeline, source = await drain(nats, config, messages, atomic_batch=500)

    assert source.settled[LANE] == 9
    stored = await nats.messages("ORDERS")
    assert [int((msg.headers or {})["Kafka-Offset"]) for msg in stored] == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert any("Nats-Batch-Id" in (msg.headers or {}) for msg in stored), [msg.headers for msg in stored]
    (letter,) = await nats.messages("NATS_BRIDGE_DLQ")
    assert (letter.headers or {})["Kafka-Offset"] == "5"
    assert "Nats-Batch-Id" not in (letter.headers or {}), letter.headers
    republished = await nats.js.publish(
        "nats-bridge.dlq.svc.r",
        letter.data,
        headers={name: value for name, value in (letter.headers or {}).items() if name != "Nats-Msg-Id"},
    )
    assert republished.seq == 2  # a plain message: nothing of a batch in its headers
    assert pipeline.stats.dead_lettered == {"unmappable": 1}


async def test_a_redelivered_dead_letter_is_stored_once(nats: Nats) -> None:
    config = load()
    messages: list[SourceMessage | None] = [record(offset, key=None) for offset in range(3)]
    await drain(nats, config, messages)
    _, again = await drain(nats, config, messages)  # the source delivers them all again

    assert again.settled[LANE] == 2
    assert (await nats.js.stream_info("NATS_BRIDGE_DLQ")).state.messages == 3


async def test_a_payload_over_max_payload_goes_to_the_object_store_and_its_dead_letter_names_it(nats: Nats) -> None:
    config = load(to="orders.{partition}")
    big = bytes(range(256)) * 40  # 10,240 B: over the server's 4,096
    messages: list[SourceMessage | None] = [record(0), record(1, big), record(2)]
    pipeline, source = await drain(nats, config, messages)

    assert source.settled[LANE] == 2
    letters = await nats.messages("NATS_BRIDGE_DLQ")
    assert len(letters) == 1
    headers = letters[0].headers or {}
    assert headers["Bridge-Dlq-Reason"] == "payload-too-large"
    assert headers["Bridge-Dlq-Subject"] == "orders.0"
    assert headers["Bridge-Dlq-Payload-Size"] == str(len(big))
    assert not letters[0].data  # get_msg gives None for an empty payload
    bucket, _, name = headers["Bridge-Dlq-Payload-Object"].partition("/")
    stored = await (await nats.js.object_store(bucket)).get(name)
    assert stored.data == big
    assert pipeline.stats.dead_lettered == {"payload-too-large": 1}
    assert nats.events.disconnects == 0


async def test_headers_count_against_max_payload_so_the_server_never_drops_the_connection(nats: Nats) -> None:
    # nats-py checks only the payload: 4,000 B passes its check, and with the metadata
    # headers the message is over 4,096, which the server answers by closing the connection.
    config = load(to="orders.{partition}")
    messages: list[SourceMessage | None] = [record(0), record(1, b"x" * 4000), record(2)]
    pipeline, source = await drain(nats, config, messages)

    assert source.settled[LANE] == 2
    assert pipeline.stats.dead_lettered == {"payload-too-large": 1}
    assert nats.events.disconnects == 0
    assert (await nats.js.stream_info("ORDERS")).state.messages == 2


async def test_a_subject_no_stream_captures_is_dead_lettered_as_no_stream(nats: Nats) -> None:
    config = load(to="unrouted.{partition}")
    messages: list[SourceMessage | None] = [record(offset) for offset in range(3)]
    pipeline, source = await drain(nats, config, messages)

    assert source.settled[LANE] == 2
    letters = await nats.messages("NATS_BRIDGE_DLQ")
    assert {(m.headers or {})["Bridge-Dlq-Reason"] for m in letters} == {"no-stream"}
    assert {(m.headers or {})["Bridge-Dlq-Subject"] for m in letters} == {"unrouted.0"}
    assert sorted((m.headers or {})["Kafka-Offset"] for m in letters) == ["0", "1", "2"]
    assert pipeline.stats.dead_lettered == {"no-stream": 3}


async def test_a_message_the_stream_refuses_for_good_is_dead_lettered_as_refused(nats: Nats) -> None:
    config = load(to="orders.{partition}", stream_extra="    max_msg_size: 1000")
    messages: list[SourceMessage | None] = [record(0), record(1, b"y" * 2000), record(2)]
    pipeline, source = await drain(nats, config, messages)

    assert source.settled[LANE] == 2
    letters = await nats.messages("NATS_BRIDGE_DLQ")
    assert len(letters) == 1
    headers = letters[0].headers or {}
    assert headers["Bridge-Dlq-Reason"] == "refused"
    assert "10054" in headers["Bridge-Dlq-Error"]
    assert letters[0].data == b"y" * 2000
    assert pipeline.stats.dead_lettered == {"refused": 1}
    assert pipeline.stats.failures_by_kind == {"error": 1}


async def test_on_error_skip_settles_and_counts_and_on_error_stop_stops_before_it(nats: Nats) -> None:
    messages: list[SourceMessage | None] = [record(offset, key=None if offset == 1 else b"k") for offset in range(3)]
    skipping, source = await drain(nats, load(on_error="skip"), messages)
    assert source.settled[LANE] == 2
    assert skipping.stats.skipped == 1
    assert skipping.stats.dead_lettered == {}

    stopped = MemorySource({LANE: messages})
    with pytest.raises(RouteStoppedError, match=r"orders/0 position 1 cannot be delivered"):
        await drain(nats, load(on_error="stop"), messages, timeout=10, source=stopped)
    assert stopped.settled[LANE] == 0  # message 0 stored and settled; nothing from 1 on
    with pytest.raises(NotFoundError):
        await nats.js.stream_info("NATS_BRIDGE_DLQ")  # never declared: no route dead-letters
