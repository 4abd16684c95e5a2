"""The worker's side of `run --workers N`: what a `run` process started by a supervisor does differently.

The supervisor marks each worker through its environment (the worker's command line is the one
an operator would type, plus `--http 127.0.0.1:0`):

- `NATS_BRIDGE_WORKER=K`: the worker's index (1..N); every log line carries it, as N workers'
  lines share the supervisor's stderr.
- `NATS_BRIDGE_WORKER_PORT_FD=FD`: the write end of a pipe; the worker writes the port its HTTP
  endpoint bound (`PORT\\n`) and closes it. A pipe, not the log line: logs are for people, and
  the supervisor hears "no port" at once (end of file) when the worker dies before binding.
- `NATS_BRIDGE_SUPERVISOR_PID=PID`: on Linux the worker asks to be sent SIGTERM when its
  supervisor dies (even by SIGKILL), so no worker copies on unsupervised; it drains as usual.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping

from bridge.operations.http import HttpAddress

log = logging.getLogger(__name__)

WORKER_ENV = "NATS_BRIDGE_WORKER"
PORT_FD_ENV = "NATS_BRIDGE_WORKER_PORT_FD"
SUPERVISOR_PID_ENV = "NATS_BRIDGE_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def worker_index(env: Mapping[str, str]) -> int | None:
    """This process's worker index, or None when it is no supervisor's worker."""
    text = env.get(WORKER_ENV, "")
    return int(text) if text.isdigit() else None


def port_announcer(env: Mapping[str, str]) -> Callable[[HttpAddress], None] | None:
    """A callback that tells the supervisor the bound port, once; None when nobody asked."""
    text = env.get(PORT_FD_ENV, "")
    if not text.isdigit():
        return None
    fd = int(text)

    def announce(address: HttpAddress) -> None:
        with contextlib.suppress(OSError):  # a supervisor gone: nobody to tell
            try:
                os.write(fd, f"{address.port}\n".encode())
            finally:
                os.close(fd)

    return announce


def follow_supervisor(env: Mapping[str, str]) -> None:
    """Ask the kernel for SIGTERM when the supervisor dies (Linux); stop at once if it already has."""
    text = env.get(SUPERVISOR_PID_ENV, "")
    if not text.isdigit() or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != int(text):  # it died before the request: the signal will never come
        log.error("the supervisor (pid %s) is gone; this worker does not run on its own", text)
        raise SystemExit(1)
