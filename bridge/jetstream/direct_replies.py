"""The publisher's PubAcks handed to it where nats-py's read loop finds them, not a task hop later.

nats-py puts each message of a subscription with a callback on the subscription's queue, and a
task of the subscription takes it off and awaits the callback: a queue put, a get, a
`task_done` and a coroutine per PubAck, one PubAck per message the bridge stores. The
publisher's handler is synchronous (it settles the entry and returns), so it is called at once,
two ways: the bridge's NATS client parses a plain `MSG` for the reply subscription straight off
its buffer (bridge.brokers.nats.replies.ReplyParser); any other message of it (a status with
headers, a message nats-py's own parser took) reaches `DirectReplies`, which stands in for the
subscription's queue as `DeliveryFrames` does for a RabbitMQ channel's frames. Everything else
asked of the queue (drain's `join`, `qsize`) goes to the queue it replaced, which stays empty.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bridge.brokers.nats.replies import ReplyParser

log = logging.getLogger(__name__)

# (token: the reply subject after the publisher's prefix, payload, headers or None)
AnswerHandler = Callable[[str, bytes, dict[str, str] | None], None]


async def listen_for_replies(nc: NatsClient, prefix: str, handle: AnswerHandler) -> Subscription:
    """Subscribe to `prefix*` with every reply handed to `handle` synchronously."""
    subscription = await nc.subscribe(prefix + "*", cb=_never_called, pending_msgs_limit=-1)
    cut = len(prefix)
    DirectReplies.install(subscription, lambda msg: handle(msg.subject[cut:], msg.data, msg.headers))
    parser = nc._ps
    if isinstance(parser, ReplyParser):

        def handle_run(replies: list[tuple[bytes, bytes]]) -> None:
            """The plain replies of one read, in order (ReplyParser hands them over together)."""
            for subject, data in replies:
                try:
                    handle(subject[cut:].decode(), data, None)
                except Exception:
                    # One reply its owner could not take must not cost the others theirs.
                    log.exception("handling the reply on %r failed", subject)

        parser.route(subscription._id, handle_run)
    return subscription


def stop_listening(nc: NatsClient, subscription: Subscription) -> None:
    """No more short path for `subscription` (before it is unsubscribed)."""
    parser = nc._ps
    if isinstance(parser, ReplyParser):
        parser.unroute(subscription._id)


async def _never_called(msg: Msg) -> None:  # nats-py wants a callback; DirectReplies takes its place
    raise AssertionError(f"reply on {msg.subject} reached nats-py's callback path")


class DirectReplies:
    """Stands in for `subscription._pending_queue`: every message goes straight to `handle`."""

    def __init__(self, subscription: Subscription, handle: Callable[[Msg], None]) -> None:
        self._subscription = subscription
        self._queue: asyncio.Queue[Msg] = subscription._pending_queue
        self._handle = handle

    @classmethod
    def install(cls, subscription: Subscription, handle: Callable[[Msg], None]) -> DirectReplies:
        direct = cls(subscription, handle)
        subscription._pending_queue = cast("asyncio.Queue[Msg]", direct)
        return direct

    def put_nowait(self, msg: Msg) -> None:
        # nats-py counted the message as pending before handing it over; its task would take it
        # off again when the callback ran.
        self._subscription._pending_size -= len(msg.data)
        try:
            self._handle(msg)
        except Exception:
            # Raised into nats-py's read loop it would end the connection.
            log.exception("handling a reply on %s failed", msg.subject)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)
