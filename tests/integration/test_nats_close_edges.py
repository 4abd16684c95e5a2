"""A NATS client the server closes while commands wait to be written closes cleanly under uvloop.

A fresh-clone CI run saw the revoked-login test fail on "Task exception was never retrieved":
nats-py closes the client in a task of its own after the server's `-ERR`, and that close writes
the commands still in its buffer to the transport. When the server's reset has already closed
uvloop's transport, the write raises RuntimeError ("the handler is closed") in a task nobody
awaits, the close stops half-way, and its closed callback (the bridge's signal to give up) never
comes. Reproduced here deterministically on the real server: the transport is aborted and closed
by uvloop, commands are published into the buffer in that loop iteration, and the server's error
arrives before the client has noticed: the iteration in which that race is lost.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
import uvloop
from pydantic import SecretStr

from bridge.brokers.nats.client import ConnectionEvents, connect_nats
from bridge.config import NatsConfig

pytestmark = [pytest.mark.nats]


async def _closed_by_the_server_with_commands_unwritten(url: str) -> tuple[str, int, list[dict[str, Any]]]:
    problems: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: problems.append(context))
    events = ConnectionEvents()
    nc = await connect_nats(NatsConfig(servers=[SecretStr(url)]), events)
    nc._transport._io_writer.transport.abort()  # type: ignore[union-attr]  # the server's reset
    await asyncio.sleep(0)  # uvloop closes the transport now; the client has not noticed yet
    for _ in range(10):  # published in the same iteration: in the buffer, not yet written
        await nc.publish("close.edges", b"x" * 100)
    unwritten = nc._pending_data_size
    await nc._process_err("'Authorization Violation'")  # what the server said before the reset
    reason = await asyncio.wait_for(events.wait_lost(), timeout=10)
    gc.collect()  # a task that died with an exception nobody read reports it when collected
    await asyncio.sleep(0.1)
    return reason, unwritten, problems


def test_a_close_by_the_server_with_commands_unwritten_is_clean_under_uvloop(nats_url: str) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        reason, unwritten, problems = runner.run(_closed_by_the_server_with_commands_unwritten(nats_url))
    assert unwritten > 0, "nothing waited in the buffer: the case was not made"
    assert "refused the bridge's login" in reason, reason
    assert problems == [], [context.get("exception") or context.get("message") for context in problems]
