"""(3) OUT: the pipelined JetStream publisher — many publishes in flight, PubAcks matched back.

Why not `js.publish` or `js.publish_async`? The first is one round trip per message (a few
thousand a second). The second, in nats-py 2.16, loses error acks, leaks its window slot
when a publish raises, and never times out or fails its futures on a disconnect
(CLIENT-NOTES.md). So this publisher uses the pattern Go's PublishAsync uses, on nats-py's
public core API: each message is published with a reply subject `<inbox>.<token>`, and one
wildcard subscription on `<inbox>.*` receives every PubAck and routes it back by token.

Every outcome reaches the message's owner exactly once per attempt, as one method call:
`published` (stored, or a duplicate of a stored message — either way safe to settle) or
`failed` (a JetStream error reply, no stream or no responders, a timeout, a disconnect, or
the client refusing the message). The owner — the pipeline — decides what to do next; the
publisher never retries on its own, because only the owner knows the source order.

A timeout does not mean "not stored": the owner must resend with the same Nats-Msg-Id and
let JetStream's de-duplication sort it out, never settle the source on a timeout.

Some messages must never reach the server: one whose `HPUB` control line is longer than the
server's `max_control_line` (4096 bytes by default; a long subject does it) is answered
with `-ERR 'Maximum Control Line Exceeded'`, and nats-py 2.16 then closes the client for
good — every route would stop for one message. `subject_room` says how long a subject may
be; the pipeline checks it when mapping, and `publish` refuses a longer one itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence
from typing import TypeVar

from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from bridge.brokers.nats.guarded import discard_unsent_commands
from bridge.deadletters import DEFAULT_MAX_CONTROL_LINE, subject_room_for
from bridge.jetstream.ack_watch import AckWatch
from bridge.jetstream.client_edges import (
    CLIENT_REFUSALS,
    CONNECTION_LOST,
    describe_error,
    raise_unless_dead_transport,
    wait_or_abandon,
)
from bridge.jetstream.direct_replies import listen_for_replies, stop_listening
from bridge.jetstream.pubacks import read_reply
from bridge.jetstream.publish_types import (
    BATCH_COMMIT_HEADER,
    BATCH_ID_HEADER,
    BATCH_SEQUENCE_HEADER,
    InFlight,
    PublisherStats,
    PublishFailure,
)
from bridge.jetstream.window import Window
from bridge.jetstream.wire import extended, hpub_command, send

log = logging.getLogger(__name__)

_Entry = TypeVar("_Entry", bound=InFlight)
# Tokens are a counter: 20 digits is more than any run reaches (2**64 has 20).
_TOKEN_DIGITS = 20


class JetStreamPublisher:
    """Publishes with a bounded window of un-acknowledged messages and routes every reply.

    Use as `async with JetStreamPublisher(nc) as publisher:`; call `on_disconnect` /
    `on_reconnect` from the connection's callbacks (connect_nats wires them).
    """

    def __init__(
        self,
        nc: NatsClient,
        *,
        window: int = 4096,
        ack_timeout: float = 5.0,
        max_control_line: int = DEFAULT_MAX_CONTROL_LINE,
    ) -> None:
        self._nc = nc
        self._window = Window(window)
        self._ack_timeout = ack_timeout
        self.max_control_line = max_control_line
        self._closed: str | None = None
        self._next_token = 0
        self._prefix = ""
        self._subscription: Subscription | None = None
        self._expiry_task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._connected.set()
        # For `captured`: a short timeout, since the send loop waits for the answer.
        self._js = nc.jetstream(timeout=1.0)
        self.stats = PublisherStats()
        self.highest_seq: dict[str, int] = {}  # per stream, from the PubAcks seen so far
        self._watch = AckWatch(nc, ack_timeout)  # PubAcks that stop coming: is it this connection?
        self._reply_length = len(nc.new_inbox()) + 1 + _TOKEN_DIGITS  # "<inbox>.<token>", at most

    async def __aenter__(self) -> JetStreamPublisher:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    @property
    def in_flight(self) -> int:
        """Messages published and not yet answered."""
        return len(self._window)

    @property
    def connected(self) -> bool:
        return self._connected.is_set() and self._nc.is_connected

    @property
    def closed(self) -> str | None:
        """Why the client closed for good (it will not reconnect), or None while it is usable."""
        return self._closed

    @property
    def max_payload(self) -> int:
        """The largest message (payload and headers) the connected server accepts."""
        return self._nc.max_payload

    @property
    def subject_room(self) -> int:
        """The longest subject, in bytes, whose publish the server accepts.

        The server bounds `<subject> <reply> <header bytes> <total bytes>` (the arguments
        of `HPUB`) by its max_control_line; the reply is this publisher's inbox and token,
        and both sizes are at most max_payload, so the rest is the subject's.
        """
        return subject_room_for(self._nc.max_payload, self._reply_length, self.max_control_line)

    async def captured(self, subject: str) -> bool | None:
        """Whether some stream captures `subject`; None when JetStream does not answer.

        Tells "JetStream is down" (retry) from "nothing will ever store this" (dead-letter)
        after a no-responders reply.
        """
        try:
            await self._js.find_stream_name_by_subject(subject)
        except NotFoundError:
            return False
        except (NatsError, TimeoutError):
            return None
        return True

    async def start(self) -> None:
        self._prefix = self._nc.new_inbox() + "."
        self._subscription = await listen_for_replies(self._nc, self._prefix, self._on_answer)
        if not self._nc.is_connected:
            self._connected.clear()
        self._expiry_task = asyncio.create_task(self._expire_loop(), name="publisher-expiry")

    async def close(self) -> None:
        self._watch.close()
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
            self._expiry_task = None
        if self._subscription is not None:
            stop_listening(self._nc, self._subscription)
            with contextlib.suppress(NatsError):
                await self._subscription.unsubscribe()
            self._subscription = None

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def publish(self, entries: Sequence[_Entry], *, abandon: asyncio.Event | None = None) -> list[_Entry]:
        """Send each entry in order, waiting for window space and for a connection.

        Returns once every entry is handed to the client; outcomes arrive later through the
        entries' owners. An entry the client refuses outright fails at once.

        While NATS is down (or the client closed for good) the waits could last forever: once
        `abandon` is set (its owner is stopping) they end, and the entries not handed over yet
        are returned, in order, for the owner to keep (they were not sent: nothing of them
        can be stored). Without waiting, entries are sent even when `abandon` is set.
        """
        nc = self._nc
        room = self.subject_room
        for index, entry in enumerate(entries):
            if (self._window.full or not self._connected.is_set()) and not await self._room(abandon):
                return list(entries[index:])
            if not entry.owner.sendable(entry):
                continue
            outbound = entry.outbound
            if len(outbound.subject) > room // 4 and len(outbound.subject.encode()) > room:
                # The server would answer -ERR and nats-py would close the client for good.
                entry.attempts += 1
                text = (
                    f"subject of {len(outbound.subject.encode())} bytes is longer than the {room} bytes "
                    f"max_control_line {self.max_control_line} leaves for it"
                )
                self._fail(entry, PublishFailure("refused", text, permanent=True))
                continue
            self._next_token += 1
            token = str(self._next_token)
            entry.token = token
            entry.attempts += 1
            entry.sent_at = time.monotonic()
            self._window.add(token, entry)
            try:
                payload = outbound.payload
                await send(
                    nc, hpub_command(outbound.subject, self._prefix + token, outbound.headers, payload), len(payload)
                )
            except CLIENT_REFUSALS as error:
                # Refused by the client before anything was sent: resending cannot help.
                self._window.take(token)
                self._fail(entry, PublishFailure("refused", describe_error(error), permanent=True))
            except CONNECTION_LOST as error:
                raise_unless_dead_transport(error)
                self._window.take(token)
                self._fail(entry, PublishFailure("disconnected", describe_error(error)))
            else:
                self.stats.sent += 1
        return []

    async def publish_atomic(
        self, groups: Sequence[Sequence[_Entry]], *, abandon: asyncio.Event | None = None
    ) -> list[_Entry]:
        """Send each group as one JetStream atomic batch: stored all together, in order, or not
        at all. A stream leader stopping with publishes in flight drops some and stores later
        ones (a reorder, see bridge.pipeline.reorders); a batch it drops is dropped whole.

        Only the commit message asks for a reply; its PubAck (the batch's last sequence and
        its count) reaches every member's owner, each with its own sequence. Any failure of
        the batch fails every member as retryable, even an error that concerns one message (a
        duplicate Msg-Id, a message over max_msg_size): the owner resends them one at a time,
        which tells which one and stores the rest in order. Returns what was not handed over,
        as `publish` does; a group must go to one stream, each message within the subject room."""
        nc = self._nc
        for index, group in enumerate(groups):
            if not group:
                continue
            if (self._window.full or not self._connected.is_set()) and not await self._room(abandon):
                return [entry for rest in groups[index:] for entry in rest]
            commit = group[-1]
            if not commit.owner.sendable(commit):
                continue
            self._next_token += 1
            token = str(self._next_token)
            batch_id = self._prefix + "b" + token  # unique per connection and attempt, under 64 bytes
            now = time.monotonic()
            for entry in group:
                entry.token = token
                entry.attempts += 1
                entry.sent_at = now
            commit.batch = list(group)
            self._window.add(token, commit)
            last = len(group)
            try:
                for number, entry in enumerate(group, 1):
                    outbound = entry.outbound
                    batch = {BATCH_ID_HEADER: batch_id, BATCH_SEQUENCE_HEADER: str(number)}
                    reply = ""
                    if number == last:
                        batch[BATCH_COMMIT_HEADER] = "1"
                        reply = self._prefix + token
                    headers = extended(outbound.headers, batch)
                    payload = outbound.payload
                    await send(nc, hpub_command(outbound.subject, reply, headers, payload), len(payload))
            except (*CLIENT_REFUSALS, *CONNECTION_LOST) as error:
                raise_unless_dead_transport(error)
                # Part of the batch may be out: without its commit the server drops it (after its
                # batch timeout). Resent one at a time, the member the client refuses is found.
                self._window.take(token)
                self._fail(
                    commit, PublishFailure("disconnected", f"atomic batch not sent whole: {describe_error(error)}")
                )
            else:
                self.stats.sent += last
                self.stats.batches += 1
        return []

    async def _room(self, abandon: asyncio.Event | None) -> bool:
        """Wait for window space and a connection; False once `abandon` is set first. Called only
        when one of them is missing, so the common publish awaits nothing more."""
        if not await self._window.wait_for_space(abandon):
            return False
        return self._connected.is_set() or await wait_or_abandon(self._connected, abandon)

    def forget(self, entries: Iterable[InFlight]) -> None:
        """Stop tracking these entries' current attempts (their owner is about to resend them)."""
        self._window.forget(entries)

    async def on_disconnect(self) -> None:
        """Fail everything in flight and stop sending until the connection is back.

        Commands nats-py buffered but had not written when the connection broke would be
        flushed after reconnect, ahead of the owner's in-order resends, storing later
        messages before earlier ones; they are dropped here (the owner resends them all).
        """
        self._connected.clear()
        discard_unsent_commands(self._nc)
        self._fail_all(PublishFailure("disconnected", "connection to NATS lost"))

    async def on_reconnect(self) -> None:
        self._watch.replied()
        self._connected.set()

    def on_closed(self, reason: str) -> None:
        """The client closed for good: nothing in flight will be answered and nothing can be
        sent any more. Fail what is in flight (the owners keep it unsettled) and hold every
        publish until its owner abandons it."""
        self._closed = reason
        self._connected.clear()
        # The reason is said once, by the runner's ERROR line; a lane's warning only points to it.
        self._fail_all(PublishFailure("disconnected", "the NATS client closed (the bridge is stopping, see the ERROR)"))

    def on_permission_denied(self, subject: str) -> None:
        """The server dropped the publishes to `subject` and will never answer them: fail them
        for good now (dead letter or stop, as the route says) instead of waiting to time out
        and resending forever."""
        denied = self._window.take_where(lambda entry: entry.outbound.subject == subject)
        failure = PublishFailure(
            "permission", f"the NATS user may not publish to '{subject}' (permissions violation)", permanent=True
        )
        for entry in denied:
            self._fail(entry, failure)

    def _on_answer(self, token: str, data: bytes, headers: dict[str, str] | None) -> None:
        """A reply to `self._prefix + token` (bridge.jetstream.direct_replies calls it)."""
        self._watch.replied()
        entry = self._window.take(token)
        if entry is None:
            return  # a reply to an attempt that timed out or was forgotten
        answer = read_reply(data, headers)
        if isinstance(answer, PublishFailure):
            self._fail(entry, answer)
            return
        stream, seq, duplicate, count = answer.stream, answer.seq, answer.duplicate, answer.count
        if seq > self.highest_seq.get(stream, 0):
            self.highest_seq[stream] = seq
        if duplicate:
            self.stats.duplicates += 1
        if entry.batch is not None:
            self._batch_stored(entry, stream, seq, count)
            return
        self.stats.stored += 1
        entry.seq = seq
        entry.stream = stream
        entry.owner.published(entry, seq, duplicate)

    def _batch_stored(self, commit: InFlight, stream: str, seq: int, count: int) -> None:
        """An atomic batch's PubAck: its `count` messages are stored in consecutive sequences
        ending at `seq`; each member's owner hears its own."""
        members = commit.batch or [commit]
        if count != len(members):
            self._fail(commit, PublishFailure("error", f"atomic batch of {len(members)} acknowledged as {count}"))
            return
        commit.batch = None
        first = seq - count + 1
        self.stats.stored += count
        for offset, member in enumerate(members):
            member.seq = first + offset
            member.stream = stream
            member.owner.published(member, first + offset, False)

    def _fail(self, entry: InFlight, failure: PublishFailure) -> None:
        self.stats.count_failure(failure)
        members = entry.batch
        if members is None:
            entry.owner.failed(entry, failure)
            return
        entry.batch = None
        # What failed is the batch; whichever message caused it is found when they are resent alone.
        retryable = dataclasses.replace(failure, permanent=False) if failure.permanent else failure
        for member in members:
            member.owner.failed(member, retryable)

    def _fail_all(self, failure: PublishFailure) -> None:
        for entry in self._window.take_all():
            self._fail(entry, failure)

    async def _expire_loop(self) -> None:
        interval = min(0.25, self._ack_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            expired = self._window.take_sent_before(time.monotonic() - self._ack_timeout)
            if not expired:
                continue
            failure = PublishFailure("timeout", f"no PubAck within {self._ack_timeout:g}s")
            for entry in expired:
                self._fail(entry, failure)
            self._watch.timed_out(expired[-1].sent_at)
