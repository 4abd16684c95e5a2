"""Issue 19, item 5: clients cannot hold the bridge's HTTP endpoint open.

Raw sockets against a running `nats-bridge run`: a request whose head never completes (sent
half, trickled, or nothing at all) is closed after the head deadline (5 s), an idle keep-alive
connection too, and past 64 open connections a new one is answered 503 and closed at once,
while the endpoint serves again as soon as connections are freed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka_helpers import BridgeProcess, write_mapping

from bridge.operations.http import MAX_CONNECTIONS, REQUEST_HEAD_TIMEOUT

pytestmark = [pytest.mark.nats, pytest.mark.kafka]

BridgeFactory = Callable[[Path], BridgeProcess]
SLACK = 3.0  # a loaded 2-core machine


async def running_endpoint(tmp_path: Path, nats_url: str, kafka_bootstrap: str, name: str,
                           bridge_process: BridgeFactory) -> tuple[BridgeProcess, str, int]:  # fmt: skip
    mapping = write_mapping(
        tmp_path / "m.yaml", nats_url=nats_url, bootstrap=kafka_bootstrap, stream=name.upper(), topic=name,
        group=f"bridge-{name}",
    )  # fmt: skip
    bridge = bridge_process(mapping)
    bridge.args = ("--http", "127.0.0.1:0")
    bridge.start()
    url = await bridge.http_url()
    host, _, port = url.removeprefix("http://").rpartition(":")
    return bridge, host, int(port)


async def until_closed(reader: asyncio.StreamReader, within: float) -> tuple[float, bytes]:
    """(seconds until the server closed the connection, what it sent before); fails past `within`."""
    started = time.monotonic()
    received = b""
    try:
        async with asyncio.timeout(within):
            while data := await reader.read(4096):
                received += data
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the connection was still open after {within}s; received {received!r}") from None
    return time.monotonic() - started, received


async def still_open(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 0.3) != b""
    except TimeoutError:
        return True
    except ConnectionResetError:
        return False


async def get(host: str, port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_a_request_head_that_never_completes_is_closed(
    tmp_path: Path, nats_url: str, kafka_bootstrap: str, unique_name: str, bridge_process: BridgeFactory
) -> None:
    """Half a request, a request trickled a header line every half second, and a silent connection:
    each is closed once the head deadline passes (aiohttp used to hold them for an hour)."""
    bridge, host, port = await running_endpoint(tmp_path, nats_url, kafka_bootstrap, unique_name, bridge_process)

    async def half() -> tuple[float, bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /status HTTP/1.1\r\n")
        try:
            return await until_closed(reader, REQUEST_HEAD_TIMEOUT + SLACK)
        finally:
            writer.close()

    async def trickle() -> tuple[float, bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /status HTTP/1.1\r\nHost: x\r\n")

        async def more() -> None:
            for number in range(100):
                await asyncio.sleep(0.5)
                writer.write(f"X-Slow-{number}: y\r\n".encode())
                await writer.drain()

        feeding = asyncio.create_task(more())
        try:
            return await until_closed(reader, REQUEST_HEAD_TIMEOUT + SLACK)
        finally:
            feeding.cancel()
            writer.close()

    async def silent() -> tuple[float, bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            return await until_closed(reader, REQUEST_HEAD_TIMEOUT + SLACK)
        finally:
            writer.close()

    for name, (seconds, received) in zip(
        ("half", "trickle", "silent"), await asyncio.gather(half(), trickle(), silent()), strict=True
    ):
        assert REQUEST_HEAD_TIMEOUT - 1 <= seconds <= REQUEST_HEAD_TIMEOUT + SLACK, (name, seconds)
        assert b"200 OK" not in received, (name, received)
    assert b"200 OK" in await get(host, port, "/healthz")  # the endpoint itself is fine
    assert bridge.terminate() == 0, bridge.log()


async def test_keep_alive_works_and_an_idle_connection_is_closed(
    tmp_path: Path, nats_url: str, kafka_bootstrap: str, unique_name: str, bridge_process: BridgeFactory
) -> None:
    bridge, host, port = await running_endpoint(tmp_path, nats_url, kafka_bootstrap, unique_name, bridge_process)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for pause in (0, 2):  # two requests on one connection, 2 s apart: keep-alive is kept
            await asyncio.sleep(pause)
            writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200"), head
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            )
            await asyncio.wait_for(reader.readexactly(length), 10)
        seconds, received = await until_closed(reader, REQUEST_HEAD_TIMEOUT + SLACK)
    finally:
        writer.close()
    assert received == b""
    assert seconds >= REQUEST_HEAD_TIMEOUT - 1, seconds
    assert bridge.terminate() == 0, bridge.log()


async def test_connections_past_the_bound_are_refused_at_once_and_the_endpoint_recovers(
    tmp_path: Path, nats_url: str, kafka_bootstrap: str, unique_name: str, bridge_process: BridgeFactory
) -> None:
    bridge, host, port = await running_endpoint(tmp_path, nats_url, kafka_bootstrap, unique_name, bridge_process)
    held = [await asyncio.open_connection(host, port) for _ in range(MAX_CONNECTIONS)]
    try:
        for _, held_writer in held:
            held_writer.write(b"GET /status HTTP/1.1\r\n")  # half a request: each is held by the server
        await asyncio.sleep(0.3)
        started = time.monotonic()
        reader, writer = await asyncio.open_connection(host, port)
        try:
            _, received = await until_closed(reader, 2)
        finally:
            writer.close()
        assert received.startswith(b"HTTP/1.1 503"), received
        assert b"too many connections" in received, received
        assert time.monotonic() - started < REQUEST_HEAD_TIMEOUT - 1
        assert all([await still_open(reader) for reader, _ in held[:5]])  # the held ones are served, not dropped
    finally:
        for _, held_writer in held:
            held_writer.close()
    await asyncio.sleep(0.5)
    assert b"HTTP/1.1 200" in await get(host, port, "/healthz")
    await bridge.wait_for_log(f"HTTP endpoint: {MAX_CONNECTIONS} connections open", timeout=5)
    assert bridge.terminate() == 0, bridge.log()
