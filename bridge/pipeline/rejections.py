"""What happens to a message that cannot go where its route says: the route's `on_error`.

A message is rejected when it cannot be mapped, when JetStream refuses it for good (too large
for the stream, a subject the user may not publish to), or when no stream captures its subject.
The route's `on_error` then decides: `skip` settles it, `stop` stops the route short of it, and
`dead-letter` sends a dead letter in its place (its payload into the object store when too
large). Until then the message stays in its lane, unsettled, so the watermark waits for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from nats.errors import Error as NatsError

from bridge.config.routes import OnError
from bridge.deadletters import DeadLetter, DeadLetterReason, DeadLetters, fits
from bridge.errors import RouteStoppedError
from bridge.jetstream.publisher import JetStreamPublisher
from bridge.mapping import CompiledRoute
from bridge.message import OutboundMessage, SourceMessage
from bridge.pipeline.entries import SKIPPED, LaneEntry
from bridge.pipeline.lanes import LaneState
from bridge.pipeline.settings import PayloadStore
from bridge.pipeline.stats import RouteStats
from bridge.sources.base import lane_label

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Rejection:
    """A message that cannot go where its route says; `Rejections.handle` decides its fate."""

    lane: LaneState
    entry: LaneEntry
    reason: DeadLetterReason
    error: str
    message: SourceMessage | None = None  # unmappable: the source message as read
    outbound: OutboundMessage | None = None  # refused: the message as mapped


class Rejections:
    """One route's rejected messages, and the questions asked about its unanswered ones.

    Messages are noted from publish outcomes and while accepting a batch (no waiting there);
    the send loop then calls `check_captures` and `handle`, which may wait on NATS.
    """

    def __init__(
        self,
        route: CompiledRoute,
        stats: RouteStats,
        publisher: JetStreamPublisher,
        *,
        dead_letters: DeadLetters | None,
        payloads: PayloadStore | None,
        wake: Callable[[], None],
        fail: Callable[[RouteStoppedError], None],
        queue: Callable[[LaneState], None],
    ) -> None:
        self._route = route
        self._stats = stats
        self._publisher = publisher
        self.dead_letters = dead_letters
        self.payloads = payloads
        self._wake = wake
        self._fail = fail  # stops the route: the send loop raises it
        self._queue = queue  # the lane has an entry to send again
        self._rejections: list[Rejection] = []
        self._capture_checks: list[tuple[LaneState, LaneEntry]] = []

    def refused(self, lane: LaneState, entry: LaneEntry, reason: DeadLetterReason, error: str) -> None:
        """`entry` can never be stored as it is (refused for good, or mapped to something unsendable)."""
        if entry.dead_letter:
            # The dead letter itself cannot be stored: nothing is left to fall back on.
            self._fail(
                RouteStoppedError(
                    f"route {self._route.key}: dead letter for {lane_label(lane.key)} position {entry.position} "
                    f"refused ({error}); the message stays unacknowledged at the source"
                )
            )
            return
        outbound = entry.outbound
        entry.outbound = SKIPPED  # not resent as it was while its fate is decided
        self._rejections.append(Rejection(lane, entry, reason, error, outbound=outbound))
        self._wake()

    def unmappable(
        self,
        lane: LaneState,
        entry: LaneEntry,
        message: SourceMessage,
        error: str,
        reason: DeadLetterReason = DeadLetterReason.UNMAPPABLE,
    ) -> None:
        """`message` (queued as `entry`, unsent) cannot be mapped to an outbound message (or, with
        `reason` unreadable, the source could not read it)."""
        self._rejections.append(Rejection(lane, entry, reason, error, message=message))
        self._wake()

    def check_captured(self, lane: LaneState, entry: LaneEntry) -> None:
        self._capture_checks.append((lane, entry))
        self._wake()

    async def check_captures(self) -> None:
        """For messages JetStream gave no answer: is it down, or does no stream capture the subject?"""
        while self._capture_checks:
            lane, entry = self._capture_checks.pop()
            if entry.settled or entry.dead_letter or entry.outbound is SKIPPED:
                continue
            if await self._publisher.captured(entry.outbound.subject) is False:
                self.refused(
                    lane,
                    entry,
                    DeadLetterReason.NO_STREAM,
                    f"no stream captures subject '{entry.outbound.subject}'",
                )

    async def handle(self) -> None:
        """Give each message that cannot go where its route says the fate the route chose."""
        while self._rejections:
            rejection = self._rejections[0]
            lane, entry = rejection.lane, rejection.entry
            where = f"{lane_label(lane.key)} position {entry.position}"
            on_error = self._route.config.on_error
            if on_error is OnError.SKIP:
                self._rejections.pop(0)
                self._stats.skipped += 1
                log.warning(
                    "route %s: skipping message at %s: %s (on_error: skip)", self._route.key, where, rejection.error
                )
                lane.settle_now(entry)
                continue
            if on_error is OnError.STOP or self.dead_letters is None:
                # Popped, so the drain still stores and settles everything before it; the
                # message itself is never settled, so the watermark stops short of it.
                self._rejections.pop(0)
                raise RouteStoppedError(
                    f"route {self._route.key}: message at {where} cannot be delivered: {rejection.error} "
                    f"(on_error: {on_error}); it stays unacknowledged at the source"
                )
            letter = await self._dead_letter(rejection, self.dead_letters)
            if letter is None:
                return  # the payload store is unreachable: try again on the next round
            self._rejections.pop(0)
            log.warning(
                "route %s: message at %s dead-lettered to %s (%s): %s",
                self._route.key,
                where,
                letter.message.subject,
                letter.reason,
                rejection.error,
            )
            entry.outbound = letter.message
            entry.dead_letter = letter.reason.value
            if not lane.retrying and entry not in lane.unsent:  # a rewind queues it by itself
                lane.unsent.append(entry)
                self._queue(lane)

    async def _dead_letter(self, rejection: Rejection, dead_letters: DeadLetters) -> DeadLetter | None:
        if rejection.message is not None:
            letter = dead_letters.for_unmappable(rejection.message, rejection.error, rejection.reason)
        else:
            assert rejection.outbound is not None
            letter = dead_letters.for_refused(rejection.outbound, rejection.reason, rejection.error)
        max_payload = self._publisher.max_payload
        if fits(letter.message, max_payload):
            return letter
        letter = dead_letters.too_large(letter, max_payload)
        if self.payloads is None:
            raise RouteStoppedError(
                f"route {self._route.key}: a dead letter's payload is too large and no payload store is set"
            )
        assert letter.payload is not None
        try:
            await self.payloads.put(letter.message.msg_id, letter.payload)
        except (NatsError, TimeoutError) as error:
            log.warning("route %s: storing a dead letter's payload failed (%s); retrying", self._route.key, error)
            return None
        return letter
