"""A deadline on shutdown: a bridge told to stop exits within a bound, whatever hangs.

SIGTERM drains in-flight PubAcks for up to `drain_timeout` and then closes the sources. A client
library that swallows every cancellation (seen once in a fault-schedule run: a bridge restarted
while its Kafka came back stayed "starting" and ignored SIGTERM for 60 s) would keep the process
alive forever, and so would the event loop's own close, which waits for every task it cancels.
Exiting anyway is safe for the copy: a source is acknowledged or committed only after JetStream
stored the message, so whatever was not settled is redelivered or read again, and de-duplicated.

The timer runs in a thread of its own, so a blocked loop cannot hold it up. Before it exits it
logs what the loop was still running (each task's name and where it waits), which is what the
next person needs to find the hang.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

FORCED_EXIT_CODE = 1


def describe_tasks(loop: asyncio.AbstractEventLoop) -> list[str]:
    """Each pending task of `loop`: its name and the innermost frames it waits in. Read from
    another thread, best effort (the set of tasks can change while it is read)."""
    for _ in range(3):
        try:
            tasks = list(asyncio.all_tasks(loop))
            break
        except RuntimeError:  # the set changed size while it was copied
            continue
    else:
        return ["(the loop's tasks could not be read)"]
    lines = []
    for task in sorted(tasks, key=lambda t: t.get_name()):
        frames = task.get_stack(limit=6)
        where = " <- ".join(f"{f.f_code.co_name} ({f.f_code.co_filename}:{f.f_lineno})" for f in reversed(frames))
        lines.append(f"{task.get_name()}: {where or 'not started'}")
    return lines


class ShutdownWatchdog:
    """Armed when the bridge is told to stop; exits the process `deadline` seconds later unless
    `disarm()` came first (the bridge stopped)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        """Start the count; called on the event loop (its signal handler), whose tasks it reports."""
        if self._timer is not None:
            return  # a second signal does not move the deadline
        loop = asyncio.get_running_loop()
        self._timer = threading.Timer(self.deadline, self._expire, args=(loop,))
        self._timer.name = "shutdown-watchdog"
        self._timer.daemon = True
        self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        still = describe_tasks(loop)
        log.error(
            "the bridge did not stop within %.0fs of being told to; exiting anyway (nothing is lost: "
            "what was not stored is redelivered or read again). Still running:\n  %s",
            self.deadline,
            "\n  ".join(still) or "(no task)",
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(FORCED_EXIT_CODE)
