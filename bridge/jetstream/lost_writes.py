"""After every reconnect: did JetStream forget messages it acknowledged while the bridge ran?

JetStream acknowledges before fsync (`sync_interval`, 2 minutes by default): a server that loses
power, or a store restored from an older copy, comes back without messages it acknowledged. A
bridge that was running all along would read on from where it was and never copy them again: the
sources were settled for them. The loss shows in the streams themselves: a stream whose last
sequence is below a sequence JetStream acknowledged to this bridge went back in time (a purge
does not lower it; replicated streams never acknowledge what a quorum does not hold).

What to copy again is decided where it already is, on lane assignment: the committed positions
against the checkpoints and what the streams hold (`bridge.brokers.kafka.positions`, `missing_before`). So
the watch only tells the runner, which stops and exits 1; the supervisor's restart copies the lost
records again. From the disconnect until the check passes the checkpoints are held: a checkpoint
written over forgotten records would hide them from that restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bridge.jetstream.checkpoints import JetStreamCheckpoints

log = logging.getLogger(__name__)

ASK_FOR = 30.0  # seconds to keep asking a JetStream that is not ready yet after the reconnect


class LostWritesWatch:
    """A connection listener: after each reconnect, compares each stream's last sequence with the
    highest sequence JetStream acknowledged to the publisher, and calls `lost` with the words."""

    def __init__(
        self,
        js: JetStreamContext,
        acknowledged: Mapping[str, int],
        lost: Callable[[str], None],
        checkpoints: JetStreamCheckpoints | None,
    ) -> None:
        self._js = js
        self._acknowledged = acknowledged  # the publisher's highest_seq, read when asked
        self._lost = lost
        self._checkpoints = checkpoints  # held from a disconnect until the check passes
        self._check: asyncio.Task[None] | None = None

    def _hold(self, held: bool) -> None:
        if self._checkpoints is not None:
            self._checkpoints.held = held

    async def on_disconnect(self) -> None:
        self._hold(True)

    async def on_reconnect(self) -> None:
        if self._check is None or self._check.done():
            self._check = asyncio.create_task(self.check(), name="lost-writes-check")

    def on_permission_denied(self, subject: str) -> None:
        return None

    def on_closed(self, reason: str) -> None:
        if self._check is not None:
            self._check.cancel()

    async def check(self) -> None:
        """Ask every stream the publisher has PubAcks from; call `lost` once if one went back."""
        gone: list[str] = []
        for stream, acknowledged in sorted(dict(self._acknowledged).items()):
            last = await self._last_sequence(stream)
            if last is not None and last < acknowledged:
                gone.append(
                    f"stream {stream} ends at sequence {last}, below sequence {acknowledged} it acknowledged "
                    f"({acknowledged - last} message(s) or more)"
                )
        if gone:
            self._lost("; ".join(gone))  # the checkpoints stay held
        else:
            self._hold(False)

    async def _last_sequence(self, stream: str) -> int | None:
        deadline = time.monotonic() + ASK_FOR
        delay = 0.5
        while True:
            try:
                info = await self._js.stream_info(stream)
            except NotFoundError:
                return 0  # deleted (and not made again yet): everything it held is gone
            except (NatsError, TimeoutError) as error:
                if time.monotonic() + delay > deadline:
                    log.warning("could not ask stream %s whether it kept what it acknowledged: %s", stream, error)
                    return None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                return int(info.state.last_seq)
