"""Where a stream route's consumer attaches (x-stream-offset), kept across its reconnects.

A route that starts at `next` (the default) or `last` knows no offset of its own until its first
delivery. Asking for `next` again at a reconnect before that would start after whatever was
written while the connection was down: those messages would never be read, nor dead-lettered.
So the first attach pins a time, and every later attach before a delivery starts there:
RabbitMQ attaches at the chunk holding the first message that arrived at or after it (by its
own clock), so nothing written since the first attach is passed over. The pin is `CLOCK_MARGIN`
before this host's clock, for the two clocks' skew; the price is that a reconnect before the
first delivery may also read messages that arrived up to that long before the first attach
(never stored, so copied once, not twice). A delivery's offset + 1 is the position from then on;
a checkpoint's, when the route starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

Position = int | str | datetime  # an offset, "first" / "last" / "next", or a time (x-stream-offset)
CLOCK_MARGIN = timedelta(seconds=30)


@dataclass(slots=True)
class StreamPosition:
    """The x-stream-offset of the route's next attach."""

    configured: Position
    next_offset: int | None = None  # after the last message received (or stored, at the start)
    pinned: datetime | None = None  # `next` or `last` attached once, nothing received since

    @property
    def start(self) -> Position:
        if self.next_offset is not None:
            return self.next_offset
        return self.pinned if self.pinned is not None else self.configured

    def attached(self, now: datetime | None = None) -> None:
        """The consumer attached at `start`: from now on nothing written after this may be passed over."""
        if self.next_offset is None and self.pinned is None and self.configured in ("next", "last"):
            self.pinned = (now or datetime.now(UTC)) - CLOCK_MARGIN
