"""The edges of nats-py the publisher works around: what a refused or lost publish raises, and waiting
that can be abandoned (CLIENT-NOTES.md; dropping unsent commands is the client class's, brokers/nats/guarded.py)."""

from __future__ import annotations

import asyncio

from nats.errors import (
    BadHeaderError,
    BadSubjectError,
    ConnectionClosedError,
    ConnectionDrainingError,
    ConnectionReconnectingError,
    MaxPayloadError,
    OutboundBufferLimitError,
)

# A publish the client refuses before anything is sent (too large, a bad subject or header).
CLIENT_REFUSALS = (MaxPayloadError, BadSubjectError, BadHeaderError, ValueError, TypeError)
# A publish into a connection that is gone. The socket may have died a moment ago without nats-py
# noticing yet: its flusher task ended on the closed transport, so the client writes inline and the
# transport raises (uvloop: RuntimeError "handler is closed"; drain: ConnectionResetError). nats-py's
# read loop sees the loss next and reconnects: a disconnect like any other.
CONNECTION_LOST = (
    OutboundBufferLimitError,
    ConnectionClosedError,
    ConnectionDrainingError,
    ConnectionReconnectingError,
    RuntimeError,
    OSError,
)


def raise_unless_dead_transport(error: Exception) -> None:
    """A RuntimeError other than the dead-transport one is a bug, not a disconnect."""
    if isinstance(error, RuntimeError) and "closed" not in str(error):
        raise error


async def wait_or_abandon(event: asyncio.Event, abandon: asyncio.Event | None) -> bool:
    """Wait for `event`; give up (False) as soon as `abandon` is set."""
    if event.is_set():
        return True
    if abandon is None:
        await event.wait()
        return True
    if abandon.is_set():
        return False
    waiting = asyncio.ensure_future(event.wait())
    giving_up = asyncio.ensure_future(abandon.wait())
    try:
        await asyncio.wait((waiting, giving_up), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        giving_up.cancel()
    return event.is_set()


def host_of(url: str) -> str:
    """host:port of a server URL, never its credentials."""
    return url.rpartition("@")[2]


def describe_error(error: Exception) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
