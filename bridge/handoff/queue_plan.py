"""Where a durable must start to take over from a legacy RabbitMQ queue exactly.

What is still in the queue is what its consumers have not processed; the bridge's shadow queue
got a copy of every message routed to it, in the same order, and stored each in the stream. So
the durable starts at the stream's copy of the queue's head. It is found in two steps: the
queue's depth says about how far from the end of the stream (counted on the durable's filter
subjects, by asking JetStream how many messages a consumer starting at a sequence would have
pending), then the head's own Msg-Id is looked for around there. Counting alone would be off by
what is published meanwhile and by what the bridge has not stored yet; the Msg-Id is exact.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from bridge.brokers.rabbitmq.queues import QueueState

MSG_ID_HEADER = "Nats-Msg-Id"
SEARCH_WINDOW = 2_000  # messages looked at on each side of where the count puts the head


@dataclass(frozen=True, slots=True)
class QueueLook:
    """One reading of the legacy side: the queue, the Msg-Id the bridge gave its head (None:
    empty, or none derivable), and what the bridge's shadow queue holds unstored."""

    queue: QueueState
    head_msg_id: str | None
    shadow_backlog: int


LookAtQueue = Callable[[], Awaitable[QueueLook]]


@dataclass(slots=True)
class QueueHandoffPlan:
    """What `handoff` would do for a queue, or why it will not."""

    stream: str
    durable: str
    queue: str
    depth: int
    start_sequence: int = 0
    head_msg_id: str | None = None
    unstored: int = 0  # the bridge's shadow copy of the queue, not stored yet
    refusals: list[str] = field(default_factory=list)

    @property
    def lag(self) -> int:
        return self.depth

    @property
    def refused(self) -> bool:
        return bool(self.refusals)

    def why_not(self) -> list[str]:
        return list(self.refusals)

    def as_json(self) -> dict[str, Any]:
        return {
            "legacy": {"kind": "rabbitmq-queue", "queue": self.queue, "depth": self.depth},
            "stream": self.stream,
            "durable": self.durable,
            "start_sequence": self.start_sequence,
            "head_msg_id": self.head_msg_id,
            "legacy_lag": self.depth,
            "refusals": self.why_not(),
        }


def looking_consumer(filters: Sequence[str], sequence: int, *, headers_only: bool = False) -> ConsumerConfig:
    """A short-lived consumer that only looks: from `sequence` on `filters`, no acks, in memory,
    gone a minute after its last use (the handoff deletes it at once)."""
    return ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=max(1, sequence),
        ack_policy=AckPolicy.NONE,
        inactive_threshold=60.0,
        mem_storage=True,
        num_replicas=1,
        headers_only=headers_only or None,
        **({"filter_subject": filters[0]} if len(filters) == 1 else {"filter_subjects": list(filters)}),
    )


async def pending_from(js: JetStreamContext, stream: str, filters: Sequence[str], sequence: int) -> int:
    """How many messages on `filters` a consumer starting at `sequence` would have pending."""
    info = await js.add_consumer(stream, looking_consumer(filters, sequence))
    try:
        return int(info.num_pending or 0)
    finally:
        if info.name:
            await js.delete_consumer(stream, info.name)


async def counted_start(
    js: JetStreamContext, stream: str, filters: Sequence[str], depth: int, first: int, last: int
) -> int:
    """The highest sequence from which `depth` messages are pending: where the count puts the head."""
    low, high = first, last + 1
    while low < high:
        middle = (low + high + 1) // 2
        if await pending_from(js, stream, filters, middle) >= depth:
            low = middle
        else:
            high = middle - 1
    return low


async def _next(js: JetStreamContext, stream: str, filters: Sequence[str], sequence: int) -> tuple[int, str] | None:
    """The first message on `filters` at or after `sequence`: (sequence, Msg-Id)."""
    found = []
    for subject in filters:
        try:
            message = await js.get_msg(stream, seq=sequence, subject=subject, next=True)
        except NotFoundError:
            continue
        found.append((message.seq or sequence, (message.headers or {}).get(MSG_ID_HEADER, "")))
    return min(found) if found else None


async def find_id(
    js: JetStreamContext, stream: str, filters: Sequence[str], msg_id: str, start: int, limit: int
) -> int | None:
    """The sequence of `msg_id` among the first `limit` messages on `filters` from `start`."""
    sequence = start
    for _ in range(limit):
        record = await _next(js, stream, filters, sequence)
        if record is None:
            return None
        if record[1] == msg_id:
            return record[0]
        sequence = record[0] + 1
    return None


def _depth_was(depth: int) -> Callable[[], Awaitable[int]]:
    """The depth read before, for callers that cannot read the queue again."""

    async def was() -> int:
        return depth

    return was


async def _the_copy_in_the_queue(
    js: JetStreamContext,
    stream: str,
    filters: Sequence[str],
    msg_id: str,
    found: int,
    last: int,
    limit: int,
    depth_now: Callable[[], Awaitable[int]],
) -> int:
    """Of the stream's copies of the head's Msg-Id, the one that is the head: the first at or after
    `found` not followed by more messages than the queue holds.

    A Msg-Id can be stored twice: identical messages without a message_id (a content hash)
    published further apart than the duplicate window. Every message the queue held when its
    depth was read, up to the stream's `last`, is still in it (its consumers are stopped), so a
    copy followed by more messages (through `last`) than the queue holds now was processed; the
    head is a later copy. With no later copy, `found` stays: as before, without a second look."""
    after_last = await pending_from(js, stream, filters, last + 1)
    depth = None
    while True:
        following = await pending_from(js, stream, filters, found) - after_last
        if depth is None:
            depth = await depth_now()
        if following <= depth:
            return found
        later = await find_id(js, stream, filters, msg_id, found + 1, limit)
        if later is None:
            return found
        found = later


async def plan_queue_handoff(
    js: JetStreamContext,
    *,
    stream: str,
    durable: str,
    filters: Sequence[str],
    queue: QueueState,
    head_msg_id: str | None,
    shadow_backlog: int,
    depth_now: Callable[[], Awaitable[int]] | None = None,
) -> QueueHandoffPlan:
    """The plan for moving `queue`'s consumers to `durable` on `stream`. `head_msg_id` is the Msg-Id
    the bridge gave the queue's head; `shadow_backlog` what its shadow queue holds unstored;
    `depth_now` reads the queue's depth again (default: the depth read before)."""
    plan = QueueHandoffPlan(stream, durable, queue.queue, queue.depth, head_msg_id=head_msg_id, unstored=shadow_backlog)
    if queue.consumers:
        plan.refusals.append(
            f"queue '{queue.queue}' still has {queue.consumers} consumer(s): stop the legacy consumers first, "
            "so what the queue holds stops changing"
        )
        return plan
    info = await js.stream_info(stream)
    first, last = info.state.first_seq, info.state.last_seq
    if queue.depth == 0:
        if shadow_backlog:
            plan.refusals.append(
                f"the bridge's shadow copy of '{queue.queue}' still holds {shadow_backlog} message(s) not stored: "
                "wait for the bridge to catch up (--wait)"
            )
        # Everything the queue got was processed. Not seen from here: a copy the bridge holds
        # delivered but unacked (a stalled bridge) is stored after this read and delivered too;
        # AMQP tells only the shadow queue's ready count (`shadow_backlog`), not its unacked.
        plan.start_sequence = last + 1
        return plan
    if head_msg_id is None:
        plan.refusals.append(f"the head of queue '{queue.queue}' has no Msg-Id the bridge can derive")
        return plan
    # SEARCH_WINDOW messages before where the depth puts the head, then forward past it by as
    # much again and by what the bridge has not stored yet.
    start = await counted_start(js, stream, filters, queue.depth + SEARCH_WINDOW, first, last)
    limit = 2 * SEARCH_WINDOW + shadow_backlog
    found = await find_id(js, stream, filters, head_msg_id, start, limit)
    if found is not None:
        found = await _the_copy_in_the_queue(
            js, stream, filters, head_msg_id, found, last, limit, depth_now or _depth_was(queue.depth)
        )
    if found is None:
        plan.refusals.append(
            f"the head of queue '{queue.queue}' (Msg-Id {head_msg_id}) is not in stream '{stream}' "
            + (
                "yet: the bridge has not stored it (--wait)"
                if shadow_backlog
                else "near where its depth puts it: the bridge never copied it (the queue held it before the "
                "bridge's shadow queue existed) or the stream no longer keeps it; let the legacy consumer "
                "process the queue's older messages, then hand off again"
            )
        )
        return plan
    plan.start_sequence = found
    return plan


async def plan_queue_looking(
    js: JetStreamContext,
    *,
    stream: str,
    durable: str,
    filters: Sequence[str],
    look: LookAtQueue,
    depth: Callable[[], Awaitable[int]] | None = None,
) -> QueueHandoffPlan:
    """The plan for a queue read through `look`, as `handoff` makes it.

    An empty queue has no head to find: the durable starts after the stream's last message. That
    is exact only if nothing was routed to the queue between reading the queue and reading the
    stream; with producers still publishing, a message stored in between is in the queue,
    unprocessed, and would be skipped. So an empty queue is read again after the stream: still
    empty, nothing arrived in between (its consumers are stopped, so nothing left it either);
    otherwise what arrived is now its head, found by its Msg-Id like any other head.

    `depth` reads only the queue's depth, without taking its head: each look at a quorum queue's
    head counts a delivery towards its x-delivery-limit (default: a look)."""

    async def depth_now() -> int:
        return await depth() if depth is not None else (await look()).queue.depth

    seen = await look()
    plan = await plan_queue_handoff(
        js, stream=stream, durable=durable, filters=filters, queue=seen.queue,
        head_msg_id=seen.head_msg_id, shadow_backlog=seen.shadow_backlog, depth_now=depth_now,
    )  # fmt: skip
    if seen.queue.depth or plan.refused:
        return plan
    again = await look()
    if again.queue.depth == 0 and not again.queue.consumers:
        return plan
    return await plan_queue_handoff(
        js, stream=stream, durable=durable, filters=filters, queue=again.queue,
        head_msg_id=again.head_msg_id, shadow_backlog=again.shadow_backlog, depth_now=depth_now,
    )  # fmt: skip
