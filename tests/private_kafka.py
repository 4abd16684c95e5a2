"""A Kafka of the test's own, for tests that freeze or kill Kafka under the bridge.

The shared test Kafka (compose/brokers, 127.0.0.1:19092) must stay up for every other test and
every other session on the machine, and a TCP proxy in front of it would not do: Kafka clients
reconnect to the address a broker advertises in its metadata, not to the bootstrap address. So a
failure test runs compose/brokers' own single KRaft node once more, under a state directory and
two free loopback ports of its own (`BRIDGE_STATE_DIR`, `BRIDGE_KAFKA_PORT`,
`BRIDGE_KAFKA_CONTROLLER_PORT`, as tests/chaos does), with the jars of the main state directory
(compose/install fetches them once). It advertises its own port, so every connection a client
makes goes to the process the test controls:

- `freeze()` / `thaw()`: SIGSTOP / SIGCONT. Connections stay open and new ones are accepted by
  the kernel, but nothing is answered: a hung broker, a network black hole.
- `kill()`: SIGKILL. Open connections break and new ones are refused: a crashed broker.
- `start()` brings it back on the same port, with its data (about 15 s after a kill on a 2-core
  machine: the JVM, log recovery, the old broker session's expiry).

The first start formats the storage (about 13 s in all). `stop()` kills it for good; whoever
starts one must stop it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from chaos.brokers import ROOT, BrokerError, PrivateBroker


class PrivateKafkaError(RuntimeError):
    """compose/brokers could not start or kill the private Kafka."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateKafka:
    """One single-node Kafka run by compose/brokers in `state` on ports of its own."""

    def __init__(self, state: Path, *, heap: str = "256m") -> None:
        self.state = state
        self.port = _free_port()
        self.controller_port = _free_port()
        while self.controller_port == self.port:
            self.controller_port = _free_port()
        self.heap = heap
        self.frozen = False
        # compose/brokers, run as the fault-schedule suite runs its own Kafkas
        self._broker = PrivateBroker(
            "private-kafka",
            "kafka",
            state,
            {
                "BRIDGE_KAFKA_PORT": str(self.port),
                "BRIDGE_KAFKA_CONTROLLER_PORT": str(self.controller_port),
                "BRIDGE_KAFKA_HEAP": heap,
            },
        )

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.state / "kafka" / "kafka.log"

    def _run(self, *args: str, timeout: float = 180.0) -> str:
        try:
            return self._broker.run(*args, timeout=timeout)
        except BrokerError as error:
            raise PrivateKafkaError(f"private Kafka in {self.state}: {error}") from error

    def start(self) -> str:
        """Start it (or thaw or leave it running) and wait until it serves metadata with itself in
        it (a thawed broker may have been fenced by its own controller meanwhile)."""
        try:
            self._broker.link_kafka_jars()
        except BrokerError as error:
            raise PrivateKafkaError(str(error)) from error
        self.thaw()
        output = self._run("start", "kafka")
        probe = subprocess.run(
            [sys.executable, str(ROOT / "compose" / "probe.py"), "kafka", self.bootstrap, "--timeout", "90"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if probe.returncode != 0:
            raise PrivateKafkaError(f"the private Kafka does not serve metadata: {probe.stdout}{probe.stderr}")
        return output

    def pid(self) -> int | None:
        """The broker's process id (the leader of its process group), None when it is not running."""
        try:
            pid = int((self.state / "kafka" / "kafka.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def freeze(self) -> None:
        """SIGSTOP: the broker answers nothing until `thaw()`."""
        pid = self.pid()
        if pid is None:
            raise PrivateKafkaError("the private Kafka is not running: nothing to freeze")
        os.killpg(pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            pid = self.pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGCONT)
            self.frozen = False

    def kill(self) -> None:
        """SIGKILL: connections break, new ones are refused."""
        self._run("kill", "kafka", timeout=60)
        self.frozen = False

    def stop(self) -> None:
        """Gone for good (SIGKILL: its data is the test's to throw away)."""
        with contextlib.suppress(PrivateKafkaError):
            self.kill()
