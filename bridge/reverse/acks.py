"""Acknowledging JetStream messages for a reverse route: one verb per message, or in-progress
while a batch waits for the legacy broker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Literal

from nats.aio.msg import Msg
from nats.errors import Error as NatsError

log = logging.getLogger(__name__)

Verb = Literal["ack", "nak", "term", "in_progress"]


async def settle(route: str, messages: Sequence[Msg], verb: Verb) -> None:
    """Send one acknowledgement verb for each message. A lost NATS connection loses the
    acks, never messages: JetStream redelivers them after ack_wait."""
    lost = 0
    for msg in messages:
        try:
            if verb == "ack":
                await msg.ack()
            elif verb == "nak":
                await msg.nak()
            elif verb == "term":
                await msg.term()
            else:
                await msg.in_progress()
        except NatsError:  # MsgAlreadyAckdError, a closed or reconnecting client
            lost += 1
    if lost:
        log.warning(
            "reverse route %s: %d %s(s) not sent to JetStream (NATS connection lost); "
            "JetStream redelivers those messages after ack_wait",
            route,
            lost,
            verb,
        )


async def keep_alive(route: str, held: list[Msg], ack_wait: float) -> None:
    """Tell JetStream the held messages are being worked on, well within ack_wait, so a slow
    legacy broker never makes it redeliver them behind the route's back."""
    while True:
        await asyncio.sleep(ack_wait / 3)
        await settle(route, list(held), "in_progress")
