"""One worker of `run --workers N`: its process, its output passed through, its HTTP port.

A worker is an ordinary `python -m bridge run FILE ...` in a process group of its own (a Ctrl-C
in the terminal reaches the supervisor only, which forwards it once, instead of every worker
seeing it twice). Its stdout and stderr come back through pipes and are written to the
supervisor's, whole lines at a time: N processes sharing one descriptor could interleave a long
line (a traceback, a JSON record) with another's, and then no log reader could parse it. The
worker marks its own lines (bridge.workers.child), so they are passed on unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence
from typing import BinaryIO

from bridge.workers.child import PORT_FD_ENV, SUPERVISOR_PID_ENV, WORKER_ENV

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
MAX_LINE = 1024 * 1024  # a "line" longer than this is passed on in pieces rather than held


class WorkerProcess:
    """Worker K: the process of its current run, and what the supervisor knows of its runs."""

    def __init__(self, index: int, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.index = index
        self._argv = list(argv)
        self._env = dict(env)
        self.process: asyncio.subprocess.Process | None = None
        self.port: int | None = None  # where its HTTP endpoint listens, once it said so
        self.started = 0.0  # time.monotonic() of the current run's start
        self.started_wall = 0.0
        self.restarts = 0  # runs started after the first
        self.last_exit: int | None = None  # the previous run's return code
        self.restart_at: float | None = None  # monotonic time of the next start, while waiting for it
        self._passing: list[asyncio.Task[None]] = []

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def ran_for(self) -> float:
        return time.monotonic() - self.started

    async def start(self, stdout: BinaryIO, stderr: BinaryIO) -> None:
        """Start a run; raises OSError when the process cannot be started at all."""
        if self.process is not None:
            self.restarts += 1
        self.port = None
        self.restart_at = None
        port_read, port_write = os.pipe()
        env = {
            **self._env,
            WORKER_ENV: str(self.index),
            PORT_FD_ENV: str(port_write),
            SUPERVISOR_PID_ENV: str(os.getpid()),
            "PYTHONUNBUFFERED": "1",
        }
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self._argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                pass_fds=(port_write,),
                process_group=0,
            )
        except OSError:
            os.close(port_read)
            raise
        finally:
            os.close(port_write)  # the worker holds the only write end: its exit is our end of file
        self.started, self.started_wall = time.monotonic(), time.time()
        log.info("worker %d started (pid %d)", self.index, self.process.pid)
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._passing = [
            asyncio.create_task(pass_lines(self.process.stdout, stdout), name=f"worker-{self.index}-stdout"),
            asyncio.create_task(pass_lines(self.process.stderr, stderr), name=f"worker-{self.index}-stderr"),
            asyncio.create_task(self._read_port(port_read), name=f"worker-{self.index}-port"),
        ]

    async def wait(self) -> int:
        """Wait for the current run to end (and its last lines to be passed on); its return code."""
        assert self.process is not None
        code = await self.process.wait()
        # Its pipes reach end of file when it exits (a grandchild holding them is not waited for).
        _done, pending = await asyncio.wait(self._passing, timeout=5)
        for task in pending:
            task.cancel()
        self.last_exit = code
        self.port = None
        return code

    def send(self, signum: int) -> None:
        """Send `signum` to the current run, if it still runs."""
        if self.running:
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)

    def kill(self) -> None:
        self.send(signal.SIGKILL)

    async def _read_port(self, fd: int) -> None:
        """The port the worker announces (bridge.workers.child), or nothing when it exits first."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
        )
        try:
            line = await reader.readline()
        finally:
            transport.close()
        text = line.decode(errors="replace").strip()
        if text.isdigit():
            self.port = int(text)


async def pass_lines(reader: asyncio.StreamReader, sink: BinaryIO) -> None:
    """Copy `reader` to `sink` until end of file, whole lines per write: never half a line."""
    pending = b""
    while chunk := await reader.read(CHUNK):
        pending += chunk
        cut = pending.rfind(b"\n") + 1
        if cut == 0 and len(pending) < MAX_LINE:
            continue
        if cut == 0:  # no end in sight: pass it on with an end of its own
            pending += b"\n"
            cut = len(pending)
        _write(sink, pending[:cut])
        pending = pending[cut:]
    if pending:
        _write(sink, pending + b"\n")


def describe_exit(code: int) -> str:
    """A return code as words: `exited 1`, `was killed by SIGKILL`."""
    if code >= 0:
        return f"exited {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


def _write(sink: BinaryIO, data: bytes) -> None:
    with contextlib.suppress(OSError, ValueError):  # the supervisor's own output gone: nothing to do
        sink.write(data)
        sink.flush()
