"""NATS JetStream through the real server: stream, dedup by Nats-Msg-Id, pull consumer."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nats.js import JetStreamContext


async def test_publish_dedup_and_pull(jetstream: JetStreamContext, unique_name: str) -> None:
    subject = f"{unique_name}.smoke"
    await jetstream.add_stream(name=unique_name, subjects=[f"{unique_name}.>"])

    ack = await jetstream.publish(subject, b"hello", headers={"Nats-Msg-Id": "m-1", "X-Source": "smoke"})
    assert ack.stream == unique_name
    assert ack.seq == 1
    assert not ack.duplicate

    again = await jetstream.publish(subject, b"hello", headers={"Nats-Msg-Id": "m-1", "X-Source": "smoke"})
    assert again.duplicate is True
    assert again.seq == 1

    sub = await jetstream.pull_subscribe(subject, durable=f"{unique_name}-c", stream=unique_name)
    (msg,) = await sub.fetch(1, timeout=10)
    assert msg.subject == subject
    assert msg.data == b"hello"
    assert msg.headers is not None
    assert msg.headers["Nats-Msg-Id"] == "m-1"
    assert msg.headers["X-Source"] == "smoke"
    assert msg.metadata.sequence.stream == 1
    await msg.ack_sync()

    info = await jetstream.stream_info(unique_name)
    assert info.state.messages == 1
    await sub.unsubscribe()
