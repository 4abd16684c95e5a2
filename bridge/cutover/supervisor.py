"""The routes a running bridge starts and stops as phases change: each one a task in the run's
task group, stopped by asking it and waiting, so a route that ends never takes the others down."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bridge.reverse.route import ReverseStats


class Runnable(Protocol):
    """A route the bridge runs: a forward pipeline or a reverse route."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


class ReverseRunnable(Runnable, Protocol):
    """A reverse route, whose counters /status and /metrics show."""

    @property
    def stats(self) -> ReverseStats: ...


class Supervisor:
    """Named units started and stopped while the bridge runs. A unit that raises fails the
    whole TaskGroup, and so the bridge, as a failing route always did.

    The group then cancels the other units, and a cancellation can be lost on its way through a
    client library (Python 3.11's asyncio.wait_for returns the inner outcome when the two meet):
    a reverse route swallowed one so, went on fetching, and the bridge hung instead of exiting.
    So a failing unit first asks every other unit to `stop()`, which each honours at its next
    step whether or not the cancellation reaches it."""

    def __init__(self, group: asyncio.TaskGroup) -> None:
        self._group = group
        self._units: dict[str, tuple[Runnable, asyncio.Task[None]]] = {}

    def start(self, name: str, unit: Runnable) -> None:
        if name not in self._units:
            self._units[name] = (unit, self._group.create_task(self._run(unit), name=name))

    async def _run(self, unit: Runnable) -> None:
        try:
            await unit.run()
        except Exception:
            for other, _ in list(self._units.values()):
                if other is not unit:
                    other.stop()
            raise

    def running(self, name: str) -> bool:
        return name in self._units and not self._units[name][1].done()

    async def stop(self, name: str) -> None:
        found = self._units.pop(name, None)
        if found is None:
            return
        unit, task = found
        unit.stop()
        await asyncio.shield(task)

    async def stop_all(self) -> None:
        names = list(self._units)
        for name in names:
            self._units[name][0].stop()
        await asyncio.gather(*(self.stop(name) for name in names))
