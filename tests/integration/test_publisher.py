"""The pipelined publisher against a real nats-server: every outcome reaches its owner.

nats-py's publish_async loses error acks and never times out (CLIENT-NOTES.md); these tests
pin that ours does not, case by case: PubAcks matched back under a full window, duplicates
counted, error replies (stream full, wrong stream), no stream for the subject, timeouts, a
disconnect, and messages the client refuses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient
from nats.js import api as js_api
from private_nats import PrivateNatsServer, connect_like_the_bridge

from bridge.brokers.nats.client import ConnectionEvents
from bridge.jetstream.publish_types import InFlight, PublishFailure
from bridge.jetstream.publisher import JetStreamPublisher
from bridge.message import OutboundMessage

pytestmark = pytest.mark.nats


class Recorder:
    """A PublishOwner that records every outcome."""

    def __init__(self) -> None:
        self.stored: dict[int, tuple[int, bool]] = {}
        self.failures: list[tuple[int, PublishFailure]] = []
        self.outcomes = 0
        self.changed = asyncio.Event()

    def sendable(self, entry: InFlight) -> bool:
        return True

    def published(self, entry: InFlight, seq: int, duplicate: bool) -> None:
        self.stored[entry.position] = (seq, duplicate)
        self.outcomes += 1
        self.changed.set()

    def failed(self, entry: InFlight, failure: PublishFailure) -> None:
        self.failures.append((entry.position, failure))
        self.outcomes += 1
        self.changed.set()

    async def wait_for(self, outcomes: int, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while self.outcomes < outcomes:
                self.changed.clear()
                await self.changed.wait()


def entries(owner: Recorder, subject: str, count: int, *, start: int = 0, payload: bytes = b"x") -> list[InFlight]:
    return [
        InFlight(
            OutboundMessage(subject, payload, f"id-{i}", {"Nats-Msg-Id": f"id-{i}"}),
            owner,
            position=i,
        )
        for i in range(start, start + count)
    ]


@pytest.fixture
async def private_server(tmp_path: Path) -> AsyncIterator[PrivateNatsServer]:
    server = PrivateNatsServer(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)


@pytest.fixture
async def client(private_server: PrivateNatsServer) -> AsyncIterator[tuple[NatsClient, ConnectionEvents]]:
    nc, events = await connect_like_the_bridge(private_server.url)
    try:
        yield nc, events
    finally:
        await nc.close()


async def test_every_puback_is_matched_back_with_a_small_window(
    client: tuple[NatsClient, ConnectionEvents],
) -> None:
    nc, events = client
    js = nc.jetstream()
    await js.add_stream(name="ORDERS", subjects=["orders.>"])
    owner = Recorder()
    async with JetStreamPublisher(nc, window=64) as publisher:
        events.add(publisher)
        await publisher.publish(entries(owner, "orders.created", 5000))
        await owner.wait_for(5000)
        assert publisher.in_flight == 0
    assert owner.failures == []
    assert sorted(owner.stored) == list(range(5000))
    # Stored in publish order: position i got sequence i + 1.
    assert all(seq == position + 1 for position, (seq, _) in owner.stored.items())
    assert (await js.stream_info("ORDERS")).state.messages == 5000


async def test_duplicates_are_reported_and_counted(client: tuple[NatsClient, ConnectionEvents]) -> None:
    nc, events = client
    js = nc.jetstream()
    await js.add_stream(name="S", subjects=["s.>"])
    owner = Recorder()
    async with JetStreamPublisher(nc) as publisher:
        events.add(publisher)
        await publisher.publish(entries(owner, "s.a", 10))
        await owner.wait_for(10)
        again = entries(owner, "s.a", 10)
        await publisher.publish(again)
        await owner.wait_for(20)
        assert publisher.stats.duplicates == 10
    assert all(duplicate for _, (_, duplicate) in owner.stored.items())
    assert (await js.stream_info("S")).state.messages == 10


async def test_stream_full_error_reply_fails_the_message(client: tuple[NatsClient, ConnectionEvents]) -> None:
    nc, events = client
    js = nc.jetstream()
    await js.add_stream(
        js_api.StreamConfig(name="TINY", subjects=["tiny.>"], max_msgs=3, discard=js_api.DiscardPolicy.NEW)
    )
    owner = Recorder()
    async with JetStreamPublisher(nc) as publisher:
        events.add(publisher)
        await publisher.publish(entries(owner, "tiny.x", 5))
        await owner.wait_for(5)
    assert sorted(owner.stored) == [0, 1, 2]
    assert [position for position, _ in owner.failures] == [3, 4]
    failure = owner.failures[0][1]
    assert failure.kind == "error"
    assert failure.code == 503
    assert failure.err_code == 10077  # JSStreamStoreFailedF: "maximum messages exceeded"
    assert "maximum messages" in failure.description
    assert not failure.permanent


async def test_wrong_expected_stream_error_reply(client: tuple[NatsClient, ConnectionEvents]) -> None:
    nc, events = client
    js = nc.jetstream()
    await js.add_stream(name="RIGHT", subjects=["right.>"])
    owner = Recorder()
    entry = InFlight(
        OutboundMessage("right.x", b"x", "w-1", {"Nats-Msg-Id": "w-1", "Nats-Expected-Stream": "WRONG"}), owner, 0
    )
    async with JetStreamPublisher(nc) as publisher:
        events.add(publisher)
        await publisher.publish([entry])
        await owner.wait_for(1)
    ((_, failure),) = owner.failures
    assert failure.kind == "error"
    assert failure.err_code == 10060  # JSStreamNotMatchErr
    assert "expected stream does not match" in failure.description


async def test_no_stream_for_the_subject_fails_fast(client: tuple[NatsClient, ConnectionEvents]) -> None:
    nc, events = client
    owner = Recorder()
    async with JetStreamPublisher(nc, ack_timeout=30) as publisher:
        events.add(publisher)
        await publisher.publish(entries(owner, "nowhere.x", 3))
        await owner.wait_for(3, timeout=5)
    assert [failure.kind for _, failure in owner.failures] == ["no-responders"] * 3


async def test_no_reply_times_out(client: tuple[NatsClient, ConnectionEvents]) -> None:
    nc, events = client
    silent = await nc.subscribe("silent.>")  # a responder that never answers: no 503, no PubAck
    owner = Recorder()
    async with JetStreamPublisher(nc, ack_timeout=0.5) as publisher:
        events.add(publisher)
        await publisher.publish(entries(owner, "silent.x", 4))
        await owner.wait_for(4, timeout=5)
        assert publisher.in_flight == 0
    await silent.unsubscribe()
    assert [failure.kind for _, failure in owner.failures] == ["timeout"] * 4


async def test_payload_over_max_payload_is_refused_permanently(
    client: tuple[NatsClient, ConnectionEvents],
) -> None:
    nc, events = client
    js = nc.jetstream()
    await js.add_stream(name="BIG", subjects=["big.>"])
    owner = Recorder()
    too_big = b"x" * (nc.max_payload + 1)
    async with JetStreamPublisher(nc, window=2) as publisher:
        events.add(publisher)
        await publisher.publish(entries(owner, "big.x", 3, payload=too_big))
        await publisher.publish(entries(owner, "big.x", 1, start=3))
        await owner.wait_for(4)
        assert publisher.in_flight == 0  # the refused ones did not leak window slots
    assert [(p, f.kind, f.permanent) for p, f in owner.failures] == [(i, "refused", True) for i in range(3)]
    assert list(owner.stored) == [3]


async def test_disconnect_fails_everything_in_flight_then_resumes(
    private_server: PrivateNatsServer, client: tuple[NatsClient, ConnectionEvents]
) -> None:
    nc, events = client
    js = nc.jetstream()
    await js.add_stream(name="D", subjects=["d.>"])
    owner = Recorder()
    silent = await nc.subscribe("hold.>")  # keeps these in flight until the disconnect
    async with JetStreamPublisher(nc, ack_timeout=60) as publisher:
        events.add(publisher)
        await publisher.publish(entries(owner, "hold.x", 50))
        assert publisher.in_flight == 50
        await asyncio.to_thread(private_server.restart, kill=True)
        await owner.wait_for(50, timeout=15)
        assert {failure.kind for _, failure in owner.failures} == {"disconnected"}
        assert publisher.in_flight == 0
        await asyncio.wait_for(publisher.wait_connected(), 20)
        await silent.unsubscribe()
        resent = Recorder()
        await publisher.publish(entries(resent, "d.x", 20))
        await resent.wait_for(20)
    assert resent.failures == []
    assert len(resent.stored) == 20
