"""`nats-bridge verify`: a parity report between what the sources hold and what JetStream stored.

The bridge promises each source message stored exactly once. `verify` checks that promise
after the fact, read-only, on every broker:

- **Kafka routes**, per partition of every topic the route reads: each record in the range
  `[first, committed)` is stored exactly once. `first` is the partition's beginning when the
  route starts at `earliest`, else the lowest offset stored; `committed` is the bridge's own
  group's committed offset (read with the admin API: no group is joined, nothing committed).
  Everything below the committed offset was acknowledged by JetStream before the commit, so
  anything in the range that is not in the stream was lost. The records of the range are read
  with a consumer *without a group* (assign + seek), so each is judged with the route's own
  mapping code: a record the route does not publish (a tombstone with `tombstones: skip`, an
  unmappable record with `on_error: skip`) is *not expected*, and one it dead-letters counts
  as accounted for when the dead letter is in the dead-letter stream.
- **RabbitMQ stream-queue routes** (`mode: stream`), by `Amqp-Stream-Offset`, the same way.
  RabbitMQ keeps no offset for AMQP 0-9-1 stream consumers, so the range ends at the highest
  offset stored (or dead-lettered): a tail the bridge never stored is not seen. It starts at
  the queue's first offset for `stream_offset: first`, else at the lowest offset stored. The
  messages of the range are read from the queue with the bridge's own source code (a stream
  read takes nothing from anybody; its acks only grant credit).
- **RabbitMQ shadow and queue routes** have no positions: a delivered and acknowledged
  message leaves no trace in RabbitMQ. Only "no Nats-Msg-Id stored twice" can be checked,
  and the count stored is reported; completeness needs the bridge's own accounting, which
  does not exist yet, and the report says so instead of guessing.

Which stored message is a route's: the streams scanned for a route are the declared streams
whose subjects can capture a subject the route produces (the dry-run's subject shapes). In
them a message is the route's when its headers name the route's source — a `Kafka-Topic` the
route reads (and, for a source with `cluster_name`, a Msg-Id with that prefix), the route's
stream queue in `Amqp-Queue`, or for shadow/queue routes AMQP metadata without a stream
offset — *and* its subject is one the route's template can produce. The subject test is what
keeps apart two routes writing into one stream. Dead letters are the route's by their
`Bridge-Dlq-Route` header and subject (`<prefix>.<service>.<route>`).

Consistency while the bridge runs: committed offsets are read *before* the streams are
scanned (a commit follows the PubAck, so everything committed is in the scan), and each
stream is scanned up to its last sequence at the start of the scan.

Memory: stored positions are counted per lane in 4096-position byte blocks (one byte per
position, counts saturate at 255), Msg-Ids as 128-bit digests; Kafka records and stream
messages are streamed, never held. Missing positions are kept as runs (`120-130, 145`).

Exit codes of `verify_command`: 0 clean; 1 something missing or doubled; 2 something could
not be checked (a broker unreachable, a stream missing, a file that does not load) — 2 wins
over 1, because a partial check cannot be called clean or complete. A position present more
than once — in the route's streams and the dead-letter stream together — is doubled wherever
it is, inside the checked range or not. A topic the route names that does not exist is a note.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiormq
import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError
from rich import box
from rich.console import Console
from rich.table import Table

from bridge.config import load_config
from bridge.config.model import (
    BridgeConfig,
    FromKafka,
    FromRabbitMQ,
    KafkaSource,
    MsgIdStrategy,
    OnError,
    RabbitMQMode,
    RabbitMQSource,
    StreamConfig,
)
from bridge.deadletters import ROUTE_HEADER, fits
from bridge.dryrun_patterns import Shape, filter_shape, intersects, route_shapes
from bridge.errors import BridgeError, ConfigError
from bridge.headers import ORIGIN_HEADER
from bridge.jetstream.checkpoints import lane_position_from_headers
from bridge.jetstream.connection import connect_nats, redact_url
from bridge.logs import config_secrets
from bridge.mapping import MSG_ID_HEADER, CompiledRoute, MappingError
from bridge.message import KafkaOrigin, SourceMessage
from bridge.routing import kafka_topic_matches
from bridge.sources.base import Lane, lane_label
from bridge.sources.kafka import default_group, kafka_client_options, kafka_message
from bridge.sources.rabbitmq import RabbitMQRouteSource
from bridge.streams import streams_capturing

RouteKind = Literal["kafka", "rabbitmq-stream", "rabbitmq-queue"]

EXIT_CLEAN = 0
EXIT_DIFFERS = 1
EXIT_UNCHECKED = 2

CONNECT_TIMEOUT = 10.0  # seconds for a broker to answer at all
FETCH_TIMEOUT = 10.0  # seconds one JetStream fetch may take
SCAN_BATCH = 2000  # headers-only messages per JetStream fetch
KAFKA_STALL = 30.0  # seconds Kafka may deliver nothing before the read counts as failed
STREAM_IDLE = 5.0  # seconds without a delivery after which a stream queue has nothing more
STREAM_STALL = 30.0  # seconds one stream-queue fetch may take (a lost connection reconnects forever)
SHOWN_RUNS = 12  # runs of positions the table shows per cell; JSON has them all

_BLOCK_BITS = 12
_BLOCK = 1 << _BLOCK_BITS
_SATURATED = 255
_NONZERO = re.compile(rb"[^\x00]")
_REPEATED = re.compile(rb"[^\x00\x01]")


# =========================================================================== pure building blocks


class PositionCounts:
    """How many copies of each position of one lane were seen.

    A dict of 4096-position byte blocks: one byte per position of a touched block, so ten
    million offsets cost about ten megabytes, where a Python set would cost hundreds. Sparse
    positions (compacted topics, a stray header) only touch the blocks they fall in. A count
    saturates at 255 ("255 or more" is plenty to call a position doubled).
    """

    __slots__ = ("_blocks", "distinct", "total")

    def __init__(self) -> None:
        self._blocks: dict[int, bytearray] = {}
        self.total = 0  # messages counted
        self.distinct = 0  # positions with at least one copy

    def add(self, position: int) -> None:
        block = self._blocks.get(position >> _BLOCK_BITS)
        if block is None:
            block = self._blocks[position >> _BLOCK_BITS] = bytearray(_BLOCK)
        index = position & (_BLOCK - 1)
        count = block[index]
        if count == 0:
            self.distinct += 1
        if count < _SATURATED:
            block[index] = count + 1
        self.total += 1

    def __getitem__(self, position: int) -> int:
        block = self._blocks.get(position >> _BLOCK_BITS)
        return 0 if block is None else block[position & (_BLOCK - 1)]

    def items(self) -> Iterator[tuple[int, int]]:
        """(position, copies) of every position seen, in position order."""
        for key in sorted(self._blocks):
            block = self._blocks[key]
            base = key << _BLOCK_BITS
            for index, count in enumerate(block):
                if count:
                    yield base + index, count

    def repeated(self) -> Iterator[tuple[int, int]]:
        """(position, copies) of every position seen more than once, in position order.

        Scans each block in C (a regex over the bytes): doubles are rare, blocks are many.
        """
        for key in sorted(self._blocks):
            block = self._blocks[key]
            base = key << _BLOCK_BITS
            for match in _REPEATED.finditer(block):
                yield base + match.start(), block[match.start()]

    def lowest(self) -> int | None:
        for key in sorted(self._blocks):
            match = _NONZERO.search(self._blocks[key])
            if match is not None:
                return (key << _BLOCK_BITS) + match.start()
        return None

    def highest(self) -> int | None:
        for key in sorted(self._blocks, reverse=True):
            used = len(self._blocks[key].rstrip(b"\0"))
            if used:
                return (key << _BLOCK_BITS) + used - 1
        return None

    def distinct_between(self, first: int, last: int) -> int:
        """Positions in [first, last] with at least one copy."""
        if first > last:
            return 0
        found = 0
        for key, block in self._blocks.items():
            base = key << _BLOCK_BITS
            if base > last or base + _BLOCK - 1 < first:
                continue
            low, high = max(first - base, 0), min(last - base, _BLOCK - 1)
            found += (high - low + 1) - block.count(0, low, high + 1)
        return found


class IdCounts:
    """How many times each Nats-Msg-Id was seen, for routes without positions.

    Keeps a 128-bit digest per id (a Python int, about a fifth of a typical id string's
    cost) and the id text only for ids seen more than once: collisions would need 2^64 ids.
    """

    __slots__ = ("_seen", "repeats", "total")

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self.repeats: dict[str, int] = {}
        self.total = 0

    def add(self, msg_id: str) -> None:
        self.total += 1
        digest = int.from_bytes(hashlib.blake2b(msg_id.encode("utf-8"), digest_size=16).digest(), "big")
        if digest in self._seen:
            self.repeats[msg_id] = self.repeats.get(msg_id, 1) + 1
        else:
            self._seen.add(digest)

    @property
    def distinct(self) -> int:
        return len(self._seen)

    def doubled(self) -> list[tuple[str, int]]:
        return sorted(self.repeats.items())


class RunBuilder:
    """Positions collected as runs of consecutive integers, in any order (ascending is cheapest)."""

    __slots__ = ("_runs", "count")

    def __init__(self) -> None:
        self._runs: list[list[int]] = []
        self.count = 0

    def add(self, position: int) -> None:
        self.count += 1
        if self._runs:
            last = self._runs[-1]
            if position == last[1] + 1:
                last[1] = position
                return
        self._runs.append([position, position])

    def runs(self) -> list[tuple[int, int]]:
        """Sorted, merged runs: adjacent or overlapping ones become one."""
        merged: list[tuple[int, int]] = []
        for first, last in sorted((run[0], run[1]) for run in self._runs):
            if merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], last))
            else:
                merged.append((first, last))
        return merged


def compress(positions: Iterable[int]) -> list[tuple[int, int]]:
    """Positions as sorted runs of consecutive integers: [120..130, 145] -> [(120, 130), (145, 145)]."""
    builder = RunBuilder()
    for position in sorted(set(positions)):
        builder.add(position)
    return builder.runs()


def format_ranges(runs: Sequence[tuple[int, int]], limit: int | None = None) -> str:
    """Runs for people: `120-130, 145`; with `limit`, the first runs and how many more."""
    shown = runs if limit is None else runs[:limit]
    text = ", ".join(str(first) if first == last else f"{first}-{last}" for first, last in shown)
    if len(shown) < len(runs):
        text += f", … (+{len(runs) - len(shown)} more)"
    return text


@dataclass(frozen=True, slots=True)
class DoubledRun:
    """Consecutive positions each present `copies` times (stream copies plus dead letters)."""

    first: int
    last: int
    copies: int

    def __str__(self) -> str:
        where = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        more = "+" if self.copies >= _SATURATED else ""
        return f"{where} x{self.copies}{more}"

    def as_json(self) -> dict[str, int]:
        return {"first": self.first, "last": self.last, "copies": self.copies}


def doubled_runs(copies: Iterable[tuple[int, int]]) -> list[DoubledRun]:
    """Runs of consecutive positions with the same count above one, from (position, copies) in order."""
    runs: list[DoubledRun] = []
    for position, count in copies:
        if count < 2:
            continue
        if runs and runs[-1].last + 1 == position and runs[-1].copies == count:
            runs[-1] = DoubledRun(runs[-1].first, position, count)
        else:
            runs.append(DoubledRun(position, position, count))
    return runs


# =========================================================================== the report


@dataclass(slots=True)
class LaneParity:
    """One lane (a Kafka `topic/partition`, a stream queue) checked over [first, last].

    Every source message of the range the route publishes or dead-letters is *expected*; each
    expected one is stored once, dead-lettered (only), missing, or doubled. `doubled` covers
    the whole lane, inside the range or not: a second copy is wrong wherever it is.
    """

    lane: str
    first: int | None = None  # None: nothing to check (see note)
    last: int | None = None
    expected: int = 0
    stored_once: int = 0
    dead_lettered: int = 0
    missing: list[tuple[int, int]] = field(default_factory=list)
    missing_count: int = 0
    doubled: list[DoubledRun] = field(default_factory=list)
    not_expected: int = 0  # source messages of the range the route does not publish (filtered, skipped)
    unmatched: int = 0  # stored positions in the range with no expected source message behind them
    outside: int = 0  # stored positions outside the range (e.g. stored, not yet committed)
    note: str | None = None

    @property
    def doubled_count(self) -> int:
        return sum(run.last - run.first + 1 for run in self.doubled)

    @property
    def range_text(self) -> str:
        return "—" if self.first is None or self.last is None else f"{self.first}-{self.last}"

    def as_json(self) -> dict[str, Any]:
        return {
            "lane": self.lane,
            "first": self.first,
            "last": self.last,
            "expected": self.expected,
            "stored_once": self.stored_once,
            "dead_lettered": self.dead_lettered,
            "missing": format_ranges(self.missing),
            "missing_count": self.missing_count,
            "missing_ranges": [list(run) for run in self.missing],
            "doubled": [run.as_json() for run in self.doubled],
            "doubled_count": self.doubled_count,
            "not_expected": self.not_expected,
            "unmatched": self.unmatched,
            "outside": self.outside,
            "note": self.note,
        }


@dataclass(slots=True)
class RouteParity:
    """One route's parity: its lanes (Kafka, stream queues) or its Msg-Ids (shadow/queue routes)."""

    route: str  # service/route
    kind: RouteKind
    streams: list[str] = field(default_factory=list)  # the streams scanned for it
    lanes: list[LaneParity] = field(default_factory=list)
    stored: int = 0  # messages of this route in its streams
    dead_lettered: int = 0  # its messages in the dead-letter stream
    doubled_ids: list[tuple[str, int]] = field(default_factory=list)  # shadow/queue routes
    distinct_ids: int = 0  # shadow/queue routes: different Msg-Ids stored or dead-lettered
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # why it could not be checked

    @property
    def note(self) -> str | None:
        return " ".join(self.notes) or None

    @property
    def missing_count(self) -> int:
        return sum(lane.missing_count for lane in self.lanes)

    @property
    def doubled_count(self) -> int:
        return sum(lane.doubled_count for lane in self.lanes) + len(self.doubled_ids)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.missing_count and not self.doubled_count

    def as_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "kind": self.kind,
            "ok": self.ok,
            "streams": self.streams,
            "stored": self.stored,
            "dead_lettered": self.dead_lettered,
            "missing_count": self.missing_count,
            "doubled_count": self.doubled_count,
            "lanes": [lane.as_json() for lane in self.lanes],
            "doubled_ids": [{"msg_id": msg_id, "copies": copies} for msg_id, copies in self.doubled_ids],
            "distinct_ids": self.distinct_ids,
            "note": self.note,
            "error": self.error,
        }


@dataclass(slots=True)
class VerifyReport:
    """Every route's parity, and what kept the check from running at all."""

    file: str = ""
    routes: list[RouteParity] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def checked(self) -> bool:
        """Everything asked for could be checked."""
        return not self.errors and all(route.error is None for route in self.routes)

    @property
    def ok(self) -> bool:
        """No missing, no doubled, no errors."""
        return self.checked and all(route.ok for route in self.routes)

    @property
    def exit_code(self) -> int:
        if not self.checked:
            return EXIT_UNCHECKED
        return EXIT_CLEAN if self.ok else EXIT_DIFFERS

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "errors": self.errors,
            "routes": [route.as_json() for route in self.routes],
        }


# =========================================================================== judging messages


@dataclass(frozen=True, slots=True)
class Expectation:
    """Whether the route publishes (or dead-letters) a source message, and why."""

    expected: bool
    reason: str


def expectation(
    route: CompiledRoute, message: SourceMessage | None, streams: Sequence[StreamConfig], max_payload: int
) -> Expectation:
    """What the running bridge does with `message`, decided with its own mapping code.

    None is a message the source filters out (`tombstones: skip`). A message that cannot go
    where the route says — unmappable, too large for `max_payload`, no declared stream
    captures its subject — is expected in the dead-letter stream with `on_error: dead-letter`,
    not expected at all with `skip`, and expected (the route stops at it, never settling past
    it) with `stop`.
    """
    subscription = route.config.from_
    if message is None or (
        isinstance(subscription, FromKafka)
        and subscription.tombstones == "skip"
        and isinstance(message.origin, KafkaOrigin)
        and message.body is None
    ):
        return Expectation(False, "filtered at the source (tombstones: skip)")
    if any(name == ORIGIN_HEADER for name, _ in message.headers):
        return Expectation(False, "written by a reverse route: never copied back")
    try:
        outbound = route.map(message)
    except MappingError as error:
        return _cannot_deliver(route, f"unmappable: {error}")
    if not fits(outbound, max_payload):
        return _cannot_deliver(route, f"larger than max_payload {max_payload}")
    if not streams_capturing(outbound.subject, streams):
        return _cannot_deliver(route, f"no declared stream captures '{outbound.subject}'")
    return Expectation(True, "published")


def _cannot_deliver(route: CompiledRoute, why: str) -> Expectation:
    on_error = route.config.on_error
    if on_error is OnError.SKIP:
        return Expectation(False, f"{why} (on_error: skip)")
    if on_error is OnError.STOP:
        return Expectation(True, f"{why} (on_error: stop: the route stops at it)")
    return Expectation(True, f"{why} (dead-lettered)")


class LaneComparer:
    """Walks a lane's source messages against what is stored, into a LaneParity.

    `copies` counts a position's messages in the route's streams *and* in the dead-letter
    stream (`dead` counts the latter alone): a record stored and also dead-lettered was
    delivered twice. Source positions must come in increasing order; a repeated or lower one
    (a client re-fetch, a stream consumer restarting at its chunk's start) is ignored.
    """

    def __init__(self, lane: str, first: int, last: int, copies: PositionCounts, dead: PositionCounts) -> None:
        self.parity = LaneParity(lane, first, last)
        self._copies = copies
        self._dead = dead
        self._missing = RunBuilder()
        self._matched = 0  # distinct source positions of the range that have a copy
        self._previous: int | None = None

    def see(self, position: int, expected: bool) -> None:
        parity = self.parity
        assert parity.first is not None
        assert parity.last is not None
        if not parity.first <= position <= parity.last:
            return
        if self._previous is not None and position <= self._previous:
            return
        self._previous = position
        copies = self._copies[position]
        if copies:
            self._matched += 1
        if not expected:
            parity.not_expected += 1
            return
        parity.expected += 1
        if copies == 0:
            self._missing.add(position)
        elif copies == 1:
            if self._dead[position]:
                parity.dead_lettered += 1
            else:
                parity.stored_once += 1

    def finish(self, note: str | None = None) -> LaneParity:
        parity = self.parity
        assert parity.first is not None
        assert parity.last is not None
        parity.missing = self._missing.runs()
        parity.missing_count = self._missing.count
        parity.doubled = doubled_runs(self._copies.repeated())
        inside = self._copies.distinct_between(parity.first, parity.last)
        parity.unmatched = inside - self._matched
        parity.outside = self._copies.distinct - inside
        parity.note = note
        return parity


def unchecked_lane(lane: str, copies: PositionCounts, note: str) -> LaneParity:
    """A lane with no range to check: what is stored is all outside, doubles still count."""
    return LaneParity(lane, outside=copies.distinct, doubled=doubled_runs(copies.repeated()), note=note)


# =========================================================================== which messages are a route's


class SubjectFit:
    """Whether a literal subject is one a route's template can produce (its dry-run shapes).

    Cached per subject: a stream holds few distinct subjects in practice ({partition}), and
    the cache is cleared when many ({key}) would make it grow without bound.
    """

    _LIMIT = 65536

    def __init__(self, shapes: Sequence[Shape]) -> None:
        self._shapes = tuple(shapes)
        self._cache: dict[str, bool] = {}

    def __call__(self, subject: str) -> bool:
        hit = self._cache.get(subject)
        if hit is None:
            literal = filter_shape(subject)
            hit = any(intersects(shape, literal) for shape in self._shapes)
            if len(self._cache) >= self._LIMIT:
                self._cache.clear()
            self._cache[subject] = hit
        return hit


@dataclass(slots=True)
class RouteCheck:
    """One route being verified: what identifies its messages, and their tallies so far."""

    route: CompiledRoute
    kind: RouteKind
    fits_subject: SubjectFit
    streams: list[str]
    dead_letter_subject: str
    queue: str | None = None  # stream queue (rabbitmq-stream) or consumed queue
    copies: dict[Lane, PositionCounts] = field(default_factory=dict)  # stream copies + dead letters
    dead: dict[Lane, PositionCounts] = field(default_factory=dict)  # dead letters alone
    ids: IdCounts = field(default_factory=IdCounts)  # rabbitmq-queue routes
    stored: int = 0
    dead_lettered: int = 0
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def key(self) -> str:
        return self.route.key

    def claim(self, subject: str, headers: Mapping[str, str]) -> tuple[Lane, int] | str | None:
        """The lane and position (Kafka, stream queue) or Msg-Id (shadow/queue) of a stored
        message when it is this route's, else None."""
        if self.kind == "rabbitmq-queue":
            if "Kafka-Topic" in headers or "Amqp-Stream-Offset" in headers or "Amqp-Routing-Key" not in headers:
                return None
            msg_id = headers.get(MSG_ID_HEADER)
            return msg_id if msg_id is not None and self.fits_subject(subject) else None
        found = self._position(headers)
        return found if found is not None and self.fits_subject(subject) else None

    def claim_dead_letter(self, subject: str, headers: Mapping[str, str]) -> tuple[Lane, int] | str | None:
        """Like `claim`, for a message of the dead-letter stream."""
        if headers.get(ROUTE_HEADER) != self.key or subject != self.dead_letter_subject:
            return None
        if self.kind == "rabbitmq-queue":
            msg_id = headers.get(MSG_ID_HEADER)
            return None if msg_id is None else msg_id.removeprefix("dlq:")
        return self._position(headers, named=True)

    def _position(self, headers: Mapping[str, str], *, named: bool = False) -> tuple[Lane, int] | None:
        """The lane and position in `headers` when they are of this route's source; `named`:
        the message names this route itself (a dead letter), so no cluster check is needed."""
        found = lane_position_from_headers(headers)
        if found is None:
            return None
        lane = found[0]
        subscription = self.route.config.from_
        if self.kind == "kafka":
            if not isinstance(lane, tuple) or not isinstance(subscription, FromKafka):
                return None
            topic = str(lane[0])
            if not kafka_topic_matches(topic, subscription.topics, subscription.topic_pattern):
                return None
            cluster = self.route.cluster_name
            offset_ids = self.route.config.msg_id in (MsgIdStrategy.AUTO.value, MsgIdStrategy.KAFKA_OFFSET.value)
            # Another cluster's records of a same-named topic carry another Msg-Id prefix.
            if cluster and offset_ids and not named and not headers.get(MSG_ID_HEADER, "").startswith(f"{cluster}/"):
                return None
            return found
        return found if lane == self.queue else None

    def count(self, claimed: tuple[Lane, int] | str, *, dead: bool) -> None:
        """Tally one message `claim` or `claim_dead_letter` gave to this route."""
        if dead:
            self.dead_lettered += 1
        else:
            self.stored += 1
        if isinstance(claimed, str):
            self.ids.add(claimed)
            return
        lane, position = claimed
        self.copies.setdefault(lane, PositionCounts()).add(position)
        if dead:
            self.dead.setdefault(lane, PositionCounts()).add(position)

    def lane_counts(self, lane: Lane) -> tuple[PositionCounts, PositionCounts]:
        return self.copies.get(lane) or PositionCounts(), self.dead.get(lane) or PositionCounts()


def route_kind(route: CompiledRoute) -> RouteKind:
    subscription = route.config.from_
    if isinstance(subscription, FromKafka):
        return "kafka"
    return "rabbitmq-stream" if subscription.effective_mode is RabbitMQMode.STREAM else "rabbitmq-queue"


def build_checks(config: BridgeConfig, service: str | None = None) -> list[RouteCheck]:
    """A RouteCheck per route (of `service`, when given), with the declared streams that can
    capture its subjects. Raises BridgeError for an unknown service."""
    if service is not None and service not in config.services:
        known = ", ".join(sorted(config.services)) or "none"
        raise BridgeError(f"no service '{service}' in the mapping file (services: {known})")
    checks: list[RouteCheck] = []
    for service_name, route_config in config.routes():
        if service is not None and service_name != service:
            continue
        source = config.sources[route_config.source]
        cluster = source.cluster_name if isinstance(source, KafkaSource) else None
        route = CompiledRoute.compile(service_name, route_config, cluster)
        shapes = [shape.shape for shape in route_shapes(service_name, route_config)]
        streams = [
            stream.name
            for stream in config.streams
            if any(intersects(shape, filter_shape(f)) for shape in shapes for f in stream.subjects)
        ]
        subscription = route_config.from_
        queue = subscription.queue if isinstance(subscription, FromRabbitMQ) else None
        check = RouteCheck(
            route=route,
            kind=route_kind(route),
            fits_subject=SubjectFit(shapes),
            streams=streams,
            dead_letter_subject=config.dead_letters.subject_for(service_name, route_config.name),
            queue=queue,
        )
        if not streams:
            check.error = "no declared stream can capture this route's subjects: nothing to compare"
        checks.append(check)
    return checks


# =========================================================================== reading JetStream


class ScanError(BridgeError):
    """A stream could not be read to its end."""


@dataclass(frozen=True, slots=True)
class StreamScan:
    """What a scan saw: the stream's sequences at its start, and how many messages it read."""

    first_seq: int
    last_seq: int
    scanned: int


async def scan_stream(
    js: JetStreamContext, stream: str, handle: Callable[[str, Mapping[str, str]], None]
) -> StreamScan:
    """Call `handle(subject, headers)` for every message of `stream` up to its last sequence now.

    An ephemeral, in-memory, headers-only consumer without acks (it changes nothing and
    vanishes on its own if this process dies). Each fetch asks for no more than remain
    (`num_pending`): a pull waits its whole timeout for a batch it cannot fill. Raises
    NotFoundError when the stream does not exist, ScanError when it stops delivering.
    """
    info = await js.stream_info(stream)
    state = info.state
    if state.messages == 0:
        return StreamScan(state.first_seq, state.last_seq, 0)
    last = state.last_seq
    config = js_api.ConsumerConfig(
        deliver_policy=js_api.DeliverPolicy.ALL,
        ack_policy=js_api.AckPolicy.NONE,
        headers_only=True,
        mem_storage=True,
        inactive_threshold=60.0,
    )
    consumer = await js.add_consumer(stream, config)
    subscription = await js.pull_subscribe_bind(durable=consumer.name, stream=stream)
    scanned = 0
    seen = 0
    pending = state.messages
    try:
        while pending > 0:
            try:
                messages = await subscription.fetch(min(SCAN_BATCH, pending), timeout=FETCH_TIMEOUT)
            except TimeoutError:
                # Only a removal of the rest of the range (limits, deletes) may end it early.
                now = (await js.stream_info(stream)).state
                if now.messages == 0 or now.first_seq > last or now.last_seq <= seen:
                    break
                raise ScanError(f"stream {stream} stopped delivering after sequence {seen} of {last}") from None
            for message in messages:
                metadata = message.metadata
                seen = metadata.sequence.stream
                if seen > last:
                    pending = 0
                    break
                scanned += 1
                handle(message.subject, message.headers or {})
                pending = 0 if seen >= last else metadata.num_pending
    finally:
        with contextlib.suppress(NatsError, TimeoutError):
            await subscription.unsubscribe()
        with contextlib.suppress(NatsError, TimeoutError):
            await js.delete_consumer(stream, consumer.name)
    return StreamScan(state.first_seq, last, scanned)


def dispatcher(checks: Sequence[RouteCheck], *, dead: bool) -> Callable[[str, Mapping[str, str]], None]:
    """A scan handler giving each message to every route that claims it."""

    def handle(subject: str, headers: Mapping[str, str]) -> None:
        for check in checks:
            claimed = check.claim_dead_letter(subject, headers) if dead else check.claim(subject, headers)
            if claimed is not None:
                check.count(claimed, dead=dead)

    return handle


# =========================================================================== reading Kafka


@dataclass(slots=True)
class _KafkaPartition:
    beginning: int
    committed: int | None  # the bridge group's next offset; None: nothing committed


class KafkaRouteReader:
    """Kafka's side of one route: committed offsets first, the records of each range later."""

    def __init__(self, check: RouteCheck, source: KafkaSource, group: str) -> None:
        self.check = check
        self.source = source
        self.group = group
        self.partitions: dict[tuple[str, int], _KafkaPartition] = {}
        self._consumer: Any = None

    async def prepare(self) -> None:
        """The group's committed offsets and the topics' partitions (admin API: no group is
        joined), then each partition's beginning.

        Called before the streams are scanned: whatever is committed is stored by then.
        """
        options = kafka_client_options(self.source, client_suffix="-verify")
        options["request_timeout_ms"] = int(CONNECT_TIMEOUT * 1000)
        admin = AIOKafkaAdminClient(**options)
        try:
            await asyncio.wait_for(admin.start(), CONNECT_TIMEOUT)
            offsets = await asyncio.wait_for(admin.list_consumer_group_offsets(self.group), CONNECT_TIMEOUT)
            # Not consumer.topics() + partitions_for_topic(): the latter reads a metadata cache
            # the former does not fill, so a topic created after the client started has none.
            described = await asyncio.wait_for(admin.describe_topics(), CONNECT_TIMEOUT)
        finally:
            with contextlib.suppress(KafkaError, OSError, TimeoutError, RuntimeError):
                await admin.close()
        committed = {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        subscription = self.check.route.config.from_
        assert isinstance(subscription, FromKafka)
        partitions = {
            str(topic["topic"]): sorted(int(p["partition"]) for p in topic["partitions"])
            for topic in described
            if topic["error_code"] == 0
        }
        absent = [topic for topic in subscription.topics if topic not in partitions]
        if absent:
            self.check.notes.append(f"topic(s) {', '.join(absent)} do not exist on the cluster.")
        tps = [
            TopicPartition(topic, partition)
            for topic in sorted(partitions)
            if kafka_topic_matches(topic, subscription.topics, subscription.topic_pattern)
            for partition in partitions[topic]
        ]
        if not tps:
            return
        consumer = AIOKafkaConsumer(
            **options,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",  # what the bridge reads
            auto_offset_reset="earliest",
        )
        self._consumer = consumer
        await asyncio.wait_for(consumer.start(), CONNECT_TIMEOUT)
        beginnings = await asyncio.wait_for(consumer.beginning_offsets(tps), CONNECT_TIMEOUT)
        for tp in tps:
            self.partitions[(tp.topic, tp.partition)] = _KafkaPartition(
                beginnings[tp], committed.get((tp.topic, tp.partition))
            )

    async def compare(self, streams: Sequence[StreamConfig], max_payload: int) -> list[LaneParity]:
        """Read each partition's range, judge every record, and compare with the tallies."""
        check = self.check
        subscription = check.route.config.from_
        assert isinstance(subscription, FromKafka)
        earliest = subscription.start == "earliest"
        lanes: dict[Lane, LaneParity] = {}
        comparers: dict[TopicPartition, LaneComparer] = {}
        for (topic, partition), info in sorted(self.partitions.items()):
            label = lane_label((topic, partition))
            copies, dead = check.lane_counts((topic, partition))
            if info.committed is None:
                lanes[(topic, partition)] = unchecked_lane(
                    label, copies, f"group {self.group} has no committed offset here: nothing is settled yet"
                )
                continue
            lowest = copies.lowest()
            if earliest:
                first, note = info.beginning, None
            elif lowest is not None:
                first = max(lowest, info.beginning)
                note = f"start: {subscription.start}: the range begins at the lowest offset stored"
            else:
                lanes[(topic, partition)] = unchecked_lane(
                    label, copies, f"nothing stored and start: {subscription.start}: the range's start is unknown"
                )
                continue
            last = info.committed - 1
            if first > last:
                lanes[(topic, partition)] = unchecked_lane(
                    label, copies, f"the group's committed offset {info.committed} is not past offset {first}"
                )
                continue
            comparer = LaneComparer(label, first, last, copies, dead)
            comparer.parity.note = note
            comparers[TopicPartition(topic, partition)] = comparer
        if comparers:
            await self._read(comparers, streams, max_payload)
            for tp, comparer in comparers.items():
                lanes[(tp.topic, tp.partition)] = comparer.finish(comparer.parity.note)
        for lane in sorted(set(check.copies) - set(self.partitions), key=lane_label):
            copies, _ = check.lane_counts(lane)
            lanes[lane] = unchecked_lane(lane_label(lane), copies, "stored, but not a partition on the cluster now")
        return [lanes[key] for key in sorted(lanes, key=_lane_order)]

    async def _read(
        self, comparers: Mapping[TopicPartition, LaneComparer], streams: Sequence[StreamConfig], max_payload: int
    ) -> None:
        consumer = self._consumer
        route = self.check.route
        consumer.assign(list(comparers))
        remaining: dict[TopicPartition, int] = {}
        for tp, comparer in comparers.items():
            assert comparer.parity.first is not None
            assert comparer.parity.last is not None
            consumer.seek(tp, comparer.parity.first)
            remaining[tp] = comparer.parity.last
        progress = time.monotonic()
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=5000)
            for tp, records in batches.items():
                comparer = comparers[tp]
                for record in records:
                    if record.offset > remaining.get(tp, -1):
                        break
                    judged = expectation(route, kafka_message(record), streams, max_payload)
                    comparer.see(record.offset, judged.expected)
                progress = time.monotonic() if records else progress
            for tp in list(remaining):
                # Transaction markers and compacted gaps have offsets but no records: go by position.
                if await consumer.position(tp) > remaining[tp]:
                    del remaining[tp]
            if remaining and time.monotonic() - progress > KAFKA_STALL:
                where = ", ".join(f"{tp.topic}/{tp.partition}" for tp in remaining)
                raise TimeoutError(f"Kafka delivered nothing for {KAFKA_STALL:g}s while reading {where}")

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            with contextlib.suppress(KafkaError, OSError, TimeoutError, RuntimeError):
                await consumer.stop()


# =========================================================================== reading a RabbitMQ stream queue


def _lane_order(lane: Lane) -> tuple[str, int]:
    """Kafka lanes by topic, then partition as a number (`t/2` before `t/10`)."""
    if isinstance(lane, tuple) and len(lane) == 2:
        return str(lane[0]), int(lane[1])
    return lane_label(lane), 0


class _NoCheckpoints:
    """The LaneOwner a read-only stream reader gives the bridge's source: nothing is stored
    by it, so the source starts where it is told (its `stream_offset`)."""

    async def lanes_assigned(self, lanes: Collection[Lane]) -> Mapping[Lane, int]:
        return {}

    async def lanes_revoked(self, lanes: Collection[Lane]) -> Mapping[Lane, int]:
        return {}


async def compare_stream_queue(
    check: RouteCheck, source: RabbitMQSource, streams: Sequence[StreamConfig], max_payload: int
) -> LaneParity:
    """Read the route's stream queue over its range with the bridge's own source code, judge
    each message, and compare with the tallies."""
    subscription = check.route.config.from_
    assert isinstance(subscription, FromRabbitMQ)
    assert check.queue is not None
    queue = check.queue
    copies, dead = check.lane_counts(queue)
    lowest, highest = copies.lowest(), copies.highest()
    if highest is None:
        return unchecked_lane(
            queue, copies, "nothing stored: RabbitMQ keeps no consumer offset, so there is no range to check"
        )
    from_first = subscription.stream_offset == "first"
    start: int | str = "first" if from_first else (lowest if lowest is not None else 0)
    reader = RabbitMQRouteSource(
        check.route.config.source, source, subscription.model_copy(update={"stream_offset": start}), queue
    )
    comparer: LaneComparer | None = None
    note = "the range ends at the highest offset stored (RabbitMQ keeps no offset for stream consumers)."
    try:
        await asyncio.wait_for(reader.start(_NoCheckpoints()), CONNECT_TIMEOUT * 2)
        idle_since = time.monotonic()
        done = False
        while not done and time.monotonic() - idle_since < STREAM_IDLE:
            batch = await asyncio.wait_for(reader.fetch(1000, 0.5), STREAM_STALL)
            if batch:
                idle_since = time.monotonic()
            for received in batch:
                position = received.position
                if isinstance(start, int) and position < start:
                    continue  # a stream consumer starts at its chunk's first message
                if position > highest:
                    done = True
                    break
                if comparer is None:
                    if isinstance(start, int) and position > start:
                        note += f" The queue no longer holds offsets {start}-{position - 1}."
                    comparer = LaneComparer(queue, position, highest, copies, dead)
                judged = expectation(check.route, received.message, streams, max_payload)
                comparer.see(position, judged.expected)
                done = position >= highest
            if batch:
                await reader.settle({queue: batch[-1].position})  # credit only: a stream keeps what is read
    finally:
        await reader.close()
    if comparer is None:
        return unchecked_lane(queue, copies, f"the stream queue delivered nothing up to offset {highest}")
    return comparer.finish(note)


# =========================================================================== the whole check


_QUEUE_NOTE = (
    "Shadow/queue routes have no positions: only that no Nats-Msg-Id is stored twice is checked. "
    "Completeness needs the bridge's own accounting of what it acknowledged, which does not exist yet."
)
_CONTENT_HASH_NOTE = (
    "Messages without an AMQP message_id get a content-hash id: two identical messages share it, "
    "so a doubled id may be two identical messages rather than one stored twice."
)


def _stream_notes(checks: Sequence[RouteCheck], scans: Mapping[str, StreamScan]) -> None:
    for check in checks:
        for name in check.streams:
            scan = scans.get(name)
            if scan is not None and scan.first_seq > 1 and check.kind != "rabbitmq-queue":
                check.notes.append(
                    f"stream {name} starts at sequence {scan.first_seq}: what its limits or deletions removed "
                    "shows as missing."
                )


async def _scan_all(js: JetStreamContext, config: BridgeConfig, checks: Sequence[RouteCheck]) -> dict[str, StreamScan]:
    """Every stream some route needs, each scanned once; then the dead-letter stream."""
    scans: dict[str, StreamScan] = {}
    names = sorted({name for check in checks if check.error is None for name in check.streams})
    for name in names:
        users = [check for check in checks if check.error is None and name in check.streams]
        try:
            scans[name] = await scan_stream(js, name, dispatcher(users, dead=False))
        except NotFoundError:
            for check in users:
                check.error = f"stream {name} does not exist on the server"
        except (ScanError, NatsError, TimeoutError) as error:
            for check in users:
                check.error = f"stream {name} could not be read: {error or type(error).__name__}"
    users = [check for check in checks if check.error is None]
    if users:
        try:
            await scan_stream(js, config.dead_letters.stream, dispatcher(users, dead=True))
        except NotFoundError:
            pass  # no dead-letter stream: nothing was ever dead-lettered
        except (ScanError, NatsError, TimeoutError) as error:
            for check in users:
                check.error = (
                    f"dead-letter stream {config.dead_letters.stream} could not be read: "
                    f"{error or type(error).__name__}"
                )
    return scans


def _parity(check: RouteCheck, lanes: list[LaneParity]) -> RouteParity:
    parity = RouteParity(
        route=check.key,
        kind=check.kind,
        streams=list(check.streams),
        lanes=lanes,
        stored=check.stored,
        dead_lettered=check.dead_lettered,
        notes=list(check.notes),
        error=check.error,
    )
    if check.kind == "rabbitmq-queue" and check.error is None:
        parity.doubled_ids = check.ids.doubled()
        parity.distinct_ids = check.ids.distinct
        parity.notes.append(_QUEUE_NOTE)
        if check.route.config.msg_id in (MsgIdStrategy.AUTO.value, MsgIdStrategy.CONTENT_HASH.value):
            parity.notes.append(_CONTENT_HASH_NOTE)
    return parity


def _error_text(error: BaseException) -> str:
    return str(error) or type(error).__name__


_BROKER_FAILURES = (BridgeError, KafkaError, aiormq.exceptions.AMQPError, NatsError, OSError, TimeoutError)


def _expected_failure(error: BaseException) -> BaseException:
    """`error` when it is a broker failure to report; anything else (a bug, a cancellation)
    is raised again, because hiding it behind "could not check" would make it harder to fix."""
    if isinstance(error, _BROKER_FAILURES):
        return error
    raise error


async def verify(config: BridgeConfig, *, service: str | None = None) -> VerifyReport:
    """Check every route (of `service`, when given) against the brokers; never raises for a
    broker problem: what could not be checked is an error in the report (exit code 2).

    Client error texts can quote a URL or a SASL exchange, so every secret value of the
    mapping file is replaced by `***` in the report's texts.
    """
    report = await _verify(config, service)
    secrets = [secret for secret in config_secrets(config) if secret]
    if secrets:
        report.errors = [_scrub(text, secrets) for text in report.errors]
        for route in report.routes:
            route.error = None if route.error is None else _scrub(route.error, secrets)
            route.notes = [_scrub(text, secrets) for text in route.notes]
    return report


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


async def _verify(config: BridgeConfig, service: str | None) -> VerifyReport:
    report = VerifyReport()
    try:
        checks = build_checks(config, service)
    except BridgeError as error:
        report.errors.append(str(error))
        return report
    urls = ", ".join(redact_url(server.get_secret_value()) for server in config.nats.servers)
    try:
        nats_config = config.nats.model_copy(update={"max_reconnect_attempts": 1})
        nc: NatsClient = await asyncio.wait_for(connect_nats(nats_config), CONNECT_TIMEOUT * 2)
    except (NatsError, OSError, TimeoutError) as error:
        report.errors.append(f"cannot connect to NATS at {urls}: {_error_text(error)}")
        return report
    readers: dict[str, KafkaRouteReader] = {}
    try:
        for check in checks:
            source = config.sources[check.route.config.source]
            subscription = check.route.config.from_
            if check.error is None and isinstance(source, KafkaSource) and isinstance(subscription, FromKafka):
                group = subscription.group or default_group(check.route.service, check.route.config.name)
                readers[check.key] = KafkaRouteReader(check, source, group)
        prepared = await asyncio.gather(*(reader.prepare() for reader in readers.values()), return_exceptions=True)
        for reader, outcome in zip(readers.values(), prepared, strict=True):
            if isinstance(outcome, BaseException):
                servers = ",".join(reader.source.bootstrap_servers)
                reader.check.error = f"Kafka at {servers}: {_error_text(_expected_failure(outcome))}"
        js = nc.jetstream(timeout=FETCH_TIMEOUT)
        scans = await _scan_all(js, config, checks)
        _stream_notes(checks, scans)
        results = await asyncio.gather(
            *(_compare(check, config, readers.get(check.key), nc.max_payload) for check in checks),
            return_exceptions=True,
        )
        for check, result in zip(checks, results, strict=True):
            if isinstance(result, BaseException):
                check.error = _error_text(_expected_failure(result))
                report.routes.append(_parity(check, []))
            else:
                report.routes.append(_parity(check, result))
    finally:
        for reader in readers.values():
            await reader.close()
        with contextlib.suppress(NatsError, OSError, TimeoutError):
            await nc.close()
    return report


async def _compare(
    check: RouteCheck, config: BridgeConfig, reader: KafkaRouteReader | None, max_payload: int
) -> list[LaneParity]:
    """The route's lanes, compared with its source (nothing to read for shadow/queue routes)."""
    if check.error is not None or check.kind == "rabbitmq-queue":
        return []
    try:
        if reader is not None:
            return await reader.compare(config.streams, max_payload)
        source = config.sources[check.route.config.source]
        assert isinstance(source, RabbitMQSource)
        return [await compare_stream_queue(check, source, config.streams, max_payload)]
    except (KafkaError, aiormq.exceptions.AMQPError, ConnectionError) as error:
        raise BridgeError(f"source '{check.route.config.source}': {_error_text(error)}") from None


# =========================================================================== output


_LANE_COLUMNS = ("lane", "range", "expected", "once", "DLQ", "missing", "doubled", "skipped", "outside")


def render(report: VerifyReport, console: Console | None = None) -> None:
    """The report for people: per route a table of its lanes (a summary line for shadow/queue
    routes), problems in red; then errors and notes, one whole line each; then a verdict.

    Columns: `once` stored exactly once, `DLQ` only dead-lettered, `missing` and `doubled`
    positions (listed below the tables), `skipped` source messages the route does not
    publish, `outside` stored positions outside the checked range.
    """
    console = console or Console(soft_wrap=False)
    for route in report.routes:
        streams = ", ".join(route.streams) or "no stream"
        title = f"{route.route} ({route.kind}) -> {streams}"
        if route.error is not None:
            console.print(f"[bold red]{title}: not checked[/]", highlight=False, soft_wrap=True)
        elif route.kind == "rabbitmq-queue":
            style = "red" if route.doubled_ids else "green"
            doubled = _shown([f"{msg_id} x{copies}" for msg_id, copies in route.doubled_ids]) or "none"
            console.print(
                f"[{style}]{title}: {route.stored} stored, {route.dead_lettered} dead-lettered, "
                f"{route.distinct_ids} distinct Msg-Ids; doubled: {doubled}[/]",
                highlight=False,
                soft_wrap=True,
            )
        else:
            console.print(_lane_table(title, route))
    for line in _remarks(report):
        console.print(line, highlight=False, soft_wrap=True)  # one line each, whole: greppable
    missing = sum(route.missing_count for route in report.routes)
    doubled_count = sum(route.doubled_count for route in report.routes)
    if report.ok:
        verdict = "[green]clean[/]: every expected message is stored exactly once"
    elif not any(route.error is None for route in report.routes):
        verdict = "[bold red]not checked[/]"
    elif not report.checked:
        verdict = f"[bold red]not fully checked[/] ({missing} missing, {doubled_count} doubled where checked)"
    else:
        verdict = f"[red]{missing} missing, {doubled_count} doubled[/]"
    summary = f"{report.file or 'verify'}: {verdict}. Nothing was published, taken or committed."
    console.print(summary, highlight=False, soft_wrap=True)


def _lane_table(title: str, route: RouteParity) -> Table:
    """Counts per lane; the positions themselves follow as whole lines (see `_remarks`), which
    a narrow terminal cannot squeeze out of sight."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for column in _LANE_COLUMNS:
        numeric = column not in ("lane", "range")
        table.add_column(column, justify="right" if numeric else "left", overflow="fold", no_wrap=numeric)
    for lane in route.lanes:
        table.add_row(
            lane.lane,
            lane.range_text,
            str(lane.expected),
            str(lane.stored_once),
            str(lane.dead_lettered),
            str(lane.missing_count),
            str(lane.doubled_count),
            str(lane.not_expected),
            str(lane.outside),
            style="red" if lane.missing_count or lane.doubled else "",
        )
    if not route.lanes:
        table.add_row("(none)", "", "", "", "", "", "", "", "", style="yellow")
    return table


def _shown(items: Sequence[str]) -> str:
    text = ", ".join(items[:SHOWN_RUNS])
    return text + (f", … (+{len(items) - SHOWN_RUNS} more)" if len(items) > SHOWN_RUNS else "")


def _remarks(report: VerifyReport) -> Iterator[str]:
    """Errors first, then each route's and lane's notes (rich markup)."""
    for error in report.errors:
        yield f"[bold red]error[/] {error}"
    for route in report.routes:
        if route.error is not None:
            yield f"[bold red]error[/] {route.route}: {route.error}"
    for route in report.routes:
        for lane in route.lanes:
            if lane.missing:
                yield f"[red]missing[/] {route.route} {lane.lane}: {format_ranges(lane.missing, SHOWN_RUNS)}"
            if lane.doubled:
                yield f"[red]doubled[/] {route.route} {lane.lane}: {_shown([str(run) for run in lane.doubled])}"
    for route in report.routes:
        for lane in route.lanes:
            if lane.note:
                yield f"[dim]note[/] {route.route} {lane.lane}: {lane.note}"
            if lane.unmatched:
                yield (
                    f"[dim]note[/] {route.route} {lane.lane}: {lane.unmatched} stored position(s) in the range "
                    "have no source message the route publishes (removed from the source since, or filtered)"
                )
        if route.note:
            yield f"[dim]note[/] {route.route}: {route.note}"


def verify_command(file: Path, service: str | None, as_json: bool) -> int:
    """`nats-bridge verify FILE [--service S] [--json]`: load, check, print; the exit code.

    0 clean, 1 missing or doubled, 2 could not check (or the file does not load).
    """
    try:
        config = load_config(file)
    except ConfigError as error:
        if as_json:
            issues = [
                {
                    "file": i.file,
                    "line": i.line,
                    "column": i.column,
                    "path": i.path,
                    "message": i.message,
                    "hint": i.hint,
                }
                for i in error.issues
            ]
            typer.echo(json.dumps({"valid": False, "errors": issues}, indent=2))
        else:
            for issue in error.issues:
                typer.echo(f"error: {issue}", err=True)
            count = len(error.issues)
            typer.echo(f"{count} error{'s' if count != 1 else ''} in {error.issues[0].file}", err=True)
        return EXIT_UNCHECKED
    report = asyncio.run(verify(config, service=service))
    report.file = str(file)
    if as_json:
        typer.echo(json.dumps(report.as_json(), indent=2))
    else:
        render(report)
    return report.exit_code
