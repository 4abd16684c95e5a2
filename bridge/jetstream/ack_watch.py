"""Telling a dead or cut-off NATS connection from a slow JetStream, by the PubAcks that stop coming.

nats-py notices a hung server only when its pings go unanswered (one to two ping intervals). A
round of PubAck timeouts is a quicker hint: a PING the server does not answer within 2 s means the
connection is dead, so reconnect now. A second round in a row with pings answered means JetStream
answers nothing through this server (a node cut off from the stream's leader, or no quorum):
reconnecting tries another server of the list, and costs nothing if the cluster as a whole has
no quorum.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError

from bridge.jetstream.client_edges import host_of

log = logging.getLogger("bridge.jetstream.publisher")  # its lines are the publisher's


class AckWatch:
    """Counts rounds of PubAck timeouts (a round: timeouts of publishes sent after the previous
    round was declared) since the last reply of any kind, and probes the connection on each."""

    def __init__(self, nc: NatsClient, ack_timeout: float) -> None:
        self._nc = nc
        self._ack_timeout = ack_timeout
        self._rounds = 0
        self._last_round_at = 0.0
        self._probe: asyncio.Task[None] | None = None
        self.forced_reconnects = 0

    def replied(self) -> None:
        """A reply came: the connection carries JetStream's answers."""
        self._rounds = 0

    def timed_out(self, newest_sent_at: float) -> None:
        """Publishes sent up to `newest_sent_at` timed out; a new round when sent after the last one."""
        if newest_sent_at <= self._last_round_at:
            return
        self._rounds += 1
        self._last_round_at = time.monotonic()
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._probe_connection(self._rounds), name="publisher-probe")

    def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()

    async def _probe_connection(self, rounds: int) -> None:
        nc = self._nc
        if not nc.is_connected:
            return
        why = ""
        try:
            await nc.flush(timeout=2)
        except (NatsError, TimeoutError, OSError):
            why = "the server did not answer a PING within 2 s"
        if not why and rounds >= 2:
            why = f"{rounds} rounds of PubAck timeouts in a row while the server answers pings"
        if not why or not nc.is_connected:
            return
        url = nc.connected_url.geturl() if nc.connected_url else "?"
        log.warning("no PubAck within %gs and %s: reconnecting (was %s)", self._ack_timeout, why, host_of(url))
        self.forced_reconnects += 1
        self._rounds = 0
        await nc.force_reconnect()
