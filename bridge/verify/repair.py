"""`verify --repair`: copy again what verify found missing, with the same Nats-Msg-Ids.

When JetStream loses acknowledged writes (a store rolled back, acknowledged before fsync) the
source has long been committed past them, so no bridge will read them again. Where the source
still holds them — Kafka retention, a RabbitMQ stream queue — this reads exactly the missing
positions, maps each with the route's own code (the subject, headers and Nats-Msg-Id a bridge
would have written) and publishes it. A record the route would dead-letter or skip is listed,
not published: repairing is copying, not deciding anew.

JetStream may still remember a lost message's Msg-Id (its duplicate window outlives the
message when a message is deleted, not when the store is rolled back): the PubAck then says
"duplicate" for a sequence the stream no longer holds, and the record cannot be stored under
its id until the window has passed. Such records are reported, never forced in under another
id, which would break the de-duplication every later resend relies on.

Shadow and queue routes keep nothing to replay: a consumed AMQP message is gone from RabbitMQ.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from bridge.brokers import route_broker
from bridge.config.model import BridgeConfig
from bridge.config.streams import StreamConfig
from bridge.headers import RECOPIED_HEADER
from bridge.jetstream.publish_types import InFlight, PublishFailure
from bridge.jetstream.publisher import JetStreamPublisher
from bridge.mapping import CompiledRoute
from bridge.message import OutboundMessage, SourceMessage
from bridge.verify.expect import expectation
from bridge.verify.limits import READS
from bridge.verify.ranges import format_ranges
from bridge.verify.report import VerifyReport

PUBLISH_ATTEMPTS = 5  # per record: a timeout or a refusal is retried, with the same Msg-Id
ACK_TIMEOUT = 10.0


@dataclass(slots=True)
class LaneRepair:
    """What repairing one lane did."""

    route: str
    lane: str
    missing: list[tuple[int, int]]
    republished: int = 0
    remembered: list[int] = field(default_factory=list)  # JetStream still holds the id, not the message
    not_republished: list[tuple[int, str]] = field(default_factory=list)  # (position, why)
    unreadable: list[tuple[int, int]] = field(default_factory=list)  # no longer held by the source
    failed: list[tuple[int, str]] = field(default_factory=list)  # publishes that never succeeded

    def as_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "lane": self.lane,
            "missing": format_ranges(self.missing),
            "republished": self.republished,
            "id_still_remembered": self.remembered,
            "not_republished": [{"position": p, "why": why} for p, why in self.not_republished],
            "no_longer_at_the_source": format_ranges(self.unreadable),
            "failed": [{"position": p, "error": error} for p, error in self.failed],
        }

    def lines(self) -> Iterator[str]:
        yield (
            f"repaired {self.route} {self.lane}: {self.republished} of the missing {format_ranges(self.missing)} "
            "copied again"
        )
        if self.remembered:
            shown = ", ".join(map(str, self.remembered[:20]))
            yield (
                f"  not stored yet {self.route} {self.lane}: {shown}: JetStream still remembers their Msg-Ids "
                "(duplicate window); run --repair again once the window has passed"
            )
        for position, why in self.not_republished[:20]:
            yield f"  not copied {self.route} {self.lane} {position}: {why}"
        if self.unreadable:
            yield (
                f"  lost for good {self.route} {self.lane}: {format_ranges(self.unreadable)}: "
                "the source no longer holds them"
            )
        for position, error in self.failed[:20]:
            yield f"  failed {self.route} {self.lane} {position}: {error}"


@dataclass(slots=True)
class RepairReport:
    lanes: list[LaneRepair] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"lanes": [lane.as_json() for lane in self.lanes], "notes": self.notes}


class _Collector:
    """The PublishOwner of a repair: each attempt's outcome, by position."""

    def __init__(self) -> None:
        self.outcomes: dict[int, tuple[int, bool] | PublishFailure] = {}
        self.done = asyncio.Event()
        self.waiting = 0

    def sendable(self, entry: InFlight) -> bool:
        return True

    def published(self, entry: InFlight, seq: int, duplicate: bool) -> None:
        self.outcomes[entry.position] = (seq, duplicate)
        self._one_less()

    def failed(self, entry: InFlight, failure: PublishFailure) -> None:
        self.outcomes[entry.position] = failure
        self._one_less()

    def _one_less(self) -> None:
        self.waiting -= 1
        if self.waiting <= 0:
            self.done.set()


async def repair(
    config: BridgeConfig, report: VerifyReport, routes: Sequence[CompiledRoute], nc: NatsClient
) -> RepairReport:
    """Copy again every missing position of `report` that the source still holds."""
    result = RepairReport()
    by_key = {route.key: route for route in routes}
    async with JetStreamPublisher(nc, ack_timeout=ACK_TIMEOUT) as publisher:
        for parity in report.routes:
            route = by_key.get(parity.route)
            if route is None or parity.error is not None:
                continue
            if parity.kind == "rabbitmq-queue":
                result.notes.append(
                    f"{parity.route}: a queue route cannot be repaired: RabbitMQ keeps nothing of a consumed "
                    "message to copy again, and which ones were lost cannot be named from the broker"
                )
                continue
            for lane in parity.lanes:
                if not lane.missing:
                    continue
                fixed = LaneRepair(parity.route, lane.lane, list(lane.missing))
                records = await _read_missing(config, route, lane.lane, lane.missing)
                await _republish(config.streams, route, records, fixed, publisher, nc)
                result.lanes.append(fixed)
    return result


async def _read_missing(
    config: BridgeConfig, route: CompiledRoute, lane: str, missing: list[tuple[int, int]]
) -> dict[int, SourceMessage | None]:
    """The source's messages at the missing positions (None: filtered by the source), read by
    the route's broker; a range Kafka no longer holds raises rather than reading another."""
    broker = route_broker(config, route.service, route.config)
    found: dict[int, SourceMessage | None] = {}
    async with broker.ranges(purpose="repair", limits=READS, strict=True) as reader:
        async for _, position, message in reader.read({reader.lane(lane): missing}):
            found[position] = message
    return found


def _to_send(
    streams: Sequence[StreamConfig],
    route: CompiledRoute,
    records: dict[int, SourceMessage | None],
    fixed: LaneRepair,
    max_payload: int,
) -> dict[int, OutboundMessage]:
    """The missing positions the route publishes, mapped; the rest noted in `fixed`."""
    to_send: dict[int, OutboundMessage] = {}
    for first, last in fixed.missing:
        absent_from = None
        for position in range(first, last + 1):
            if position not in records:
                absent_from = position if absent_from is None else absent_from
                continue
            if absent_from is not None:
                fixed.unreadable.append((absent_from, position - 1))
                absent_from = None
            judged = expectation(route, records[position], streams, max_payload)
            message = records[position]
            if not judged.expected or judged.reason != "published" or message is None:
                fixed.not_republished.append((position, judged.reason))
                continue
            outbound = route.map(message)
            headers = {**outbound.headers, RECOPIED_HEADER: "repair"}
            to_send[position] = dataclasses.replace(outbound, headers=headers)
        if absent_from is not None:
            fixed.unreadable.append((absent_from, last))
    return to_send


async def _republish(
    streams: Sequence[StreamConfig],
    route: CompiledRoute,
    records: dict[int, SourceMessage | None],
    fixed: LaneRepair,
    publisher: JetStreamPublisher,
    nc: NatsClient,
) -> None:
    to_send = _to_send(streams, route, records, fixed, publisher.max_payload)
    attempts = 0
    while to_send and attempts < PUBLISH_ATTEMPTS:
        attempts += 1
        collector = _Collector()
        collector.waiting = len(to_send)
        entries = [InFlight(outbound, collector, position) for position, outbound in sorted(to_send.items())]
        await publisher.publish(entries)
        await collector.done.wait()
        sent = {entry.position: entry for entry in entries}
        for position, outcome in collector.outcomes.items():
            if isinstance(outcome, PublishFailure):
                if outcome.permanent or attempts == PUBLISH_ATTEMPTS:
                    fixed.failed.append((position, str(outcome)))
                    del to_send[position]
                continue
            seq, duplicate = outcome
            del to_send[position]
            if not duplicate:
                fixed.republished += 1
            elif not await _holds(nc, sent[position].stream, seq):
                fixed.remembered.append(position)
            # else: stored meanwhile (a running bridge copied it), nothing left to do
        if to_send:
            await asyncio.sleep(1)


async def _holds(nc: NatsClient, stream: str, seq: int) -> bool:
    """Whether `stream` still holds sequence `seq` (a duplicate PubAck names the original's)."""
    if not stream:
        return False
    try:
        await nc.jetstream().get_msg(stream, seq)
    except NotFoundError:
        return False
    except (NatsError, TimeoutError):
        return True  # unknown: do not claim it lost
    return True
