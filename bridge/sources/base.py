"""(1) IN: the contract every source connector keeps with the pipeline.

A source delivers messages in *lanes*: a Kafka partition, an AMQP channel's deliveries.
Within a lane, messages come in source order and each has an increasing integer
*position* (an offset, a delivery tag). The pipeline settles a lane by a *watermark*:
"everything up to and including this position is stored in JetStream". A source turns a
watermark into its own acknowledgement — a Kafka commit of `position + 1`, an AMQP
`basic.ack(multiple=True)` — and never acknowledges anything on its own.

This shape (batches in, watermarks back) keeps per-message work in the pipeline to a few
attribute writes; there is no task, future or callback per message.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from bridge.message import SourceMessage
from bridge.per_message import per_message

Lane = Hashable


@per_message
class Received:
    """One message as a source hands it to the pipeline: where it sits, and what it is.

    `message` is None for a message the route filters out at the source (a Kafka
    tombstone with `tombstones: skip`): it is settled like a published one, because a
    filtered message is done, not pending.
    """

    lane: Lane
    position: int
    message: SourceMessage | None


def lane_label(lane: Lane) -> str:
    """A stable text name for a lane (`orders/3` for Kafka's topic 'orders', partition 3)."""
    if isinstance(lane, tuple):
        return "/".join(str(part) for part in lane)
    return str(lane)


class LaneOwner(Protocol):
    """What a source may ask of the pipeline while it runs (the pipeline implements it)."""

    async def lanes_assigned(self, lanes: Collection[Lane]) -> Mapping[Lane, int]:
        """New lanes start; called before any message of theirs is fetched.

        The pipeline uses it to learn what is already stored for them (checkpoints), so a
        source must await it before reading from those lanes. Returns, per lane that has a
        checkpoint, the position up to which everything is stored: a source that chooses
        its own start (a RabbitMQ stream) resumes after it.
        """

    def missing_before(self, lane: Lane, position: int) -> list[tuple[int, int]]:
        """Ranges (first, last) of positions after the lane's checkpoint and before `position`
        (where the source would resume, e.g. its group's commit) that no stream holds.

        Checkpoints are written before the source is settled, so a resume position past the
        checkpoint must have been stored; what is not there now was lost by JetStream (a store
        restored from a copy, acknowledged writes lost before fsync) or filtered at the time.
        A source that can read those positions again seeks back to the first of them.
        """
        ...

    async def lanes_revoked(self, lanes: Collection[Lane]) -> Mapping[Lane, int]:
        """The source is about to lose these lanes (a Kafka rebalance).

        The pipeline waits, bounded, for their in-flight publishes, then forgets them and
        returns each lane's final watermark for the source to settle before letting go.
        """


class NoCheckpoints:
    """The LaneOwner of a reader that stores nothing (a read-only range reader, a test): nothing
    is stored by it, so the source starts where it is told."""

    async def lanes_assigned(self, lanes: Collection[Lane]) -> Mapping[Lane, int]:
        return {}

    async def lanes_revoked(self, lanes: Collection[Lane]) -> Mapping[Lane, int]:
        return {}

    def missing_before(self, lane: Lane, position: int) -> list[tuple[int, int]]:
        return []


class Source(Protocol):
    """A source connector. The pipeline calls these methods from one task, in this order:

    `start` once; then `fetch`, `settle`, `pause` and `resume` as it goes; `close` once.

    - `start(owner)`: connect and subscribe; call `owner.lanes_assigned` for lanes with stable
      positions before reading them. Errors are raised as BridgeError subclasses with a clear
      message: SourceUnreachableError when the broker does not answer (the pipeline calls
      `start` again a few seconds later, so it must leave nothing half-open), anything else
      (a refused login or subscription) is fatal for the route.
    - `fetch(max_messages, wait)`: the next messages, at most `max_messages`, waiting up
      to `wait` seconds; an empty list is normal. Must keep being called while paused:
      Kafka leaves the group if not polled.
    - `settle(watermarks)`: acknowledge each lane up to and including its position. A lane
      the source no longer owns is ignored. Must not raise for a transient broker error;
      the next settle carries a later watermark anyway.
    - `pause()` / `resume()`: stop / restart delivering messages (backpressure when
      JetStream is slow or unreachable) without leaving a consumer group.
    - `close()`: stop consuming and disconnect; unsettled messages are redelivered later.
    - `backlog()`: messages waiting at the source per lane label (Kafka lag per partition,
      a queue's depth), asking the broker: it is also the health check, and raises
      SourceUnavailableError when the broker does not answer. Called every few seconds
      from another task, never on the message path.
    """

    name: str
    # True when a message keeps its position across connections and restarts (a Kafka
    # offset, a stream offset). Only then can checkpoints name positions; delivery tags
    # restart at 1 on every channel, so a queue's lanes are never checkpointed.
    stable_positions: bool
    # Settle as soon as this many more messages are stored, not only on the pipeline's timer
    # (None: timer only). RabbitMQ stops delivering at `prefetch` unacked messages, so it must
    # be acked long before the timer; a Kafka commit per few hundred records would be waste.
    settle_after: int | None
    # Messages at the source this instance has not read yet, as of the last `backlog()` (None:
    # unknown). Unlike the backlog, which counts from the last commit, it reaches 0 whenever
    # the bridge has caught up: what the drain of a cut-over waits for.
    unread: int | None

    @property
    def checkpoint_scope(self) -> str:
        """Whose positions these are (a Kafka consumer group, a vhost): checkpoints of another
        group or vhost never apply."""
        ...

    async def start(self, owner: LaneOwner) -> None: ...

    async def fetch(self, max_messages: int, wait: float) -> Sequence[Received]: ...

    async def settle(self, watermarks: Mapping[Lane, int]) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    async def close(self) -> None: ...

    async def backlog(self) -> Mapping[str, int]: ...

    @property
    def reconnects(self) -> int:
        """Times the source connected again after losing its connection."""
        ...


@runtime_checkable
class SharedLanes(Protocol):
    """A source whose lanes are shared out among the instances reading the route (a Kafka
    group's partitions): each instance reports its own for a cut-over's drain. A source without
    it (a queue) has one backlog figure, the same for every instance."""

    def owned_lanes(self) -> set[str] | None:
        """The lane labels this instance reads now; None before start."""
        ...

    def all_lanes(self) -> set[str] | None:
        """Every lane label of the route, whoever owns it; None while not known."""
        ...
