"""How soon a worker that died is started again: 1 s, doubling to 30 s; back to 1 s after a healthy run.

A worker that dies at once again and again (a broker refusing its login, a port it cannot bind)
must not spin: each restart waits twice as long as the one before, up to `maximum`. A worker
that ran `healthy_after` seconds before it died was fine until then, so its next restart is
quick again. The supervisor keeps one of these per worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

INITIAL = 1.0
MAXIMUM = 30.0
HEALTHY_AFTER = 60.0


@dataclass(slots=True)
class RestartBackoff:
    """The delays between one worker's restarts."""

    initial: float = INITIAL
    maximum: float = MAXIMUM
    healthy_after: float = HEALTHY_AFTER
    _next: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self._next = self.initial

    def delay(self, ran_for: float) -> float:
        """The wait before the next start of a worker that died after running `ran_for` seconds."""
        if ran_for >= self.healthy_after:
            self._next = self.initial
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay
