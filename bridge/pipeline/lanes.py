"""A lane's unsettled messages in source order, its watermark, and the outcomes of its publishes.

A lane is the unit of order (a Kafka partition, a queue): its messages are published in source
order, and its watermark — the highest position known stored with everything before it — is
what the source is settled up to. `LaneState` is also the publisher's PublishOwner: each
outcome comes back here as a plain method call and moves the watermark or starts a retry
cycle. What a lane needs from its route is the small `LaneHost` interface, so this module
knows nothing of the loop that runs it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Protocol

from bridge.deadletters import DeadLetterReason
from bridge.jetstream.publish_types import PublishFailure
from bridge.mapping import CompiledRoute
from bridge.pipeline.entries import SKIPPED, LaneEntry, stored_by_this_run
from bridge.pipeline.reorders import StoredOrder, overtaken, report_reorder
from bridge.pipeline.settings import PipelineSettings
from bridge.pipeline.stats import RouteStats
from bridge.sources.base import Lane, lane_label
from bridge.stored import StoredIndex

log = logging.getLogger(__name__)

# nats-server's JSAtomicPublishDisabledErr: the stream has no allow_atomic.
ATOMIC_PUBLISH_DISABLED = 10174


class LaneHost(Protocol):
    """What a lane tells its route (the pipeline implements it): each call is made from a publish
    outcome or a settle, so each only records and wakes; none waits."""

    refusing_since: float | None  # since when JetStream answers nothing but failures (readiness)

    @property
    def route(self) -> CompiledRoute: ...

    @property
    def stats(self) -> RouteStats: ...

    @property
    def settings(self) -> PipelineSettings: ...

    def wake(self) -> None:
        """Something for the send loop to do now."""

    def lane_has_work(self, lane: LaneState) -> None:
        """The lane has messages queued for sending."""

    def lane_progressed(self, lane: LaneState, count: int) -> None:
        """The lane's watermark moved over `count` messages: something to settle."""

    def refused(self, lane: LaneState, entry: LaneEntry, reason: DeadLetterReason, error: str) -> None:
        """`entry` can never be stored as it is: give it the fate its route chose (on_error)."""

    def check_captured(self, lane: LaneState, entry: LaneEntry) -> None:
        """No responders for `entry`: find out whether any stream captures its subject."""

    def atomic_refused(self, subject: str) -> None:
        """The stream capturing `subject` refuses atomic batches."""


class LaneState:
    """One lane's unsettled messages in source order, and its watermark.

    `entries` holds every message read and not yet settled, in source order; `unsent` the
    ones waiting for (re)sending. Implements the publisher's PublishOwner: outcomes come
    back here as plain method calls.
    """

    __slots__ = (
        "backoff",
        "entries",
        "host",
        "in_flight",
        "key",
        "known_through",
        "loaded_through",
        "probing",
        "read_through",
        "retry_at",
        "retrying",
        "revoked",
        "scan_from",
        "seen_end",
        "seq",
        "singles_through",
        "stored_order",
        "stream",
        "unsent",
        "watermark",
    )

    def __init__(self, key: Lane, host: LaneHost, index: StoredIndex) -> None:
        self.key = key
        self.host = host
        self.entries: deque[LaneEntry] = deque()
        self.unsent: deque[LaneEntry] = deque()
        self.watermark: int | None = None  # highest position known stored, with all before it
        self.read_through: int | None = None  # highest position the source handed over
        self.seq = 0  # stream sequence of the message at the watermark
        self.stream = ""  # and the stream that holds it
        self.scan_from: dict[str, int] = dict(index.scan_from.get(key, {}))
        # Per stream, its last sequence when the lane was assigned: everything of the lane at
        # or below it was found by the scan (or there was nothing to find, for a new lane).
        self.seen_end: dict[str, int] = dict(index.ends.get(key, {}))
        # What the checkpoint read at assignment already vouches for: a checkpoint written while
        # the watermark is still below it (the source resumed from an older commit) must not
        # vouch for less, or a later restart would store again what lies in between.
        self.loaded_through = index.through.get(key, -1)
        self.known_through = max(self.loaded_through, max(index.positions.get(key, ()), default=-1))
        self.retrying = False
        self.revoked = False
        self.retry_at = 0.0
        self.backoff = 0.0
        self.in_flight = 0
        # After a failure the lane resends its first unsettled message alone and pipelines the
        # rest only once JetStream stored it: a burst resent while a clustered stream elects a
        # leader would otherwise get 503 for its head and be stored from its tail, out of order.
        self.probing = False
        # ordering: batched — after a failed batch its messages are resent one at a time (which
        # finds the one a stream refuses, and takes stored ones as duplicates), up to this position.
        self.singles_through = -1
        # Per stream, the last records this run stored: a record stored at a lower sequence
        # than an earlier one is a reorder (bridge.pipeline.reorders).
        self.stored_order: StoredOrder = {}

    def sendable(self, entry: LaneEntry) -> bool:
        """Asked by the publisher just before sending: a lane waiting to resend sends nothing
        newer, or a later message could be stored before an earlier one; a revoked lane sends
        nothing more (its new owner reads it again)."""
        return not self.retrying and not self.revoked

    def published(self, entry: LaneEntry, seq: int, duplicate: bool) -> None:
        self.in_flight -= 1
        self.probing = False  # JetStream stores again: the rest of the lane may follow, pipelined
        host = self.host
        if self.unsent:
            host.lane_has_work(self)
        if entry.settled:
            return
        entry.settled = True
        entry.seq = seq
        entry.duplicate = duplicate
        host.refusing_since = None
        stats = host.stats
        if entry.dead_letter:
            stats.dead_lettered[entry.dead_letter] = stats.dead_lettered.get(entry.dead_letter, 0) + 1
        else:
            stats.published += 1
            stats.latency.observe(time.monotonic() - entry.sent_at)
        if duplicate:
            stats.duplicates += 1
        self.backoff = 0.0
        self._advance()

    def failed(self, entry: LaneEntry, failure: PublishFailure) -> None:
        self.in_flight -= 1
        if entry.settled:
            return
        host = self.host
        stats = host.stats
        stats.failures += 1
        stats.failures_by_kind[failure.kind] = stats.failures_by_kind.get(failure.kind, 0) + 1
        stats.last_error = str(failure)
        if failure.err_code == ATOMIC_PUBLISH_DISABLED:
            host.atomic_refused(entry.outbound.subject)
        if failure.permanent:
            host.refused(self, entry, DeadLetterReason.REFUSED, str(failure))
            return
        if host.refusing_since is None:
            # The refusal began when the message went out unanswered (a timeout says so late).
            host.refusing_since = entry.sent_at or time.monotonic()
        if not self.retrying:
            if failure.kind == "no-responders":
                # JetStream down, or no stream captures the subject: only the second is
                # this message's fault. Asked once per retry cycle, not per message.
                host.check_captured(self, entry)
            self.retrying = True
            settings = host.settings
            self.backoff = min(settings.retry_backoff_max, max(settings.retry_backoff_initial, self.backoff * 2))
            self.retry_at = time.monotonic() + self.backoff
            log.warning(
                "route %s lane %s: publish failed (%s); resending from position %d in %.1fs",
                host.route.key,
                lane_label(self.key),
                failure,
                entry.position,
                self.backoff,
            )
            host.wake()

    def rewind(self) -> list[LaneEntry]:
        """Queue every unsettled message for resending, in order; return them (to forget)."""
        pending = [entry for entry in self.entries if not entry.settled and entry.outbound is not SKIPPED]
        self.unsent = deque(pending)
        self.in_flight = 0
        self.retrying = False
        self.probing = bool(pending)
        if pending and self.host.settings.atomic_batch:
            self.singles_through = max(self.singles_through, pending[-1].position)
        return pending

    def settle_now(self, entry: LaneEntry) -> None:
        """Mark an entry done without a publish (filtered, skipped, or already stored)."""
        entry.settled = True
        self._advance()

    def _advance(self) -> None:
        entries = self.entries
        moved = 0
        while entries and entries[0].settled:
            done = entries.popleft()
            self.watermark = done.position
            if done.seq:
                self.seq = done.seq
                self.stream = done.stream
                if stored_by_this_run(done):
                    ahead_of = overtaken(self.stored_order, done)
                    if ahead_of is not None:
                        report_reorder(self.host.route.key, self.host.stats, self.key, done, ahead_of)
            moved += 1
        if moved:
            self.host.lane_progressed(self, moved)
