"""One writer per reverse route, however many bridges run the mapping file.

Every instance of a mapping file (replicas, the workers of `run --workers N`) runs its reverse
routes, and all of them pull from the route's one durable consumer. Two pullers each holding a
batch write them to the legacy broker at the same time, interleaved: 110 of 3,000 messages
reached the legacy queue out of the stream's order (tests/integration/
test_reverse_two_instances.py) before a route wrote only under its lease.

The lease is a key in the KV bucket `nats_bridge_leases`, whose entries expire `ttl` seconds
after their last write. The holder writes it again every quarter of that; the others try to
create it every `retry` seconds and pull nothing meanwhile. A holder that could not renew in
time counts the lease as lost (well before the server lets the key expire) and stops before
its next batch; one that stops cleanly deletes the key, so a standby takes over at its next try.
A standby that takes over after a holder died gets the dead holder's unacknowledged batch again
only after the consumer's ack_wait, as a restarted single bridge would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable

from nats.errors import Error as NatsError
from nats.js import JetStreamContext, api
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from bridge.errors import BridgeError

log = logging.getLogger(__name__)

BUCKET = "nats_bridge_leases"
LEASE_TTL = 10.0  # seconds a lease lives after its holder's last write
RETRY = 1.0  # seconds between a standby's attempts to take the lease
_VALID_SHARE = 0.6  # the holder counts on its lease for this share of the ttl after each write


_KEY = re.compile(r"[-/_=.A-Za-z0-9]+")


def lease_key(stream: str, durable: str) -> str:
    """The route's key: its stream and durable (together unique), readable where KV allows it."""
    raw = f"{stream}.{durable}"
    if _KEY.fullmatch(raw):
        return f"reverse.{raw}"
    return "reverse.b64." + base64.urlsafe_b64encode(raw.encode()).decode()


def holder_name() -> str:
    """Who holds a lease, for the standbys' log line: host, process, and a part unique per route."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RouteLease:
    """The right to write one reverse route; held by one bridge at a time."""

    def __init__(
        self,
        js: JetStreamContext,
        key: str,
        *,
        holder: str | None = None,
        ttl: float = LEASE_TTL,
        retry: float = RETRY,
        replicas: int = 1,
        bucket: str = BUCKET,
    ) -> None:
        self._js = js
        self.key = key
        self.bucket = bucket
        self.holder = holder or holder_name()
        self._ttl = ttl
        self._retry = retry
        self._replicas = replicas
        self._kv: KeyValue | None = None
        self._revision: int | None = None
        self._valid_until = 0.0
        self._renewing: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        """This bridge may write the route now."""
        return self._revision is not None and time.monotonic() < self._valid_until

    async def acquire(self, stopping: asyncio.Event, standing_by: Callable[[str], None]) -> bool:
        """Wait until this bridge holds the lease (True) or `stopping` is set (False).
        `standing_by` is told who holds it, once per holder."""
        await self.release()  # a lease this bridge lost but may still have on the server: given up first
        told = ""
        while not stopping.is_set():
            sent = time.monotonic()
            try:
                kv = await self._bucket()
                revision = await kv.create(self.key, self.holder.encode())
            except KeyWrongLastSequenceError:
                other = await self._current_holder()
                if other != told:
                    standing_by(other)
                    told = other
            except (NatsError, TimeoutError) as error:
                log.debug("lease %s: not taken (%s); trying again", self.key, error or type(error).__name__)
            else:
                self._took(revision, sent)
                self._renewing = asyncio.create_task(self._renew(), name=f"lease {self.key}")
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self._retry)
        return False

    async def release(self) -> None:
        """Stop renewing and delete the key if it is still ours, so a standby need not wait for it to expire."""
        renewing, self._renewing = self._renewing, None
        if renewing is not None:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
        revision, self._revision = self._revision, None
        if revision is None or self._kv is None:
            return
        with contextlib.suppress(NatsError, TimeoutError):
            await self._kv.delete(self.key, last=revision)

    def _took(self, revision: int, sent: float) -> None:
        self._revision = revision
        self._valid_until = sent + self._ttl * _VALID_SHARE

    async def _renew(self) -> None:
        """Write the key again every quarter ttl while it is ours; stop once it is not."""
        while True:
            await asyncio.sleep(self._ttl / 4)
            if not self.held:
                log.warning("lease %s: not renewed in time; this bridge stops writing the route", self.key)
                return
            sent = time.monotonic()
            try:
                assert self._kv is not None
                assert self._revision is not None
                revision = await self._kv.update(self.key, self.holder.encode(), last=self._revision)
            except KeyWrongLastSequenceError:
                log.warning("lease %s: taken by another bridge; this one stops writing the route", self.key)
                self._revision = None
                return
            except (NatsError, TimeoutError) as error:
                log.debug("lease %s: not renewed (%s); trying again", self.key, error or type(error).__name__)
                continue
            self._took(revision, sent)

    async def _current_holder(self) -> str:
        try:
            entry = await (await self._bucket()).get(self.key)
        except (KeyNotFoundError, NatsError, TimeoutError):
            return "another bridge"
        return _shown(entry.value) or "another bridge"

    async def _bucket(self) -> KeyValue:
        """The bucket, made with `ttl` if missing. The server expires keys after the bucket's own
        max age, whatever this bridge was told: the lease is timed by that, so no holder counts
        on a key longer than the server keeps it."""
        if self._kv is None:
            try:
                kv = await self._js.key_value(self.bucket)
            except BucketNotFoundError:
                config = api.KeyValueConfig(
                    bucket=self.bucket,
                    history=1,
                    ttl=self._ttl,
                    storage=api.StorageType.FILE,
                    replicas=self._replicas,
                    description="nats-bridge: which bridge writes each reverse route",
                )
                kv = await self._js.create_key_value(config)
            ttl = (await kv.status()).ttl
            if not ttl:
                raise BridgeError(
                    f"KV bucket '{self.bucket}' keeps its keys for ever: a lease there would outlive a "
                    "bridge that died holding it; delete the bucket and the bridge makes it again with a ttl"
                )
            self._ttl, self._kv = ttl, kv
        return self._kv


async def lease_holder(js: JetStreamContext, key: str, bucket: str = BUCKET) -> str | None:
    """Who writes the route now, as `status` shows it: the holder's name, or None when no bridge
    holds the lease. Read only: a missing bucket is not made (no bridge ever held one)."""
    try:
        entry = await (await js.key_value(bucket)).get(key)
    except (BucketNotFoundError, KeyNotFoundError):
        return None
    return _shown(entry.value) or "a bridge (no name)"


def _shown(value: bytes | None) -> str:
    """A holder's name short and on one line: anyone with write access may have put anything there."""
    return " ".join((value or b"").decode(errors="replace").split())[:120]
