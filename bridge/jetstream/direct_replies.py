"""The publisher's PubAcks handled where nats-py's read loop parses them, not one task hop later.

nats-py puts each message of a subscription with a callback on the subscription's queue, and a
task of the subscription takes it off and awaits the callback: a queue put, a get, a
`task_done` and a coroutine per PubAck, one PubAck per message the bridge stores. The
publisher's reply handler is synchronous (it settles the entry and returns), so this takes the
queue's place and calls it at once, as `DeliveryFrames` does for a RabbitMQ channel's frames.
Everything else asked of the queue (drain's `join`, `qsize`) goes to the queue it replaced,
which stays empty.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger(__name__)


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
            log.exception("handling a reply on %s failed", msg.subject)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)
