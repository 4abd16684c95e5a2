"""A failing unit ends the bridge even when another unit loses its cancellation on the way.

Found by the fault-schedule suite (seed 392896395): a forward route failed at start while its
service's reverse route fetched from JetStream; the TaskGroup cancelled the reverse route, the
cancellation was swallowed inside the client (Python 3.11's asyncio.wait_for returns the inner
outcome when both meet), the route went on fetching, and the bridge neither copied nor exited:
832 records lost to the run, and SIGTERM ended in the shutdown watchdog's exit 1.
"""

from __future__ import annotations

import asyncio

import pytest

from bridge.cutover.supervisor import Supervisor
from bridge.errors import BridgeError


class CancellationSwallower:
    """A unit whose library loses every cancellation; only `stop()` ends it."""

    def __init__(self, *, gives_up_after: float = 3.0) -> None:
        self._stopping = asyncio.Event()
        self._gives_up_after = gives_up_after
        self.cancellations_lost = 0
        self.gave_up = False  # ran on until it gave up by itself: nothing stopped it

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + self._gives_up_after  # so that a regression fails instead of hanging
        while not self._stopping.is_set():
            if loop.time() > until:
                self.gave_up = True
                return
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                self.cancellations_lost += 1  # what the library did: the outcome, not the cancel
                current = asyncio.current_task()
                assert current is not None
                current.uncancel()

    def stop(self) -> None:
        self._stopping.set()


class FailsAtStart:
    def __init__(self) -> None:
        self.stopped = False

    async def run(self) -> None:
        await asyncio.sleep(0.05)
        raise BridgeError("source 'rabbit': RabbitMQ refused the PLAIN login")

    def stop(self) -> None:
        self.stopped = True


async def test_a_failing_unit_stops_a_unit_that_swallows_its_cancellation() -> None:
    swallower = CancellationSwallower()
    loop = asyncio.get_running_loop()
    began = loop.time()

    async def supervise() -> None:
        async with asyncio.TaskGroup() as group:
            supervisor = Supervisor(group)
            supervisor.start("reverse s/back", swallower)
            supervisor.start("route s/records", FailsAtStart())

    with pytest.raises(ExceptionGroup) as raised:
        await supervise()
    assert [str(error) for error in raised.value.exceptions] == ["source 'rabbit': RabbitMQ refused the PLAIN login"]
    assert not swallower.gave_up, f"the failing unit did not stop it ({swallower.cancellations_lost} cancels lost)"
    assert loop.time() - began < 1.0


async def test_the_swallower_does_outlive_a_plain_task_group() -> None:
    """The case is real: without the supervisor's stop(), the group's cancellation is lost and
    the unit runs on until it gives up by itself."""
    swallower = CancellationSwallower(gives_up_after=0.5)

    async def fails() -> None:
        await asyncio.sleep(0.05)
        raise BridgeError("failed")

    async def plain_group() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(swallower.run())
            group.create_task(fails())

    with pytest.raises(ExceptionGroup):
        await plain_group()
    assert swallower.gave_up
    assert swallower.cancellations_lost >= 1


async def test_a_unit_ending_by_itself_stops_nothing_else() -> None:
    class Ends:
        async def run(self) -> None:
            return

        def stop(self) -> None:
            pass

    waiting = CancellationSwallower()
    async with asyncio.TaskGroup() as group:
        supervisor = Supervisor(group)
        supervisor.start("ends", Ends())
        supervisor.start("waits", waiting)
        await asyncio.sleep(0.1)
        assert not supervisor.running("ends")
        assert supervisor.running("waits")  # not stopped by its neighbour's normal end
        await supervisor.stop_all()
    assert waiting.cancellations_lost == 0
