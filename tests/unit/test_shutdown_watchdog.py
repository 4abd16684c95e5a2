"""The shutdown deadline: a bridge told to stop exits even when a task swallows every cancellation."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from bridge.operations.watchdog import FORCED_EXIT_CODE

SCRIPT = textwrap.dedent("""\
    import asyncio, logging, sys
    from bridge.operations.watchdog import ShutdownWatchdog

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)

    async def stubborn():
        while True:  # like a client library retrying inside its own loop
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass

    async def main():
        work = stubborn() if sys.argv[2] == "hangs" else asyncio.sleep(3600)
        task = asyncio.get_running_loop().create_task(work, name="kafka-start")
        await asyncio.sleep(0.05)
        watchdog = ShutdownWatchdog(float(sys.argv[1]))
        watchdog.arm()
        if sys.argv[2] == "stops":
            task.cancel()
            watchdog.disarm()
            await asyncio.sleep(1.0)
            print("stopped in time")
            return
        while not task.done():  # what the pipeline does: cancel again until it ends
            task.cancel()
            await asyncio.wait([task], timeout=0.1)

    asyncio.run(main())
    """)


def _run(deadline: float, how: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(deadline), how], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_stop_that_hangs_is_ended_at_the_deadline_with_what_still_ran() -> None:
    done = _run(0.5, "hangs")
    assert done.returncode == FORCED_EXIT_CODE, done.stderr
    assert "did not stop within 0s" in done.stderr or "did not stop within 1s" in done.stderr, done.stderr
    assert "kafka-start: stubborn" in done.stderr, done.stderr  # the task, and where it waits
    assert "Traceback" not in done.stderr


def test_a_bridge_that_stops_in_time_is_not_ended() -> None:
    done = _run(0.3, "stops")
    assert done.returncode == 0, done.stderr
    assert "stopped in time" in done.stdout
    assert "did not stop" not in done.stderr
