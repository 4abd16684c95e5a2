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
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, Self, TypeVar

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import (
    BadSubjectError,
    ConnectionClosedError,
    ConnectionDrainingError,
    ConnectionReconnectingError,
    MaxPayloadError,
    OutboundBufferLimitError,
)
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from bridge.deadletters import DEFAULT_MAX_CONTROL_LINE, subject_room_for
from bridge.message import OutboundMessage

log = logging.getLogger(__name__)

_Entry = TypeVar("_Entry", bound="InFlight")
_Entry_contra = TypeVar("_Entry_contra", bound="InFlight", contravariant=True)

STATUS_HEADER = "Status"
# Tokens are a counter: 20 digits is more than any run reaches (2**64 has 20).
_TOKEN_DIGITS = 20
NO_RESPONDERS = "503"
# Atomic batch headers (nats-server 2.12+, streams with allow_atomic): the server stores every
# message of a batch or none, in order, once the message carrying the commit header arrives.
BATCH_ID_HEADER = "Nats-Batch-Id"
BATCH_SEQUENCE_HEADER = "Nats-Batch-Sequence"
BATCH_COMMIT_HEADER = "Nats-Batch-Commit"
# JetStream errors that resending the same message cannot cure (nats-server's errors.json).
PERMANENT_ERRORS = frozenset(
    {
        10054,  # message size exceeds the stream's max_msg_size
    }
)


@dataclass(frozen=True, slots=True)
class PublishFailure:
    """Why one publish attempt did not end in a PubAck.

    `permanent` failures cannot succeed by resending the same message (the client refuses
    it: too large, a bad header); the owner dead-letters or stops. Everything else is
    retried with the same Nats-Msg-Id.
    """

    kind: str  # "error" | "no-responders" | "timeout" | "disconnected" | "refused" | "permission"
    description: str
    code: int = 0
    err_code: int = 0
    permanent: bool = False

    def __str__(self) -> str:
        codes = f" (code {self.code}, err_code {self.err_code})" if self.code else ""
        return f"{self.kind}: {self.description}{codes}"


class PublishOwner(Protocol[_Entry_contra]):
    """Who hears the outcome of a publish; the pipeline's per-lane tracker implements it.

    Generic in the kind of entry it is handed back: an owner that keeps more per message than
    the publisher does subclasses `InFlight` (the pipeline's `LaneEntry`) and gets its own
    entries back, with nothing to look up and no second object per message."""

    def sendable(self, entry: _Entry_contra) -> bool:
        """Asked just before `entry` is sent; False skips it (the owner will resend it)."""

    def published(self, entry: _Entry_contra, seq: int, duplicate: bool) -> None:
        """The message is stored in stream sequence `seq` (`duplicate`: it already was)."""

    def failed(self, entry: _Entry_contra, failure: PublishFailure) -> None:
        """This attempt failed; the message may or may not be stored (see PublishFailure)."""


@dataclass(slots=True, eq=False)
class InFlight:
    """One message on its way to JetStream: what the publisher needs to send it and to hand
    its outcome back, nothing of what its owner does with that outcome.

    `position` is the source's own position (a Kafka offset, an AMQP delivery tag), opaque
    here: it names the message for its owner. `token` names the current attempt, so a late
    reply to an older attempt is ignored. `seq` and `stream` are where the last PubAck said the
    message is stored; `attempts` and `sent_at` count and time its attempts.
    """

    outbound: OutboundMessage
    owner: PublishOwner[Self]
    position: int
    token: str = ""
    sent_at: float = 0.0
    attempts: int = 0
    seq: int = 0
    stream: str = ""
    batch: list[Self] | None = None  # on the commit message of an atomic batch: every message of it


@dataclass(slots=True)
class PublisherStats:
    """Running totals, read by metrics and by tests."""

    sent: int = 0
    batches: int = 0  # atomic batches sent (ordering: batched)
    stored: int = 0
    duplicates: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    def count_failure(self, failure: PublishFailure) -> None:
        self.failures[failure.kind] = self.failures.get(failure.kind, 0) + 1


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
        if window < 1:
            raise ValueError("window must be at least 1")
        self._nc = nc
        self._window = window
        self._ack_timeout = ack_timeout
        self.max_control_line = max_control_line
        self._closed: str | None = None
        self._in_flight: dict[str, InFlight] = {}
        self._next_token = 0
        self._prefix = ""
        self._subscription: Subscription | None = None
        self._expiry_task: asyncio.Task[None] | None = None
        self._has_space = asyncio.Event()
        self._has_space.set()
        self._connected = asyncio.Event()
        self._connected.set()
        # For `captured`: a short timeout, since the send loop waits for the answer.
        self._js = nc.jetstream(timeout=1.0)
        self.stats = PublisherStats()
        self.highest_seq: dict[str, int] = {}  # per stream, from the PubAcks seen so far
        # Rounds of PubAck timeouts since the last reply of any kind on this connection (a
        # round: timeouts of publishes sent after the previous round was declared).
        self._timeout_rounds = 0
        self._last_timeout_at = 0.0
        self._probe: asyncio.Task[None] | None = None
        self.forced_reconnects = 0
        self._reply_length = len(nc.new_inbox()) + 1 + _TOKEN_DIGITS  # "<inbox>.<token>", at most

    async def __aenter__(self) -> JetStreamPublisher:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    @property
    def in_flight(self) -> int:
        """Messages published and not yet answered."""
        return len(self._in_flight)

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
        self._subscription = await self._nc.subscribe(self._prefix + "*", cb=self._on_reply, pending_msgs_limit=-1)
        if not self._nc.is_connected:
            self._connected.clear()
        self._expiry_task = asyncio.create_task(self._expire_loop(), name="publisher-expiry")

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
            self._expiry_task = None
        if self._subscription is not None:
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
            if (len(self._in_flight) >= self._window or not self._connected.is_set()) and not await self._room(abandon):
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
            self._in_flight[token] = entry
            try:
                await nc.publish(
                    outbound.subject, outbound.payload, reply=self._prefix + token, headers=dict(outbound.headers)
                )
            except _CLIENT_REFUSALS as error:
                # Refused by the client before anything was sent: resending cannot help.
                del self._in_flight[token]
                self._fail(entry, PublishFailure("refused", _describe(error), permanent=True))
            except _CONNECTION_LOST as error:
                _raise_unless_dead_transport(error)
                self._in_flight.pop(token, None)
                self._fail(entry, PublishFailure("disconnected", _describe(error)))
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
            if (len(self._in_flight) >= self._window or not self._connected.is_set()) and not await self._room(abandon):
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
            self._in_flight[token] = commit
            last = len(group)
            try:
                for number, entry in enumerate(group, 1):
                    outbound = entry.outbound
                    headers = dict(outbound.headers)
                    headers[BATCH_ID_HEADER] = batch_id
                    headers[BATCH_SEQUENCE_HEADER] = str(number)
                    reply = ""
                    if number == last:
                        headers[BATCH_COMMIT_HEADER] = "1"
                        reply = self._prefix + token
                    await nc.publish(outbound.subject, outbound.payload, reply=reply, headers=headers)
            except (*_CLIENT_REFUSALS, *_CONNECTION_LOST) as error:
                _raise_unless_dead_transport(error)
                # Part of the batch may be out: without its commit the server drops it (after its
                # batch timeout). Resent one at a time, the member the client refuses is found.
                self._in_flight.pop(token, None)
                self._fail(commit, PublishFailure("disconnected", f"atomic batch not sent whole: {_describe(error)}"))
            else:
                self.stats.sent += last
                self.stats.batches += 1
        return []

    async def _room(self, abandon: asyncio.Event | None) -> bool:
        """Wait for window space and a connection; False once `abandon` is set first. Called only
        when one of them is missing, so the common publish awaits nothing more."""
        if len(self._in_flight) >= self._window:
            self._has_space.clear()
            if not await _wait(self._has_space, abandon):
                return False
        return self._connected.is_set() or await _wait(self._connected, abandon)

    def forget(self, entries: Iterable[InFlight]) -> None:
        """Stop tracking these entries' current attempts (their owner is about to resend them)."""
        for entry in entries:
            self._in_flight.pop(entry.token, None)
        self._signal_space()

    async def on_disconnect(self) -> None:
        """Fail everything in flight and stop sending until the connection is back.

        Commands nats-py buffered but had not written when the connection broke would be
        flushed after reconnect, ahead of the owner's in-order resends, storing later
        messages before earlier ones; they are dropped here (the owner resends them all).
        """
        self._connected.clear()
        _discard_unsent_commands(self._nc)
        self._fail_all(PublishFailure("disconnected", "connection to NATS lost"))

    async def on_reconnect(self) -> None:
        self._timeout_rounds = 0
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
        denied = [token for token, entry in self._in_flight.items() if entry.outbound.subject == subject]
        failure = PublishFailure(
            "permission", f"the NATS user may not publish to '{subject}' (permissions violation)", permanent=True
        )
        for token in denied:
            self._fail(self._in_flight.pop(token), failure)
        if denied:
            self._signal_space()

    def _on_reply_sync(self, msg: Msg) -> None:
        self._timeout_rounds = 0  # the connection carries JetStream's answers
        entry = self._in_flight.pop(msg.subject[len(self._prefix) :], None)
        if entry is None:
            return  # a reply to an attempt that timed out or was forgotten
        self._signal_space()
        headers = msg.headers
        if headers and headers.get(STATUS_HEADER) == NO_RESPONDERS and not msg.data:
            self._fail(entry, PublishFailure("no-responders", "no stream captures the subject, or JetStream is down"))
            return
        fast = parse_puback(msg.data)
        count = 1
        if fast is not None:
            stream, seq, duplicate = fast
            error = None
        else:
            try:
                reply = json.loads(msg.data)
                error = reply.get("error")
                if error is None:
                    stream = str(reply.get("stream", ""))
                    seq = int(reply["seq"])
                    duplicate = bool(reply.get("duplicate", False))
                    count = int(reply.get("count", 1))
            except (ValueError, KeyError, TypeError, AttributeError):
                self._fail(entry, PublishFailure("error", f"unreadable PubAck: {msg.data[:200]!r}"))
                return
        if error is not None:
            err_code = int(error.get("err_code", 0))
            failure = PublishFailure(
                "error",
                str(error.get("description", "JetStream error")),
                code=int(error.get("code", 0)),
                err_code=err_code,
                permanent=err_code in PERMANENT_ERRORS,
            )
            self._fail(entry, failure)
            return
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

    async def _on_reply(self, msg: Msg) -> None:
        self._on_reply_sync(msg)

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
        entries = list(self._in_flight.values())
        self._in_flight.clear()
        self._signal_space()
        for entry in entries:
            self._fail(entry, failure)

    def _signal_space(self) -> None:
        if not self._has_space.is_set() and len(self._in_flight) < self._window:
            self._has_space.set()

    async def _expire_loop(self) -> None:
        interval = min(0.25, self._ack_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            deadline = time.monotonic() - self._ack_timeout
            expired: list[InFlight] = []
            # Tokens are issued in send order and dicts keep insertion order: the oldest
            # attempts come first, so the scan stops at the first one still in time.
            for entry in self._in_flight.values():
                if entry.sent_at > deadline:
                    break
                expired.append(entry)
            if not expired:
                continue
            for entry in expired:
                del self._in_flight[entry.token]
            self._signal_space()
            failure = PublishFailure("timeout", f"no PubAck within {self._ack_timeout:g}s")
            for entry in expired:
                self._fail(entry, failure)
            if expired[-1].sent_at > self._last_timeout_at:
                self._timeout_rounds += 1
                self._last_timeout_at = time.monotonic()
                self._check_connection()

    def _check_connection(self) -> None:
        """PubAcks stopped coming: find out whether this connection is the reason.

        nats-py notices a hung server only when its pings go unanswered (one to two ping
        intervals). A round of PubAck timeouts is a quicker hint: a PING the server does not
        answer within 2 s means the connection is dead, so reconnect now. A second round in a
        row with pings answered means JetStream answers nothing through this server (a node cut
        off from the stream's leader, or no quorum): reconnecting tries another server of the
        list, and costs nothing if the cluster as a whole has no quorum.
        """
        if self._probe is not None and not self._probe.done():
            return
        self._probe = asyncio.create_task(self._probe_connection(self._timeout_rounds), name="publisher-probe")

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
        log.warning("no PubAck within %gs and %s: reconnecting (was %s)", self._ack_timeout, why, _host(url))
        self.forced_reconnects += 1
        self._timeout_rounds = 0
        await nc.force_reconnect()


# A publish the client refuses before anything is sent (too large, a bad subject or header).
_CLIENT_REFUSALS = (MaxPayloadError, BadSubjectError, ValueError, TypeError)
# A publish into a connection that is gone. The socket may have died a moment ago without nats-py
# noticing yet: its flusher task ended on the closed transport, so the client writes inline and the
# transport raises (uvloop: RuntimeError "handler is closed"; drain: ConnectionResetError). nats-py's
# read loop sees the loss next and reconnects: a disconnect like any other.
_CONNECTION_LOST = (
    OutboundBufferLimitError,
    ConnectionClosedError,
    ConnectionDrainingError,
    ConnectionReconnectingError,
    RuntimeError,
    OSError,
)


def _raise_unless_dead_transport(error: Exception) -> None:
    """A RuntimeError other than the dead-transport one is a bug, not a disconnect."""
    if isinstance(error, RuntimeError) and "closed" not in str(error):
        raise error


_PUBACK_PREFIX = b'{"stream":"'
_SEQ = b',"seq":'


def parse_puback(data: bytes) -> tuple[str, int, bool] | None:
    """(stream, seq, duplicate) from a PubAck of the usual shape, without json.loads.

    It runs once per published message; anything but `{"stream":"S","seq":N}` optionally
    followed by `,"duplicate":true` returns None, and the caller parses it as JSON.
    """
    if not data.startswith(_PUBACK_PREFIX):
        return None
    end = data.find(b'"', 11)
    if end < 0 or data[end + 1 : end + 8] != _SEQ:
        return None
    start = index = end + 8
    while index < len(data) and 48 <= data[index] <= 57:  # ASCII digits
        index += 1
    if index == start:
        return None
    tail = data[index:]
    if tail == b"}":
        duplicate = False
    elif tail == b',"duplicate":true}':
        duplicate = True
    else:
        return None
    return data[11:end].decode("ascii", "replace"), int(data[start:index]), duplicate


async def _wait(event: asyncio.Event, abandon: asyncio.Event | None) -> bool:
    """Wait for `event`; give up (False) as soon as `abandon` is set."""
    if event.is_set():
        return True
    if abandon is None:
        await event.wait()
        return True
    if abandon.is_set():
        return False
    waiting = asyncio.ensure_future(event.wait())
    giving_up = asyncio.ensure_future(abandon.wait())
    try:
        await asyncio.wait((waiting, giving_up), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        giving_up.cancel()
    return event.is_set()


def _host(url: str) -> str:
    """host:port of a server URL, never its credentials."""
    return url.rpartition("@")[2]


def _describe(error: Exception) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _discard_unsent_commands(nc: NatsClient) -> None:
    # nats-py keeps commands not yet written in `_pending` and writes them after a
    # reconnect. There is no public way to drop them; doing so keeps per-partition order
    # (tests/brokers/test_publisher_*.py restarts nats-server mid-flow to prove it).
    # Subscriptions are replayed from `_subs`, so nothing but unsent publishes is lost.
    pending = getattr(nc, "_pending", None)
    if isinstance(pending, list):
        pending.clear()
        nc._pending_data_size = 0
