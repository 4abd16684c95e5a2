"""The checker: read every stream back and hold each route to what README.md's "Guarantees" promise.

Per route, against the truth of its source (Kafka topics and stream queues as read back after the
run, RabbitMQ exchanges as the producer's confirms say):

- every source message stored exactly once: by position where there is one (Kafka partition and
  offset, stream-queue offset, from the `Kafka-*` / `Amqp-Stream-Offset` headers) and by content
  (the body names its source and sequence number) — `lost`, `doubled`, and `misplaced` when the two
  disagree (a copy stored under another message's position);
- per-lane order where it is promised (Kafka partitions, stream queues, a shadow queue read by one
  instance): in stream order, the first copies of a lane's messages are in source order. README
  names one exception for pipelined routes — JetStream refusing a message's first attempt while
  storing the next (a full `discard: new` stream getting room, a 503 while a clustered stream
  changes leader) — so for a pipelined route exposed to such a fault an inversion is reported as
  `allowed out of order`, not as a failure; `ordering: strict` and `batched` routes get no such allowance.
  A message marked `Bridge-Recopied` was copied again after JetStream lost it (a NATS store rolled
  back): it lands after later records of its lane on purpose, so, as `nats-bridge verify` does, it
  is counted (lost and doubled stay strict) but not held to the order, and raises no lane's mark
  (one so marked that no later record of its lane precedes is shown, as `recopied not late`: it
  was not held to the order either, though it needed no exemption);
- dead letters counted and explained: the messages produced to be unmappable are in the
  dead-letter stream once each with `Bridge-Dlq-Reason: unmappable` and their route in
  `Bridge-Dlq-Route`; any other dead letter is `unexplained`;
- nothing foreign: a route stores only its own source's messages (for topology f: never a record
  its reverse route wrote back, an *echo*).

Which route stored a message: its `Bridge-Route` header (`service/route`) when it has one, else the
route whose subject prefix it carries; a message whose header and subject disagree is `misrouted`.

The reverse route of topology f is held to its own promise (README "cut-over"; bridge/reverse/route.py):
every message published to NATS reaches the legacy topic at least once, marked as the bridge's;
a duplicate on the legacy side is allowed (a confirm that came back and an ack that did not) and
reported as such.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError, ServiceUnavailableError

from bridge.deadletters import ERROR_HEADER as DLQ_ERROR_HEADER
from bridge.deadletters import REASON_HEADER as DLQ_REASON_HEADER
from bridge.deadletters import ROUTE_HEADER as DLQ_ROUTE_HEADER
from bridge.deadletters import DeadLetterReason
from bridge.headers import ORIGIN_HEADER, RECOPIED_HEADER
from bridge.mapping import ROUTE_NAME_HEADER as ROUTE_HEADER

from .topologies import Built, ReverseSpec, RouteSpec
from .traffic import Content, KafkaRecord, parse_body

EXAMPLES = 5  # examples shown per kind of problem


@dataclass(frozen=True)
class Stored:
    """One message read back from a stream."""

    seq: int
    subject: str
    headers: Mapping[str, str]
    content: Content | None

    @property
    def position(self) -> tuple[str, int] | None:
        """(lane, offset) from the bridge's headers: a Kafka partition or a stream queue."""
        headers = self.headers
        if "Kafka-Offset" in headers and "Kafka-Partition" in headers:
            return f"p{headers['Kafka-Partition']}", int(headers["Kafka-Offset"])
        if "Amqp-Stream-Offset" in headers:
            return "queue", int(headers["Amqp-Stream-Offset"])
        return None

    @property
    def recopied(self) -> bool:
        """Copied again after JetStream lost the first copy (`Bridge-Recopied`): late on purpose."""
        return RECOPIED_HEADER in self.headers

    def describe(self) -> str:
        what = self.content.key if self.content else "unparsable body"
        position = self.position
        where = f" {position[0]}@{position[1]}" if position else ""
        return f"seq {self.seq}{where} ({what})"


@dataclass(frozen=True)
class Expected:
    """One source message a route must store (or dead-letter) exactly once."""

    content: str  # Content.key
    lane: str  # "p<partition>" or "queue"
    order: int  # its place in the lane: offset, or the producer's sequence number for a shadow queue
    position: int | None  # Kafka or stream-queue offset; None for shadow queues (no stable position)
    dead_letter: bool = False  # produced unmappable: belongs in the dead-letter stream
    optional: bool = False  # published but never confirmed: stored once, or not at all
    order_exempt: bool = False  # republished after a nack, behind later messages: no order to keep

    def label(self) -> str:
        where = f"{self.lane}@{self.position}" if self.position is not None else f"{self.lane} #{self.order}"
        return f"{where} ({self.content})"


async def read_stream(js: JetStreamContext, stream: str, *, batch: int = 1000) -> list[Stored]:
    """Every message of the stream, in sequence order (empty if the stream does not exist); read
    again from the start while a just-restarted server is still choosing leaders ("service
    unavailable" to a consumer create): the stream is what is checked, not how soon it is served."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return await _read_stream_once(js, stream, batch)
        except (ServiceUnavailableError, NatsTimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)


async def _read_stream_once(js: JetStreamContext, stream: str, batch: int) -> list[Stored]:
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return []
    last = info.state.last_seq
    found: list[Stored] = []
    if info.state.messages == 0:
        return found
    config = js_api.ConsumerConfig(ack_policy=js_api.AckPolicy.NONE, deliver_policy=js_api.DeliverPolicy.ALL)
    subscription = await js.pull_subscribe("", stream=stream, config=config)
    try:
        while not found or found[-1].seq < last:
            for message in await subscription.fetch(batch, timeout=20):
                metadata = message.metadata
                found.append(
                    Stored(
                        metadata.sequence.stream, message.subject, dict(message.headers or {}), parse_body(message.data)
                    )
                )
    finally:
        with contextlib.suppress(NatsError):  # a server still electing may not answer this either
            await subscription.unsubscribe()
    return found


@dataclass
class Finding:
    """A kind of problem in one route: how many, and a few examples."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str, count: int = 1) -> None:
        self.count += count
        if len(self.examples) < EXAMPLES:
            self.examples.append(example)

    def text(self, what: str) -> str:
        return f"{self.count} {what}: " + "; ".join(self.examples) + (" ..." if self.count > len(self.examples) else "")


FAILING = ("lost", "doubled", "out_of_order", "misplaced", "unexplained_dead_letters", "foreign", "misrouted")
ALLOWED = ("allowed_out_of_order", "allowed_doubled", "pending", "recopied_not_late")


@dataclass
class RouteResult:
    """What the checker found for one route (or topology f's reverse route)."""

    topology: str
    route: str
    kind: str
    expected: int = 0
    stored: int = 0
    dead_lettered: int = 0
    recopied: int = 0  # stored messages marked Bridge-Recopied (not held to the order)
    order_note: str = ""  # why order is not promised here, or which README exception applies
    lost: Finding = field(default_factory=Finding)
    doubled: Finding = field(default_factory=Finding)
    out_of_order: Finding = field(default_factory=Finding)
    misplaced: Finding = field(default_factory=Finding)
    unexplained_dead_letters: Finding = field(default_factory=Finding)
    foreign: Finding = field(default_factory=Finding)
    misrouted: Finding = field(default_factory=Finding)
    allowed_out_of_order: Finding = field(default_factory=Finding)
    allowed_doubled: Finding = field(default_factory=Finding)
    pending: Finding = field(default_factory=Finding)  # reverse: not written yet, still held by its consumer
    recopied_not_late: Finding = field(default_factory=Finding)  # marked Bridge-Recopied, yet stored in order

    @property
    def failed(self) -> bool:
        return any(getattr(self, name).count for name in FAILING)

    def summary(self) -> str:
        state = "FAIL" if self.failed else "ok"
        line = (
            f"[{state}] {self.topology} {self.route} ({self.kind}): expected {self.expected}, stored {self.stored}, "
            f"dead letters {self.dead_lettered}; lost {self.lost.count}, doubled {self.doubled.count}, "
            f"out of order {self.out_of_order.count}"
        )
        if self.recopied:
            line += f"; {self.recopied} re-copied after JetStream lost them (Bridge-Recopied, not held to the order)"
        if self.order_note:
            line += f" [{self.order_note}]"
        details = [
            getattr(self, name).text(name.replace("_", " "))
            for name in (*FAILING, *ALLOWED)
            if getattr(self, name).count
        ]
        return "\n    ".join([line, *details])


# --------------------------------------------------------------------------- attribution


def attribute(built: Built, stored: Iterable[Stored]) -> tuple[dict[str, list[Stored]], list[str]]:
    """Messages by the route (or NATS source) that stored them; plus problems: messages no route
    claims, and messages whose Bridge-Route header and subject name different routes."""
    prefixes = {route.subject_prefix + ".": route.key for route in built.routes}
    prefixes.update({s.target + ".": s.name for s in built.sources if s.kind == "nats"})
    keys = {route.key for route in built.routes}
    found: dict[str, list[Stored]] = defaultdict(list)
    problems: list[str] = []
    for message in stored:
        by_subject = next((key for prefix, key in prefixes.items() if message.subject.startswith(prefix)), None)
        named = message.headers.get(ROUTE_HEADER)
        if named is not None and named in keys:
            if by_subject is not None and by_subject != named:
                problems.append(f"misrouted: {message.describe()} on {message.subject} says {ROUTE_HEADER}: {named}")
            found[named].append(message)
        elif by_subject is not None:
            found[by_subject].append(message)
        else:
            problems.append(f"unclaimed: {message.describe()} on {message.subject} ({ROUTE_HEADER}: {named})")
    return found, problems


# --------------------------------------------------------------------------- one route


def check_route(
    built: Built,
    route: RouteSpec,
    expected: list[Expected],
    stored: list[Stored],
    dead: list[Stored],
    *,
    order_exception: str | None,
) -> RouteResult:
    """Hold one route's stored messages and dead letters to its source's `expected` messages."""
    result = RouteResult(built.letter, route.key, route.kind)
    main = [e for e in expected if not e.dead_letter]
    result.expected = len(expected)
    result.stored = len(stored)
    result.recopied = sum(message.recopied for message in stored)
    if route.kind != "shadow":
        _check_positions(result, main, stored)
    _check_contents(result, main, stored, by_position=route.kind != "shadow")
    _check_dead_letters(result, route, [e for e in expected if e.dead_letter], dead)
    if not route.ordered:
        result.order_note = "order not promised: several instances compete for one queue"
    else:
        if order_exception and route.ordering == "pipelined":
            result.order_note = f"pipelined route under {order_exception}: README allows a reorder"
        _check_order(result, route, main, stored, allowed=bool(result.order_note))
    return result


def _check_positions(result: RouteResult, main: list[Expected], stored: list[Stored]) -> None:
    wanted = {(e.lane, e.position): e for e in main if e.position is not None}
    copies: dict[tuple[str, int], list[Stored]] = defaultdict(list)
    for message in stored:
        position = message.position
        if position is None:
            result.misplaced.add(f"{message.describe()} has no position headers")
        else:
            copies[position].append(message)
    for key, expectation in sorted(wanted.items()):
        if key not in copies and not expectation.optional:
            result.lost.add(expectation.label())
    for key, found in sorted(copies.items()):
        want = wanted.get(key)
        if want is None:
            result.foreign.add(f"{key[0]}@{key[1]}: not expected in the stream ({found[0].describe()})", len(found))
            continue
        if len(found) > 1:
            result.doubled.add(f"{want.label()} at seqs {[m.seq for m in found]}", len(found) - 1)
        for message in found:
            if message.content is None or message.content.key != want.content:
                result.misplaced.add(f"{message.describe()} stored as {want.label()}")


def _check_contents(result: RouteResult, main: list[Expected], stored: list[Stored], *, by_position: bool) -> None:
    """Each produced message stored as often as the source holds it. Where positions were checked,
    their counts stand (they are exact) and content only adds what positions cannot see."""
    wanted = Counter(e.content for e in main if not e.optional)
    maybe = Counter(e.content for e in main if e.optional)
    got: Counter[str] = Counter()
    seqs: dict[str, list[int]] = defaultdict(list)
    for message in stored:
        if message.content is None:
            result.foreign.add(f"{message.describe()}: body is not the traffic's")
            continue
        got[message.content.key] += 1
        seqs[message.content.key].append(message.seq)
    lost = Finding()
    doubled = Finding()
    for content, count in sorted(wanted.items()):
        if got[content] < count:
            lost.add(f"{content} ({got[content]} of {count})", count - got[content])
    for content, count in sorted(got.items()):
        allowed = wanted[content] + maybe[content]
        if allowed == 0:
            if not by_position:  # by position it is already `foreign`
                result.foreign.add(f"{content} at seqs {seqs[content]}: not produced to this route's source", count)
        elif count > allowed:
            doubled.add(f"{content} at seqs {seqs[content]}", count - allowed)
    if by_position:
        if lost.count > result.lost.count:
            result.misplaced.add(f"by content {lost.text('lost')}, by position {result.lost.count}")
        if doubled.count > result.doubled.count:
            result.misplaced.add(f"by content {doubled.text('doubled')}, by position {result.doubled.count}")
        return
    result.lost = lost
    result.doubled = doubled


def _check_dead_letters(result: RouteResult, route: RouteSpec, wanted: list[Expected], dead: list[Stored]) -> None:
    mine = [d for d in dead if d.headers.get(DLQ_ROUTE_HEADER) == route.key]
    result.dead_lettered = len(mine)
    expected = {e.content: e for e in wanted}
    got: dict[str, list[Stored]] = defaultdict(list)
    for letter in mine:
        reason = letter.headers.get(DLQ_REASON_HEADER, "?")
        key = letter.content.key if letter.content else None
        if key is None or key not in expected or reason != DeadLetterReason.UNMAPPABLE.value:
            error = letter.headers.get(DLQ_ERROR_HEADER, "")
            result.unexplained_dead_letters.add(f"{letter.describe()} reason {reason}: {error[:160]}")
            continue
        got[key].append(letter)
    for key, expectation in sorted(expected.items()):
        copies = got.get(key, [])
        if not copies and not expectation.optional:
            result.lost.add(f"dead letter {expectation.label()}")
        elif len(copies) > 1:
            result.doubled.add(f"dead letter {expectation.label()} at seqs {[c.seq for c in copies]}", len(copies) - 1)


def _check_order(
    result: RouteResult, route: RouteSpec, main: list[Expected], stored: list[Stored], *, allowed: bool
) -> None:
    """In stream order, the first copy of each message of a lane comes after those before it."""
    exempt = {e.content for e in main if e.order_exempt}
    findings = result.allowed_out_of_order if allowed else result.out_of_order
    seen: set[tuple[str, int]] = set()
    highest: dict[str, tuple[int, Stored]] = {}
    for message in stored:
        if route.kind == "shadow":
            if message.content is None or message.content.key in exempt:
                continue
            lane, order = "queue", message.content.n
        else:
            position = message.position
            if position is None:
                continue
            lane, order = position
        if (lane, order) in seen:
            continue  # a later copy: counted as doubled, not as disorder
        seen.add((lane, order))
        top = highest.get(lane)
        if message.recopied:
            # Copied again after JetStream lost it: after later records on purpose, no mark raised.
            if top is None or order > top[0]:
                unit = "#" if route.kind == "shadow" else "offset "
                result.recopied_not_late.add(f"{lane}: {unit}{order} (seq {message.seq})")
            continue
        if top is not None and order < top[0]:
            unit = "#" if route.kind == "shadow" else "offset "
            findings.add(f"{lane}: {unit}{order} (seq {message.seq}) stored after {unit}{top[0]} (seq {top[1].seq})")
        else:
            highest[lane] = (order, message)


# --------------------------------------------------------------------------- the reverse route


def check_reverse(
    built: Built, spec: ReverseSpec, published: list[Stored], topic: list[KafkaRecord], acked_up_to: int
) -> RouteResult:
    """Every message NATS producers published reaches the topic, marked, at least once; nothing the
    forward route stored is written back. A message not written whose stream sequence is above the
    durable consumer's ack floor (`acked_up_to`) is still held by JetStream for redelivery: late,
    not lost (reported as `pending`); one at or below it was acknowledged unwritten: lost."""
    result = RouteResult(built.letter, spec.key, "reverse")
    result.order_note = "order not promised for reverse writes after a failed batch"
    wanted = {m.content.key: m for m in published if m.content is not None}
    result.expected = len(wanted)
    written: dict[str, list[KafkaRecord]] = defaultdict(list)
    for record in topic:
        if record.header(ORIGIN_HEADER) is None:
            continue
        content = parse_body(record.value)
        if content is None or content.src != spec.nats_source:
            result.foreign.add(f"p{record.partition}@{record.offset}: echo of {content.key if content else '?'}")
            continue
        written[content.key].append(record)
    result.stored = sum(len(records) for records in written.values())
    for key in sorted(wanted):
        records = written.get(key, [])
        if not records and wanted[key].seq > acked_up_to:
            result.pending.add(f"{key} (stream seq {wanted[key].seq}, ack floor {acked_up_to}) not written yet")
        elif not records:
            result.lost.add(f"{key} (stream seq {wanted[key].seq}) acknowledged but never written to the topic")
        elif len(records) > 1:
            offsets = [f"p{r.partition}@{r.offset}" for r in records]
            result.allowed_doubled.add(f"{key} written {len(records)} times: {offsets}", len(records) - 1)
    for key in sorted(set(written) - set(wanted)):
        result.foreign.add(f"{key}: written to the topic but not in the stream")
    return result
