"""Under uvloop (the runner's loop) a request written to a just-closed Kafka connection is a
KafkaConnectionError aiokafka retries, never uvloop's RuntimeError ("the handler is closed").

A fault-schedule run saw the RuntimeError escape aiokafka's heartbeat task during a Kafka restart;
aiokafka handed it to the next getmany and the bridge exited 1 with a traceback. Reproduced here
deterministically against the real broker: the connection's transport is aborted, and the request
goes out in the loop iteration where uvloop has closed the transport but aiokafka has not yet
noticed (bridge/brokers/kafka/uvloop.py).
"""

from __future__ import annotations

import asyncio

import pytest
import uvloop
from aiokafka.conn import AIOKafkaConnection, create_conn
from aiokafka.errors import KafkaConnectionError
from aiokafka.protocol.metadata import MetadataRequest

from bridge.brokers.kafka import uvloop as aiokafka_uvloop

pytestmark = [pytest.mark.kafka]


async def _write_to_a_closed_connection(bootstrap: str) -> BaseException | None:
    host, port = bootstrap.rsplit(":", 1)
    connection: AIOKafkaConnection = await create_conn(host, int(port))
    try:
        connection._writer.transport.abort()  # type: ignore[union-attr]
        await asyncio.sleep(0)  # uvloop closes the transport now; aiokafka's reader has not run yet
        try:
            answer = connection.send(MetadataRequest([]))
        except Exception as error:
            return error
        try:
            await answer
        except Exception as error:
            return error
        return None
    finally:
        connection.close()


def test_a_write_to_a_closed_kafka_connection_under_uvloop_is_a_connection_error(kafka_bootstrap: str) -> None:
    aiokafka_uvloop.install()
    aiokafka_uvloop.install()  # idempotent: wrapped once
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        error = runner.run(_write_to_a_closed_connection(kafka_bootstrap))
    assert isinstance(error, KafkaConnectionError), repr(error)
    # The write met uvloop's closed transport (not aiokafka's own "closed" check): the case of the fix.
    assert isinstance(error.__cause__, RuntimeError), repr(error.__cause__)
    assert AIOKafkaConnection.send.__wrapped__.__name__ == "send"  # type: ignore[attr-defined]
    assert not hasattr(AIOKafkaConnection.send.__wrapped__, "__wrapped__")  # type: ignore[attr-defined]


def test_other_runtime_errors_are_not_translated() -> None:
    """Only uvloop's closed-handle error is a broken connection; any other RuntimeError is a bug to see."""

    def write(_connection: object) -> None:
        raise RuntimeError("something else")

    guarded = aiokafka_uvloop._closed_transport_is_a_broken_connection(write)
    with pytest.raises(RuntimeError, match="something else"):
        guarded(object())
