"""aiokafka under uvloop: a write to a connection that has just closed must fail as a connection error.

aiokafka catches only OSError when it writes a request (`AIOKafkaConnection.send`); the standard
event loop's transports drop a write to a closed connection, but uvloop's raise RuntimeError
("unable to perform operation on <TCPTransport closed=True ...>; the handler is closed", aiokafka
issue #1038). The error then escaped the consumer's heartbeat task, aiokafka handed it to the next
`getmany`, and the bridge exited 1 with a traceback while Kafka restarted (a fault-schedule run).
Translated into the KafkaConnectionError aiokafka raises for a broken connection, it is retried
like any other broker outage. `install()` patches the class once; the runner calls it where it
chooses uvloop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from aiokafka.conn import AIOKafkaConnection, CloseReason
from aiokafka.errors import KafkaConnectionError

_CLOSED_HANDLE = "the handler is closed"
_INSTALLED = "_nats_bridge_uvloop_safe"


def _closed_transport_is_a_broken_connection(write: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(write)
    def guarded(connection: AIOKafkaConnection, *args: Any, **kwargs: Any) -> Any:
        try:
            return write(connection, *args, **kwargs)
        except RuntimeError as error:
            if _CLOSED_HANDLE not in str(error):
                raise
            connection.close(reason=CloseReason.CONNECTION_BROKEN)
            raise KafkaConnectionError(
                f"Connection at {connection.host}:{connection.port} broken: the connection was closed"
            ) from error

    return guarded


def install() -> None:
    """Make every aiokafka connection of this process raise KafkaConnectionError, never
    uvloop's RuntimeError, for a write to a closed connection. Idempotent."""
    if getattr(AIOKafkaConnection, _INSTALLED, False):
        return
    for name in ("send", "_send_sasl_token"):
        setattr(AIOKafkaConnection, name, _closed_transport_is_a_broken_connection(getattr(AIOKafkaConnection, name)))
    setattr(AIOKafkaConnection, _INSTALLED, True)
