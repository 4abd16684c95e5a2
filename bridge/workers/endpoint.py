"""The supervisor's /healthz /readyz /status /metrics: each asked of every worker, answered as one.

It is the bridge's own HTTP app (bridge.operations.http: the same token rule, the same connection
bounds), with answers made from the workers' endpoints instead of a health monitor. Workers are
asked at once, each with a short deadline: a worker that does not answer in `TIMEOUT` (not
running, not yet serving, hung) counts as unhealthy rather than holding up a probe.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from bridge.operations import names
from bridge.workers.merge import WORKER_LABEL, WorkerReply, health_problems, merge_metrics
from bridge.workers.process import WorkerProcess, describe_exit

TIMEOUT = 2.0  # seconds a worker has to answer one request of the supervisor's


class WorkerAnswers:
    """bridge.operations.http.Answers, from the workers' own endpoints."""

    def __init__(self, workers: Sequence[WorkerProcess], token: str | None, session: aiohttp.ClientSession) -> None:
        self._workers = workers
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session = session

    async def liveness(self) -> list[str]:
        return health_problems(await self._ask_all("/healthz"))

    async def readiness(self) -> list[str]:
        return health_problems(await self._ask_all("/readyz"))

    async def status(self) -> dict[str, Any]:
        replies = await self._ask_all("/status")
        workers: dict[str, Any] = {}
        for worker in self._workers:
            reply = replies[worker.index]
            entry = describe(worker)
            if reply.ok:
                try:
                    entry["status"] = json.loads(reply.body)
                except ValueError:
                    entry["error"] = "its /status is not JSON"
            else:
                entry["error"] = reply.body if reply.status is None else f"/status answered {reply.status}"
            workers[str(worker.index)] = entry
        return {"supervisor": {"pid": os.getpid(), "workers": len(self._workers)}, "workers": workers}

    async def metrics(self) -> bytes:
        replies = await self._ask_all("/metrics")
        texts = {index: reply.body for index, reply in replies.items() if reply.ok}
        up = GaugeMetricFamily(names.WORKER_UP.family, names.WORKER_UP.help, labels=[WORKER_LABEL])
        restarts = CounterMetricFamily(names.WORKER_RESTARTS.family, names.WORKER_RESTARTS.help, labels=[WORKER_LABEL])
        for worker in self._workers:
            up.add_metric([str(worker.index)], 1 if worker.index in texts else 0)
            restarts.add_metric([str(worker.index)], worker.restarts)
        return merge_metrics(texts, extra=(up, restarts))

    async def _ask_all(self, path: str) -> dict[int, WorkerReply]:
        replies = await asyncio.gather(*(self._ask(worker, path) for worker in self._workers))
        return {worker.index: reply for worker, reply in zip(self._workers, replies, strict=True)}

    async def _ask(self, worker: WorkerProcess, path: str) -> WorkerReply:
        if not worker.running:
            return WorkerReply(None, not_running(worker))
        port = worker.port
        if port is None:
            return WorkerReply(None, f"starting (pid {worker.pid}): not serving HTTP yet")
        try:
            async with self._session.get(
                f"http://127.0.0.1:{port}{path}",
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=TIMEOUT),
            ) as response:
                return WorkerReply(response.status, await response.text(errors="replace"))
        except TimeoutError:
            return WorkerReply(None, f"no answer on port {port} within {TIMEOUT:g}s (pid {worker.pid})")
        except aiohttp.ClientError as error:
            return WorkerReply(None, f"no answer on port {port} (pid {worker.pid}): {error}")


def not_running(worker: WorkerProcess) -> str:
    """Why a worker that is not running is not running, for a person."""
    if worker.last_exit is None:
        return "not started yet"
    text = f"not running: its last run {describe_exit(worker.last_exit)}"
    if worker.restart_at is not None:
        text += f"; starting it again in {max(0.0, worker.restart_at - time.monotonic()):.0f}s"
    return text


def describe(worker: WorkerProcess) -> dict[str, Any]:
    """What the supervisor knows of a worker, for /status."""
    return {
        "pid": worker.pid if worker.running else None,
        "running": worker.running,
        "http": f"127.0.0.1:{worker.port}" if worker.port is not None else None,
        "started": worker.started_wall or None,
        "restarts": worker.restarts,
        "last_exit": describe_exit(worker.last_exit) if worker.last_exit is not None else None,
    }
