"""bridge.jetstream.wire writes exactly the bytes nats-py would, and refuses what it refuses.

The reference is nats-py's own code, not a copy of it: an unconnected Client whose
`_send_command` records the command, driven through `Client._send_publish` (the encoding) and
`Client.publish` (the checks before it). A nats-py upgrade that changes either shows up here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NatsClient
from nats.errors import (
    BadHeaderError,
    BadSubjectError,
    ConnectionClosedError,
    ConnectionDrainingError,
    MaxPayloadError,
    OutboundBufferLimitError,
)

from bridge.jetstream import wire
from bridge.message import EncodedHeaders


class Recorded(NatsClient):
    """A nats-py client that keeps its commands instead of writing them."""

    def __init__(self) -> None:
        super().__init__()
        self.commands: list[bytes] = []
        self.flushes = 0

    async def _send_command(self, cmd: bytes, priority: bool = False) -> None:
        self.commands.append(cmd)

    async def _flush_pending(self, force_flush: bool = False) -> Any:
        self.flushes += 1


async def nats_py_bytes(subject: str, reply: str, headers: dict[str, str], payload: bytes) -> bytes:
    client = Recorded()
    await client._send_publish(subject, reply, payload, len(payload), headers)
    return client.commands[-1]


BRIDGE_HEADERS = {
    "Kafka-Topic": "orders",
    "Kafka-Partition": "3",
    "Kafka-Offset": "1234567",
    "Kafka-Timestamp": "1733400000000",
    "Kafka-Key": "customer-42",
    "Bridge-Route": "billing/orders",
    "Nats-Msg-Id": "billing/orders/orders/3/1234567",
}


async def test_the_bridge_headers_encode_as_nats_py_encodes_them() -> None:
    payload = b'{"order": 1}'
    ours = wire.hpub_command("orders.created", "_INBOX.x.1", BRIDGE_HEADERS, payload)
    assert ours == await nats_py_bytes("orders.created", "_INBOX.x.1", BRIDGE_HEADERS, payload)
    assert ours.startswith(b"HPUB orders.created _INBOX.x.1 ")
    assert b"\r\nNats-Msg-Id: billing/orders/orders/3/1234567\r\n" in ours


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"": "skipped", "A": "1"},
        {"  ": "skipped too"},
        {" Padded ": "name stripped"},
        {"V": "  value with edges \t"},
        {"V": "line\r\nbreak\ninside\rit"},
        {"V": ""},
        {"V": "\u3000ideographic space edges\u3000"},
        {"V": "\x85next line\x85", "W": "\xa0nbsp\xa0"},
        {"V": "ünïcødé ✓ 日本"},
        {"X-Trace": "a", "x-trace": "b"},
    ],
)
async def test_edge_cases_encode_as_nats_py_encodes_them(headers: dict[str, str]) -> None:
    assert wire.hpub_command("s", "", headers, b"") == await nats_py_bytes("s", "", headers, b"")


@pytest.mark.parametrize("name", ["With Space", "colon:", "new\nline", "ümlaut", "a\x00b"])
async def test_a_header_name_nats_py_refuses_is_refused(name: str) -> None:
    with pytest.raises(BadHeaderError):
        await nats_py_bytes("s", "", {name: "v"}, b"")
    with pytest.raises(BadHeaderError):
        wire.hpub_command("s", "", {name: "v"}, b"")
    with pytest.raises(BadHeaderError):  # a second time, after the name cache saw it
        wire.hpub_command("s", "", {name: "v"}, b"")


@pytest.mark.parametrize(("subject", "reply"), [("", ""), ("a b", ""), ("a\r\nPUB x 1", ""), ("a", "r\tx")])
async def test_a_subject_nats_py_refuses_is_refused(subject: str, reply: str) -> None:
    client = Recorded()
    with pytest.raises(BadSubjectError):
        await client.publish(subject, b"", reply=reply, headers={"A": "1"})
    with pytest.raises(BadSubjectError):
        wire.hpub_command(subject, reply, {"A": "1"}, b"")


header_names = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
header_values = st.text(max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    headers=st.dictionaries(header_names, header_values, max_size=6),
    payload=st.binary(max_size=40),
    subject=st.from_regex(r"[a-z0-9.>*_-]{1,20}", fullmatch=True),
)
def test_any_headers_encode_as_nats_py_or_are_refused_alike(
    headers: dict[str, str], payload: bytes, subject: str
) -> None:
    try:
        expected: bytes | type[Exception] = asyncio.run(nats_py_bytes(subject, "_INBOX.r", headers, payload))
    except BadHeaderError:
        expected = BadHeaderError
    try:
        ours: bytes | type[Exception] = wire.hpub_command(subject, "_INBOX.r", headers, payload)
    except BadHeaderError:
        ours = BadHeaderError
    assert ours == expected


async def test_send_queues_the_command_counts_it_and_kicks_the_flusher() -> None:
    client = Recorded()
    client._status = NatsClient.CONNECTED  # nothing is written: _send_command is recorded
    client._flush_queue = asyncio.Queue()
    command = wire.hpub_command("s", "r", {"A": "1"}, b"12345")
    await wire.send(client, command, 5)
    assert client.commands == [command]
    assert client.stats["out_msgs"] == 1
    assert client.stats["out_bytes"] == 5
    assert client.flushes == 1
    client._flush_queue.put_nowait(asyncio.get_running_loop().create_future())  # a flush already asked
    await wire.send(client, command, 5)
    assert client.flushes == 1


async def test_send_refuses_as_publish_refuses() -> None:
    """Each state, through nats-py's publish and through send: the same exception type."""

    def closed(c: Recorded) -> None:
        c._status = NatsClient.CLOSED

    def draining(c: Recorded) -> None:
        c._status = NatsClient.DRAINING_PUBS

    def reconnecting_without_buffer(c: Recorded) -> None:
        c._status = NatsClient.RECONNECTING
        c._max_pending_size = 0

    def too_large(c: Recorded) -> None:
        c._status = NatsClient.CONNECTED
        c._max_payload = 4

    cases = [
        (closed, ConnectionClosedError),
        (draining, ConnectionDrainingError),
        (reconnecting_without_buffer, OutboundBufferLimitError),
        (too_large, MaxPayloadError),
    ]
    for arrange, error in cases:
        theirs, ours = Recorded(), Recorded()
        arrange(theirs)
        arrange(ours)
        with pytest.raises(error):
            await theirs.publish("s", b"12345", headers={"A": "1"})
        with pytest.raises(error):
            await wire.send(ours, wire.hpub_command("s", "", {"A": "1"}, b"12345"), 5)
        assert theirs.commands == ours.commands == []


async def test_headers_that_come_encoded_are_sent_as_their_block() -> None:
    """A mapped message's EncodedHeaders (bridge.fast_map) go out as they are, sized by their block."""
    block = wire.header_block(BRIDGE_HEADERS)
    encoded = EncodedHeaders(block)
    payload = b'{"order": 1}'
    ours = wire.hpub_command("orders.created", "_INBOX.x.1", encoded, payload)
    assert ours == await nats_py_bytes("orders.created", "_INBOX.x.1", BRIDGE_HEADERS, payload)
    assert dict(encoded) == BRIDGE_HEADERS
    odd = EncodedHeaders(b"NATS/1.0\r\nNot: what the mapping says\r\n\r\n")
    assert b"Not: what the mapping says" in wire.hpub_command("s", "", odd, b"")  # the block, not a re-encoding


plain_values = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=8)


@settings(max_examples=300, deadline=None)
@given(
    headers=st.dictionaries(st.sampled_from(["Kafka-Topic", "Bridge-Route", "Nats-Msg-Id", "A"]), plain_values),
    more=st.dictionaries(
        st.sampled_from(["Nats-Batch-Id", "Nats-Batch-Sequence", "Nats-Batch-Commit", "A", " A", "bad name", ""]),
        st.one_of(plain_values, st.sampled_from(["1", " edge", "a\r\nb", ""])),
        max_size=3,
    ),
)
def test_extended_encoded_headers_encode_as_the_extended_dict(headers: dict[str, str], more: dict[str, str]) -> None:
    """An atomic batch's headers added to a mapped message's block: the bytes of the dict way."""
    encoded = EncodedHeaders(wire.header_block(headers))
    try:
        expected: bytes | type[Exception] = asyncio.run(nats_py_bytes("s", "r", {**headers, **more}, b"p"))
    except BadHeaderError:
        expected = BadHeaderError
    try:
        extended = wire.extended(encoded, more)
        ours: bytes | type[Exception] = wire.hpub_command("s", "r", extended, b"p")
    except BadHeaderError:
        ours = BadHeaderError
    assert ours == expected
    if ours is not BadHeaderError and type(extended) is EncodedHeaders:
        assert dict(extended) == {**headers, **more}


def test_an_atomic_batchs_headers_extend_the_block() -> None:
    extended = wire.extended(EncodedHeaders(wire.header_block(BRIDGE_HEADERS)), {"Nats-Batch-Sequence": "3"})
    assert type(extended) is EncodedHeaders
    assert extended.block.endswith(b"\r\nNats-Batch-Sequence: 3\r\n\r\n")
    assert type(wire.extended(BRIDGE_HEADERS, {"A": "1"})) is dict
