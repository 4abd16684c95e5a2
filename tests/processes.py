"""Looking at processes the tests started (by pid), for the unit and the integration tests."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """Whether process `pid` exists (a zombie not yet reaped counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
