"""Which stored message is a route's, and the tallies of what each route has stored.

The streams scanned for a route are the declared streams whose subjects can capture a subject
the route produces (the dry-run's subject shapes). In them a message is the route's when its
headers name the route's source — a `Kafka-Topic` the route reads (and, for a source with
`cluster_name`, a Msg-Id with that prefix), the route's stream queue in `Amqp-Queue`, or for
shadow/queue routes AMQP metadata without a stream offset — *and* its subject is one the
route's template can produce. The subject test is what keeps apart two routes writing into one
stream for messages stored before the bridge named the route on every message; since then a
message is the route's by its `Bridge-Route` header. Dead letters are the route's by their
`Bridge-Dlq-Route` header and subject (`<prefix>.<service>.<route>`).

Order is tallied as the messages arrive, since a scan delivers a stream in sequence order: a
lane's position stored after a higher position of that lane *in the same stream* is out of
order. Each stream is ordered on its own (a route whose subjects land in two streams orders
each separately); a second copy of a position is doubled, not also out of order; dead letters
have no order to keep (they are written when a message fails, not in position order).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bridge.config.model import BridgeConfig
from bridge.config.routes import FromKafka, FromRabbitMQ, MsgIdStrategy, RabbitMQMode
from bridge.deadletters import ROUTE_HEADER
from bridge.jetstream.checkpoints import lane_position_from_headers
from bridge.mapping import MSG_ID_HEADER, ROUTE_NAME_HEADER, CompiledRoute
from bridge.plan import compile_plan
from bridge.route_shapes import SubjectFit, route_shapes
from bridge.routing import kafka_topic_matches
from bridge.routing.shapes import filter_shape, intersects
from bridge.sources.base import Lane, lane_label
from bridge.verify.counts import IdCounts, PositionCounts
from bridge.verify.ranges import RunBuilder
from bridge.verify.report import RouteKind


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
    # Per (stream, lane): the highest position stored so far in the scan of that stream.
    recopied: int = 0  # stored copies marked Bridge-Recopied (copied again after JetStream lost them)
    highest: dict[tuple[str, Lane], int] = field(default_factory=dict, init=False, repr=False)
    # Per lane: positions whose (first) copy was stored after a higher position of the lane.
    disorder: dict[Lane, RunBuilder] = field(default_factory=dict, init=False, repr=False)

    @property
    def key(self) -> str:
        return self.route.key

    def claim(self, subject: str, headers: Mapping[str, str]) -> tuple[Lane, int] | str | None:
        """The lane and position (Kafka, stream queue) or Msg-Id (shadow/queue) of a stored
        message when it is this route's, else None."""
        named = headers.get(ROUTE_NAME_HEADER)
        if named is not None and named != self.key:
            return None  # another route's copy, whatever its subject and coordinates
        if self.kind == "rabbitmq-queue":
            if "Kafka-Topic" in headers or "Amqp-Stream-Offset" in headers or "Amqp-Routing-Key" not in headers:
                return None
            msg_id = headers.get(MSG_ID_HEADER)
            return msg_id if msg_id is not None and (named or self.fits_subject(subject)) else None
        found = self._position(headers, named=named is not None)
        return found if found is not None and (named or self.fits_subject(subject)) else None

    def claim_dead_letter(self, subject: str, headers: Mapping[str, str]) -> tuple[Lane, int] | str | None:
        """Like `claim`, for a message of the dead-letter stream."""
        if headers.get(ROUTE_HEADER) != self.key or subject != self.dead_letter_subject:
            return None
        if self.kind == "rabbitmq-queue":
            msg_id = headers.get(MSG_ID_HEADER)
            if msg_id is None:
                return None
            msg_id = msg_id.removeprefix("dlq:")
            # A dead letter's id always names the route; a template route's own ids do not.
            return msg_id.removeprefix(self.route.id_prefix) if self.route.msg_id_template else msg_id
        return self._position(headers, named=True)

    def _position(self, headers: Mapping[str, str], *, named: bool = False) -> tuple[Lane, int] | None:
        """The lane and position in `headers` when they are of this route's source; `named`:
        the message names this route itself (`Bridge-Route`, or a dead letter's route), so no
        cluster check is needed (messages stored before that header existed have none)."""
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

    def count(self, claimed: tuple[Lane, int] | str, *, dead: bool, stream: str = "", late: bool = False) -> None:
        """Tally one message `claim` or `claim_dead_letter` gave to this route.

        Messages must come in the stream's sequence order, one stream after another: `stream`
        names the one being scanned, since order is only kept within a stream (and not at all
        for dead letters). Msg-Ids (shadow/queue routes) carry no position to order by. `late`:
        the message says it was copied again after JetStream lost it (Bridge-Recopied), so it
        is stored after later records on purpose: counted, not held against the order.
        """
        if dead:
            self.dead_lettered += 1
        else:
            self.stored += 1
        if isinstance(claimed, str):
            self.ids.add(claimed)
            return
        lane, position = claimed
        copies = self.copies.setdefault(lane, PositionCounts())
        if dead:
            self.dead.setdefault(lane, PositionCounts()).add(position)
        elif late:
            self.recopied += 1
        else:
            self._order(stream, lane, position, first_copy=copies[position] == 0)
        copies.add(position)

    def _order(self, stream: str, lane: Lane, position: int, *, first_copy: bool) -> None:
        """Out of order: a first copy below the highest position of its lane stored earlier in
        this stream. A later copy is doubled, and reported as that only: counting it twice
        would make one fault two. Every copy raises the mark, doubled or not: a record stored
        after it in this stream is still stored after a higher position."""
        key = (stream, lane)
        highest = self.highest.get(key)
        if highest is None or position > highest:
            self.highest[key] = position
        elif first_copy and position < highest:
            self.disorder.setdefault(lane, RunBuilder()).add(position)

    def out_of_order(self, lane: Lane) -> list[tuple[int, int]]:
        """The lane's out-of-order positions as sorted runs (a reorder moves consecutive records)."""
        found = self.disorder.get(lane)
        return found.runs() if found is not None else []

    def out_of_order_by_label(self) -> dict[str, list[tuple[int, int]]]:
        """Every lane's out-of-order runs, by the lane's label (LaneParity names lanes by it)."""
        return {lane_label(lane): self.out_of_order(lane) for lane in self.disorder}

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
    checks: list[RouteCheck] = []
    for route in compile_plan(config).of_service(service):
        service_name, route_config = route.service, route.config
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
