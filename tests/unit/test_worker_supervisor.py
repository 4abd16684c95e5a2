"""`run --workers N`'s supervisor with stand-in workers (tests/unit/fake_worker.py): no broker.

The supervisor itself is real: it starts the processes, learns their ports through the pipe,
passes their output through whole lines at a time, restarts one killed under it, serves the
one endpoint made of theirs, and stops them all with the exit code they earned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from processes import alive
from prometheus_client.parser import text_string_to_metric_families

from bridge.operations.http import HttpAddress
from bridge.workers.supervisor import Supervisor, SupervisorSettings

ROOT = Path(__file__).resolve().parents[2]
FAKE_WORKER = Path(__file__).with_name("fake_worker.py")


class Recording:
    """A BinaryIO sink that keeps each write, to see that no write holds part of a line."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.writes.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        return

    def lines(self) -> list[bytes]:
        return b"".join(self.writes).splitlines()


class Running:
    """A supervisor of stand-in workers, running on the test's loop."""

    def __init__(self, workers: int, **env: str) -> None:
        settings = SupervisorSettings(
            workers=workers,
            argv=(sys.executable, str(FAKE_WORKER)),
            http=HttpAddress("127.0.0.1", 0),
            stop_grace=20,
        )
        environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
        self.stdout, self.stderr = Recording(), Recording()
        self.supervisor = Supervisor(settings, environment, stdout=self.stdout, stderr=self.stderr)  # type: ignore[arg-type]
        self.task: asyncio.Task[int] | None = None

    async def get(self, path: str) -> tuple[int, str]:
        address = self.supervisor.http_address
        assert address is not None
        async with aiohttp.ClientSession() as session, session.get(f"http://{address}{path}") as response:
            return response.status, await response.text()

    async def stop(self) -> int:
        assert self.task is not None
        self.supervisor.stop(signal.SIGTERM)
        return await asyncio.wait_for(self.task, 30)


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout}s")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def supervising(workers: int, **env: str) -> AsyncIterator[Running]:
    running = Running(workers, **env)
    running.task = asyncio.create_task(running.supervisor.run(handle_signals=False))

    async def all_serving() -> bool:
        return running.supervisor.http_address is not None and all(w.port for w in running.supervisor.workers)

    try:
        await until(all_serving, "workers serving HTTP")
        yield running
    finally:
        if not running.task.done():
            running.supervisor.stop(signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(running.task, 30)


@pytest.mark.timeout(60)
async def test_one_endpoint_answers_for_every_worker_and_sigterm_stops_them_all_with_exit_0() -> None:
    async with supervising(2) as running:
        assert await running.get("/healthz") == (200, "ok\n")
        assert await running.get("/readyz") == (200, "ready\n")
        code, text = await running.get("/status")
        assert code == 200
        status = json.loads(text)
        assert set(status["workers"]) == {"1", "2"}
        pids = [status["workers"][k]["pid"] for k in ("1", "2")]
        for key, pid in zip(("1", "2"), pids, strict=True):
            assert status["workers"][key]["status"] == {"pid": pid, "worker": int(key)}  # its own /status
            assert status["workers"][key]["running"] is True
        code, text = await running.get("/metrics")
        assert code == 200
        assert text.count("# TYPE nats_bridge_messages_received_total counter") == 1
        received = {
            sample.labels["worker"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "nats_bridge_messages_received_total"
        }
        assert received == {"1": 10.0, "2": 20.0}
        assert 'nats_bridge_worker_up{worker="1"} 1.0' in text
        assert await running.stop() == 0
    assert not any(alive(pid) for pid in pids)
    # Whole lines only, each worker's as it wrote them: JSON stays one object per line.
    out = [json.loads(line) for line in running.stdout.lines()]
    assert sorted((o["message"], o["worker"]) for o in out) == [("stopped", 1), ("stopped", 2), ("up", 1), ("up", 2)]
    assert all(write.endswith(b"\n") for write in running.stderr.writes)
    assert sorted(len(line) for line in running.stderr.lines()) == [200_009, 200_009]


@pytest.mark.timeout(60)
async def test_a_worker_killed_under_the_supervisor_is_started_again_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "bridge.workers")
    async with supervising(2) as running:
        second = running.supervisor.workers[1]
        first_pid = second.pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)

        async def back() -> bool:
            return second.running and second.pid != first_pid and second.port is not None

        await until(back, "worker 2 started again")
        assert second.restarts == 1
        assert any(
            f"worker 2 (pid {first_pid}) was killed by SIGKILL" in r.getMessage()
            and "starting it again in 1s" in r.getMessage()
            for r in caplog.records
        ), caplog.text
        assert (await running.get("/healthz"))[0] == 200
        _, text = await running.get("/metrics")
        assert 'nats_bridge_worker_restarts_total{worker="2"} 1.0' in text
        assert await running.stop() == 0


@pytest.mark.timeout(60)
async def test_health_fails_naming_the_worker_that_fails() -> None:
    async with supervising(2, FAKE_UNHEALTHY="2") as running:
        assert await running.get("/healthz") == (503, "not alive\n- worker 2: route svc/r: stalled for 61s\n")
        assert await running.get("/readyz") == (503, "not ready\n- worker 2: route svc/r: stalled for 61s\n")
        await running.stop()


@pytest.mark.timeout(60)
async def test_a_worker_that_does_not_stop_cleanly_makes_the_supervisor_exit_1(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with supervising(2, FAKE_EXIT="3") as running:
        assert await running.stop() == 1
    assert "worker 1 exited 3 while stopping" in caplog.text
    assert "2 of 2 workers did not stop cleanly; exiting 1" in caplog.text


@pytest.mark.timeout(60)
async def test_a_worker_that_keeps_dying_waits_longer_each_time_and_fails_the_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "bridge.workers")
    running = Running(2, FAKE_CRASH="2")
    running.task = asyncio.create_task(running.supervisor.run(handle_signals=False))
    crashing = running.supervisor.workers[1]

    async def restarted_twice() -> bool:
        return (
            crashing.restarts >= 2
            and crashing.restart_at is not None
            and running.supervisor.workers[0].port is not None
        )

    await until(restarted_twice, "worker 2 started again twice")
    delays = [m for m in caplog.messages if m.startswith("worker 2 (pid ") and "exited 4" in m]
    assert [m.rsplit(" ", 1)[1] for m in delays[:3]] == ["1s", "2s", "4s"], delays
    code, text = await running.get("/healthz")
    assert code == 503
    assert text.startswith("not alive\n- worker 2: not running: its last run exited 4; starting it again in "), text
    assert await running.stop() == 1
    assert "worker 2 was not running at the stop: its last run exited 4" in caplog.messages
    assert "worker 1 (pid" in caplog.text
