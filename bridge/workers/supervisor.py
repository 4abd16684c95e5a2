"""`run --workers N`: N bridge processes kept running, stopped together, seen through one endpoint.

The supervisor moves no message itself. It starts the workers, passes their output through, and:

- restarts a worker that ends while nobody asked it to (any exit code, or a signal), after a
  backoff (bridge.workers.backoff), logging how it ended: its partitions or deliveries went to
  the others meanwhile and come back when it rejoins;
- forwards SIGTERM or SIGINT to every worker and waits for them to drain and settle, then exits
  0 when every worker exited 0, else 1 with a line per worker that did not. A worker still
  running `stop_grace` after the signal (its own shutdown watchdog ends it at 40 s) is killed;
- serves /healthz /readyz /status /metrics made of the workers' (bridge.workers.endpoint).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import aiohttp
from aiohttp import web

from bridge.logs import LogFormat, Scrubber
from bridge.operations.http import HttpAddress, bound_address, serve_answers
from bridge.process import STOP_DEADLINE
from bridge.workers.backoff import RestartBackoff
from bridge.workers.endpoint import WorkerAnswers
from bridge.workers.process import WorkerProcess, describe_exit

log = logging.getLogger(__name__)

STOP_GRACE = STOP_DEADLINE + 20.0  # past the worker's own watchdog, so it normally ends itself
START_FAILED = 127  # what a worker that could not even be started counts as having exited with


@dataclass(frozen=True, slots=True)
class SupervisorSettings:
    """What the supervisor needs: how many workers, each one's command line, and its own endpoint."""

    workers: int
    argv: tuple[str, ...]
    http: HttpAddress | None
    token: str | None = field(default=None, repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)
    stop_grace: float = STOP_GRACE


def worker_argv(
    file: Path,
    *,
    log_level: str,
    log_format: LogFormat,
    stall_after: str,
    http_token_file: Path | None,
    serve_http: bool,
) -> tuple[str, ...]:
    """A worker's command line: `run` with the supervisor's own options, except that it serves
    HTTP on a free loopback port (its supervisor asks it there), or not at all when nobody would."""
    argv = [sys.executable, "-m", "bridge", "run", str(file), "--log-level", log_level]
    argv += ["--log-format", log_format.value, "--stall-after", stall_after]
    argv += ["--http", "127.0.0.1:0" if serve_http else "off"]
    if http_token_file is not None:
        argv += ["--http-token-file", str(http_token_file)]
    return tuple(argv)


def stop_failures(codes: Mapping[int, int], signum: int | None, idle: Collection[int] = ()) -> list[str]:
    """One line per worker that did not stop cleanly. A worker killed by the very signal it was
    sent had not yet installed its handler: it was still starting and held nothing to settle.
    An `idle` worker was waiting to be started again: its last run (which died) is how it ended."""
    failures = []
    for index, code in sorted(codes.items()):
        if code == 0 or (signum is not None and code == -signum):
            continue
        if index in idle:
            failures.append(f"worker {index} was not running at the stop: its last run {describe_exit(code)}")
        else:
            failures.append(f"worker {index} {describe_exit(code)} while stopping")
    return failures


class Supervisor:
    """N workers of one mapping file, until SIGINT or SIGTERM."""

    def __init__(
        self,
        settings: SupervisorSettings,
        env: Mapping[str, str] | None = None,
        *,
        stdout: BinaryIO | None = None,
        stderr: BinaryIO | None = None,
    ) -> None:
        self._settings = settings
        environment = os.environ if env is None else env
        self.workers = [WorkerProcess(index, settings.argv, environment) for index in range(1, settings.workers + 1)]
        self._stdout = stdout or sys.stdout.buffer
        self._stderr = stderr or sys.stderr.buffer
        self._stopping = asyncio.Event()
        self._signal: int | None = None
        self._final: dict[int, int] = {}  # worker -> how it ended once stopping
        self._idle: set[int] = set()  # workers waiting to be started again when the stop came
        self.http_address: HttpAddress | None = None  # where the endpoint listens, once it does

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop every worker with `signum` (a second signal is forwarded again, changing nothing)."""
        if self._signal is None:
            self._signal = signum
            log.info("%s: stopping %d workers", signal.Signals(signum).name, len(self.workers))
        self._stopping.set()
        for worker in self.workers:
            worker.send(signum)

    async def run(self, *, handle_signals: bool = True) -> int:
        """Run the workers until stopped (by SIGINT or SIGTERM when `handle_signals`, else by
        `stop()`); the exit code (0: every worker stopped cleanly)."""
        if handle_signals:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, self.stop, signum)
        async with aiohttp.ClientSession() as session:
            http = await self._serve(session)
            log.info("supervising %d workers; SIGINT or SIGTERM stops them all", len(self.workers))
            try:
                async with asyncio.TaskGroup() as group:
                    for worker in self.workers:
                        group.create_task(self._keep(worker), name=f"worker-{worker.index}")
            finally:
                if http is not None:
                    await http.cleanup()
        return self._outcome()

    async def _serve(self, session: aiohttp.ClientSession) -> web.AppRunner | None:
        settings = self._settings
        if settings.http is None:
            return None
        answers = WorkerAnswers(self.workers, settings.token, session)
        runner = await serve_answers(settings.http, answers, settings.token, Scrubber(settings.secrets))
        self.http_address = bound_address(runner, settings.http)
        return runner

    async def _keep(self, worker: WorkerProcess) -> None:
        """Run `worker` again and again until the supervisor stops."""
        backoff = RestartBackoff()
        while not self._stopping.is_set():
            pid: int | None = None
            try:
                await worker.start(self._stdout, self._stderr)
            except OSError as error:
                worker.last_exit, ran_for = START_FAILED, 0.0
                # No traceback (TRY400): the reason is the news, and the next attempt is logged too.
                log.error("worker %d could not be started: %s", worker.index, error.strerror or error)  # noqa: TRY400
            else:
                if self._signal is not None:
                    worker.send(self._signal)  # stopped while it was being started
                pid = worker.pid
                code = await self._wait(worker)
                if self._stopping.is_set():
                    log.info("worker %d (pid %s) stopped: %s", worker.index, pid, describe_exit(code))
                    self._final[worker.index] = code
                    return
                ran_for = worker.ran_for()
            delay = backoff.delay(ran_for)
            if worker.last_exit != START_FAILED:
                log.error(
                    "worker %d (pid %s) %s after %.0fs without being asked to stop; starting it again in %gs",
                    worker.index,
                    pid,
                    describe_exit(worker.last_exit or 0),
                    ran_for,
                    delay,
                )
            worker.restart_at = time.monotonic() + delay
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            worker.restart_at = None
        # Stopped while waiting to start it again: its last run is how it ended.
        self._idle.add(worker.index)
        self._final.setdefault(worker.index, worker.last_exit or 0)

    async def _wait(self, worker: WorkerProcess) -> int:
        """The run's return code; a run still going `stop_grace` after the stop signal is killed."""
        ended = asyncio.ensure_future(worker.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([ended, stopping], return_when=asyncio.FIRST_COMPLETED)
            if not ended.done():
                await asyncio.wait([ended], timeout=self._settings.stop_grace)
            if not ended.done():
                log.error(
                    "worker %d (pid %s) still runs %gs after the stop signal; killing it",
                    worker.index,
                    worker.pid,
                    self._settings.stop_grace,
                )
                worker.kill()
            return await ended
        finally:
            stopping.cancel()

    def _outcome(self) -> int:
        failures = stop_failures(self._final, self._signal, self._idle)
        for line in failures:
            log.error("%s", line)
        if failures:
            log.error("%d of %d workers did not stop cleanly; exiting 1", len(failures), len(self.workers))
            return 1
        log.info("all %d workers stopped cleanly", len(self.workers))
        return 0


def run_supervisor(settings: SupervisorSettings) -> int:
    """Supervise the workers in this process until SIGINT or SIGTERM; the exit code."""

    async def main() -> int:
        return await Supervisor(settings).run()

    return asyncio.run(main())
