"""The publishes in flight, by reply token: bounded, oldest first, each taken out exactly once.

Every attempt is registered under its token when sent and taken out by whichever comes first —
its PubAck, its timeout, a disconnect, a refusal — so an outcome reaches its owner once per
attempt, and a late reply to an attempt already taken out is ignored. Tokens are issued in send
order and dicts keep insertion order, so the oldest attempts come first and a timeout scan
stops at the first one still in time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from bridge.jetstream.client_edges import wait_or_abandon
from bridge.jetstream.publish_types import InFlight


class Window:
    """At most `size` attempts in flight; `wait_for_space` blocks a sender while it is full."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("window must be at least 1")
        self.size = size
        self._entries: dict[str, InFlight] = {}
        self._space = asyncio.Event()
        self._space.set()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def full(self) -> bool:
        return len(self._entries) >= self.size

    def add(self, token: str, entry: InFlight) -> None:
        self._entries[token] = entry

    def take(self, token: str) -> InFlight | None:
        """The attempt `token` names, out of the window (None: already taken out)."""
        entry = self._entries.pop(token, None)
        if entry is not None:
            self._signal()
        return entry

    def take_where(self, wanted: Callable[[InFlight], bool]) -> list[InFlight]:
        taken = [token for token, entry in self._entries.items() if wanted(entry)]
        entries = [self._entries.pop(token) for token in taken]
        if entries:
            self._signal()
        return entries

    def take_all(self) -> list[InFlight]:
        entries = list(self._entries.values())
        self._entries.clear()
        self._signal()
        return entries

    def take_sent_before(self, deadline: float) -> list[InFlight]:
        """The attempts sent before `deadline` (monotonic), oldest first."""
        expired: list[InFlight] = []
        for entry in self._entries.values():
            if entry.sent_at > deadline:
                break
            expired.append(entry)
        for entry in expired:
            del self._entries[entry.token]
        if expired:
            self._signal()
        return expired

    def forget(self, entries: Iterable[InFlight]) -> None:
        for entry in entries:
            self._entries.pop(entry.token, None)
        self._signal()

    async def wait_for_space(self, abandon: asyncio.Event | None) -> bool:
        """Wait until the window has room; False once `abandon` is set first."""
        if not self.full:
            return True
        self._space.clear()
        return await wait_or_abandon(self._space, abandon)

    def _signal(self) -> None:
        if not self._space.is_set() and len(self._entries) < self.size:
            self._space.set()
