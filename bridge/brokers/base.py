"""What every broker package offers the features, so status, cut-over, verify and the runner ask
one route's broker rather than switching on its config type.

    RouteBroker.source()    the route's source connector (its own group, its own queue)
    RouteBroker.backlog()   what waits at the source for the route, read from outside the bridge
    RouteBroker.retire()    remove what the bridge itself created for the route
    RouteBroker.ranges()    read the route's source by position, taking nothing (verify, repair)
    RouteBroker.legacy_position() / legacy_lag()   the legacy consumer a handoff replaces

and of one source with all the routes that read it (one connection for them all):

    SourceBroker.probe()    is it reachable, and is what each route reads there (dry-run --connect)
    SourceBroker.sample()   the traffic there now, read without taking it (dry-run --sample)
    SourceBroker.legacy()   what each route's legacy queues or topics promise (durability posture)
    SourceBroker.demo_places() / send_demo()   where `traffic` writes demo records, and writing them
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from bridge.brokers.handover import Handover
from bridge.brokers.legacy import LegacyView
from bridge.config.consumers import ReplacesConfig
from bridge.config.routes import RouteConfig
from bridge.config.services import ReverseTo
from bridge.message import SourceMessage
from bridge.sources.base import Lane, Source


@dataclass(slots=True)
class Backlog:
    """Per lane (`topic/partition`, or the queue) what waits at the source; `error` when unknown.
    `lanes` is empty and `note` says why for sources without a backlog figure (stream queues)."""

    lanes: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    note: str | None = None

    @property
    def total(self) -> int:
        return sum(self.lanes.values())


@dataclass(frozen=True, slots=True)
class ReadLimits:
    """How long a read by position waits: the caller's (verify's) limits, not the broker's.

    `seconds` for a broker to answer at all; `stall`: a Kafka read that delivers nothing this
    long has failed; `fetch_stall`: one stream-queue fetch that takes this long has failed (a
    lost connection would reconnect forever); `idle`: a stream queue silent this long has
    nothing more to deliver."""

    seconds: float
    stall: float
    fetch_stall: float
    idle: float


@dataclass(slots=True)
class HeldLane:
    """One lane of a route's source: the first position the source still holds and where the
    bridge's own consumer stands (the next position it reads); None where the source does not
    keep it (a stream queue keeps no consumer offset, and tells its beginning only by reading)."""

    beginning: int | None = None
    settled: int | None = None


@dataclass(slots=True)
class HeldLanes:
    """Every lane the route reads now, and what the broker said was not there; `settled_by`
    names whose positions `settled` are (`group nats-bridge.shop.orders`)."""

    lanes: dict[Lane, HeldLane] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    settled_by: str | None = None


class RangeRead(Protocol):
    """A route's source read by position, outside any consumer group and taking nothing from
    anybody: what verify compares with the streams and repair copies again. An async context
    manager (one client for the reads in it); broker errors are raised, for the caller to report."""

    @property
    def where(self) -> str:
        """The broker, for error texts (`Kafka at host:9092`)."""
        ...

    async def __aenter__(self) -> RangeRead: ...

    async def __aexit__(self, *exc: object) -> None: ...

    def lane(self, label: str) -> Lane:
        """The lane a report names by its label (`topic/2`, a queue)."""
        ...

    async def held(self) -> HeldLanes:
        """The route's lanes as the broker holds them now (read before the streams are scanned:
        whatever is settled then is stored by then)."""
        ...

    def read(
        self, ranges: Mapping[Lane, Sequence[tuple[int, int]]]
    ) -> AsyncIterator[tuple[Lane, int, SourceMessage | None]]:
        """(lane, position, message) of every message the source holds in the inclusive
        `(first, last)` ranges, in position order per lane."""
        ...


class RouteBroker(Protocol):
    """One route's source broker. Made by `bridge.brokers.route_broker`, the one place that looks
    at which broker a route reads."""

    @property
    def vhost(self) -> str | None:
        """The RabbitMQ vhost the route reads (None for Kafka): offline tools (`explain
        --definitions`) need it to know which vhost's messages a route sees."""
        ...

    def source(self) -> Source:
        """The route's source connector, not yet started."""
        ...

    async def backlog(self) -> Backlog:
        """Read-only, asked of the broker directly (an operator's command must not depend on a
        bridge answering, and with several instances no single one sees every lane); never
        raises for a broker problem: the Backlog's `error` says it."""
        ...

    async def retire(self, *, delete_offsets: bool) -> str:
        """Remove what the bridge created for the route and nothing of the legacy side's; one
        sentence saying what was done or kept. Never raises for a broker problem."""
        ...

    async def legacy_position(self, replaces: ReplacesConfig, *, seconds: float) -> Handover:
        """Where the legacy consumer `replaces` names stands (a group's committed offsets, a
        queue's depth and head, taken and put back), and what the bridge holds for the route:
        what a handoff plans from. Raises for a broker problem."""
        ...

    def fed_by(self, target: ReverseTo, replaces: ReplacesConfig) -> str | None:
        """Where a reverse route writing to `target` reaches the legacy consumer `replaces` names
        (the exchange the route reads, a topic the group reads), for people; None: it does not."""
        ...

    async def legacy_lag(self, replaces: ReplacesConfig) -> int | None:
        """What that legacy consumer has not processed now (None: `replaces` names none on this
        broker, or the group never committed). Raises for a broker problem."""
        ...

    def ranges(self, *, purpose: str, limits: ReadLimits, strict: bool = False) -> RangeRead:
        """A reader of the route's source by position (`purpose` names the client). `strict`: a
        range the source no longer holds raises rather than being read from the earliest
        position held (Kafka's offset reset)."""
        ...


class Level(StrEnum):
    """How much a Look matters (dry-run's severities, by the same names)."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Look:
    """One thing a broker was asked and its answer, as a report's line: `check` names what was
    asked (connect, exists, sample), `subject` about what (a source, a route, a topic)."""

    level: Level
    check: str
    subject: str
    text: str


@dataclass(frozen=True, slots=True)
class SampledMessage:
    """One message read by a sample, and where. `exact`: replay the message itself, because its
    replay record alone would lose detail (a stream offset, a Kafka record's exact headers)."""

    where: str
    message: SourceMessage
    exact: bool


@dataclass(slots=True)
class SampleRead:
    """What a sample read, and what could not be read or was left alone on purpose."""

    messages: list[SampledMessage] = field(default_factory=list)
    looks: list[Look] = field(default_factory=list)


class SourceBroker(Protocol):
    """One source of the mapping file and the routes that read it, asked over one connection.
    Made by `bridge.brokers.source_broker`. `routes` are (service, route) pairs, of any source:
    each broker takes the ones that read it. probe, sample and legacy never raise for a broker
    problem: a Look at level error (an unknown view) says it, the probe's with `scrub` applied to
    the client's own error text."""

    async def probe(
        self, routes: Sequence[tuple[str, RouteConfig]], *, seconds: float, scrub: Callable[[str], str]
    ) -> list[Look]:
        """Read-only: reachable, and does what each route reads exist (nothing is created,
        no group joined)."""
        ...

    async def sample(
        self, routes: Sequence[tuple[str, RouteConfig]], *, count: int, duration: float, seconds: float
    ) -> SampleRead:
        """Up to `count` messages of each place the routes read, taking nothing from anybody."""
        ...

    async def legacy(
        self,
        routes: Sequence[tuple[str, RouteConfig]],
        *,
        every_route: Sequence[tuple[str, RouteConfig]],
        seconds: float,
    ) -> tuple[dict[str, LegacyView], list[str]]:
        """Route label (`service/route`) -> what its legacy side promises, read-only through one
        session or admin client; and the problems worth a line of their own. `every_route` of
        the file names the bridge's own queues, never taken for legacy ones."""
        ...

    def demo_places(self, routes: Sequence[tuple[str, RouteConfig]]) -> list[str]:
        """Where `nats-bridge traffic` can write demo records that the routes then read: the
        Kafka topics named by topic lists, in route order; none on RabbitMQ (the demo writes Kafka)."""
        ...

    async def send_demo(self, place: str, count: int) -> None:
        """Write `count` demo records to `place` (creating a missing topic). Raises BridgeError."""
        ...
