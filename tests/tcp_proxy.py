"""A TCP proxy a test can break, in front of a shared broker it must not touch.

For a broker whose clients connect only where they are told (RabbitMQ: AMQP has no redirects;
not Kafka, whose clients follow the addresses in its metadata), the proxy stands in for an outage
of the broker itself, as the client sees it, while other tests and sessions use the broker:

- `kill()`: every proxied connection is reset and the port refuses new ones (a crashed broker);
- `freeze()`: connections stay open and new ones are accepted, but no byte goes either way (a hung
  broker, a network black hole), until `thaw()`;
- `hold_upstream()`: bytes from the broker still reach the client, the client's bytes to the broker
  are held (a client whose acknowledgements are lost, if it dies before `thaw()`);
- `restore()`: back to forwarding (after `kill()`, listening again on the same port).

It runs its own event loop in a daemon thread, so it keeps forwarding while the test's loop waits
in a blocking call. `close()` ends it and every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TcpProxy:
    """127.0.0.1:`port` -> `target_host`:`target_port`."""

    @classmethod
    def in_front_of(cls, url: str) -> tuple[TcpProxy, str]:
        """A started proxy to the host and port of `url`, and `url` pointing at the proxy instead."""
        split = urlsplit(url)
        assert split.hostname is not None
        assert split.port is not None
        proxy = cls(split.hostname, split.port)
        proxy.start()
        credentials = f"{split.username}:{split.password}@" if split.username else ""
        return proxy, split._replace(netloc=f"{credentials}127.0.0.1:{proxy.port}").geturl()

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = _free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._upstream_flowing = asyncio.Event()
        self.connections = 0  # accepted so far

    # --- control, from the test's thread ----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._call(self._listen())

    def kill(self) -> None:
        self._call(self._kill())

    def freeze(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def hold_upstream(self) -> None:
        self._loop.call_soon_threadsafe(self._upstream_flowing.clear)

    def thaw(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.set)
        self._loop.call_soon_threadsafe(self._upstream_flowing.set)

    def restore(self) -> None:
        self._call(self._listen())

    def close(self) -> None:
        if self._thread.is_alive():
            self._call(self._kill())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    # --- the proxy, in its own loop ---------------------------------------------------------------

    async def _listen(self) -> None:
        self._flowing.set()
        self._upstream_flowing.set()
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def _kill(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            sock = writer.get_extra_info("socket")
            if sock is not None:  # SO_LINGER 0: the close is a reset, as from a dead process
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        self._writers.clear()
        self._flowing.set()
        self._upstream_flowing.set()
        if server is not None:
            await server.wait_closed()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(client_writer)
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            self._writers.discard(client_writer)
            return
        self._writers.add(server_writer)
        await asyncio.gather(
            self._pipe(client_reader, server_writer, self._upstream_flowing),
            self._pipe(server_reader, client_writer),
            return_exceptions=True,
        )
        for writer in (client_writer, server_writer):
            self._writers.discard(writer)
            writer.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event | None = None
    ) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await self._flowing.wait()  # frozen: held here, nothing forwarded either way
                if gate is not None:
                    await gate.wait()
                if writer.transport.is_closing():
                    break
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError):
                if not writer.transport.is_closing():
                    writer.write_eof()
