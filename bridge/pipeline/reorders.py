"""Telling when JetStream stored a lane's records out of order, and saying so.

Settling runs in position order, so a record stored at a lower sequence than an earlier record
of its lane was stored ahead of it. It happens when a stream leader stops gracefully (SIGTERM)
with publishes in flight: it drops some it had received while a later one reaches the new
leader, and the resends of the dropped ones are stored after it. Nothing can undo it; the
route counts it and says how to avoid it.
"""

from __future__ import annotations

import logging
from collections import deque

from bridge.jetstream.publish_types import InFlight
from bridge.pipeline.stats import RouteStats
from bridge.sources.base import Lane, lane_label

log = logging.getLogger(__name__)

# Records per lane and stream remembered to name the ones a reordered record overtook: enough for
# what one failure puts out of place (about 16 per partition measured), small enough that a
# route over a thousand partitions keeps a few MB, not hundreds (the count says "at least" then).
ORDER_MEMORY = 128

# Per stream, the last records a lane stored in this run, as (position, sequence) in position order.
StoredOrder = dict[str, deque[tuple[int, int]]]


def overtaken(stored_order: StoredOrder, done: InFlight) -> list[tuple[int, int]] | None:
    """Remember `done` (just settled, stored at `done.seq`); the records before it that it was
    stored ahead of, or None when it is in order."""
    recent = stored_order.get(done.stream)
    if recent is None:
        recent = stored_order[done.stream] = deque(maxlen=ORDER_MEMORY)
    found = None
    if recent and done.seq < recent[-1][1]:
        found = [(position, seq) for position, seq in recent if seq > done.seq]
    recent.append((done.position, done.seq))
    return found


def report_reorder(route: str, stats: RouteStats, lane: Lane, done: InFlight, ahead_of: list[tuple[int, int]]) -> None:
    """JetStream stored `done` before the records `ahead_of` that precede it in its lane."""
    count = len(ahead_of) or 1
    stats.reordered += count
    positions = [position for position, _ in ahead_of]
    seqs = [seq for _, seq in ahead_of]
    earlier = (
        f"{count} earlier record(s) (positions {min(positions)}-{max(positions)}, "
        f"stored at sequences {min(seqs)}-{max(seqs)})"
        if ahead_of
        else "earlier records"
    )
    text = (
        f"lane {lane_label(lane)}: position {done.position} is stored at sequence {done.seq} of "
        f"stream {done.stream}, ahead of {earlier}"
    )
    stats.last_reorder = text
    log.error(
        "route %s %s: JetStream stored a later in-flight publish while dropping earlier ones (a stream "
        "leader stopping without lame duck mode does this), and the resends landed after it: the "
        "stream holds them out of order. Restart NATS servers with lame duck mode (nats-server "
        "--signal ldm), or give the route `ordering: batched` or `strict`",
        route,
        text,
    )
