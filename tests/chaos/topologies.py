"""The topologies fault schedules run: each a mapping file generated for one run, with what the
checker needs to know about its sources and routes.

(a) Two services, each with its own consumer group, read the same Kafka topic into ONE stream on
    different subjects (`<p>.a.{partition}`, `<p>.b.{partition}`). Risk: the two copies of a record
    share a Msg-Id (JetStream de-duplicates per stream), or a checkpoint scan takes one route's
    copy for the other's.
(b) Two Kafka clusters with the same topic name into one stream, a route per cluster
    (`cluster_name` set or not, per seed). Risk: as (a), equal topic/partition/offset on both sides.
(c) A Kafka topic and a RabbitMQ exchange (shadow route, producers set `message_id`) into one
    stream; every 25th message lacks the header its subject template needs and must be
    dead-lettered (`unmappable`) exactly once. Risk: dead letters lost, doubled or unexplained.
(d) A RabbitMQ shadow route (quorum queue) over producers that set NO message_id: Msg-Ids are
    content hashes. Risk: a redelivery that hashes differently (`x-delivery-count`) stored twice.
(e) A RabbitMQ stream queue read by a stream route (Msg-Id `<queue>/<offset>`, checkpoints).
    Risk: resuming at the wrong offset after a restart.
(f) A Kafka service in phase `drain` with a reverse route that writes what producers publish to
    NATS back into the same topic. Risk: reverse-written records copied forward again (echo),
    reverse writes lost, forward guarantees broken by the reverse traffic.

Every topology's routes share one stream `CH<RUN>_<X>` (subjects `ch<run>.<x>.>`) and a dead-letter
stream of its own (`CH<RUN>_<X>_DLQ`, subjects `chdlq<run>.<x>.>`), so runs never share anything.

Where a topology's streams live (`TopologyPlan.nats`): the shared single NATS server (R1), the
shared 3-node cluster (R3), or `private`: a nats-server of the schedule's own (R1,
tests/private_nats.py), whose store the `nats-store-rollback` fault restores from an earlier copy.
Only Kafka-only topologies (`KAFKA_ONLY`: a, b) go there: Kafka keeps what the bridge must copy
again, a RabbitMQ queue does not (what it delivered and the bridge settled is gone from it).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Literal

from .brokers import Brokers

RouteKind = Literal["kafka", "shadow", "stream"]
NatsTarget = Literal["single", "cluster", "private"]
LETTERS = "abcdef"
KAFKA_ONLY = "ab"  # topologies whose sources can all replay: the only ones a NATS store rollback may hit
DEAD_LETTER_EVERY = 25  # topology c: every 25th message cannot be mapped
KAFKA_PARTITIONS = 3


@dataclass(frozen=True)
class TopologyPlan:
    """What a schedule chose for one topology."""

    letter: str
    instances: int  # bridge processes running the mapping file
    nats: NatsTarget
    duplicate_window: str  # the stream's; "2m", or short ("10s") to make Kafka and stream routes lean on checkpoints
    ordering: Literal["pipelined", "strict", "batched"]
    cluster_names: bool = True  # topology b: set `cluster_name` on both Kafka sources

    def describe(self) -> str:
        extra = f", cluster_name {'set' if self.cluster_names else 'unset'}" if self.letter == "b" else ""
        return (
            f"{self.letter}: {self.instances} instance(s), NATS {self.nats}, window {self.duplicate_window}, "
            f"ordering {self.ordering}{extra}"
        )


@dataclass(frozen=True)
class SourceSpec:
    """A source traffic is produced into; `name` is also the `src` in every body."""

    name: str
    kind: Literal["kafka", "amqp", "nats"]
    broker: str  # kafka-a | kafka-b | rabbitmq | nats
    target: str  # Kafka topic | AMQP exchange | NATS subject prefix
    partitions: int = 1
    stream_queue: str | None = None  # AMQP: a stream queue bound to the exchange (its read-back is the truth)
    message_id: bool = False
    dead_letter_every: int = 0  # every Nth message lacks the `kind` header its route's subject needs
    routing_keys: tuple[str, ...] = ("ev",)

    def dead_letter(self, n: int) -> bool:
        return bool(self.dead_letter_every) and n % self.dead_letter_every == self.dead_letter_every - 1


@dataclass(frozen=True)
class RouteSpec:
    """A forward route as the checker sees it."""

    key: str  # service/route, as `Bridge-Route` and `Bridge-Dlq-Route` name it
    subject_prefix: str  # every subject it stores starts with this and a "."
    kind: RouteKind
    source: str  # SourceSpec.name
    ordered: bool  # README promises per-lane order here (Kafka partition, stream queue, one-consumer queue)
    ordering: Literal["pipelined", "strict", "batched"]


@dataclass(frozen=True)
class ReverseSpec:
    """Topology f's reverse route: what NATS producers publish must reach the Kafka topic."""

    key: str
    durable: str
    nats_source: str  # SourceSpec.name of the NATS producer
    kafka_source: str  # SourceSpec.name of the topic it writes into


@dataclass
class Built:
    """One topology, ready to run: its mapping file's text and what the checker needs."""

    letter: str
    title: str
    plan: TopologyPlan
    mapping: str
    stream: str
    dlq_stream: str
    nats_servers: list[str]
    sources: list[SourceSpec]
    routes: list[RouteSpec]
    services: list[str]
    shadow_queues: list[str] = field(default_factory=list)  # the bridge declares them; traffic waits for them
    reverse: ReverseSpec | None = None
    drain_service: str | None = None  # moved to phase drain before the bridges start

    @property
    def on_cluster(self) -> bool:
        return self.plan.nats == "cluster"

    def brokers(self) -> set[str]:
        return {source.broker for source in self.sources} - {"nats"}

    def route(self, key: str) -> RouteSpec:
        return next(route for route in self.routes if route.key == key)

    def source(self, name: str) -> SourceSpec:
        return next(source for source in self.sources if source.name == name)


TITLES = {
    "a": "two routes, one Kafka topic, one stream",
    "b": "two Kafka clusters, one topic name, one stream",
    "c": "a Kafka topic and a RabbitMQ exchange into one stream, with dead letters",
    "d": "RabbitMQ shadow route (quorum queue), producers without message_id",
    "e": "RabbitMQ stream queue",
    "f": "Kafka service in phase drain with a reverse route",
}
MAX_INSTANCES = {"a": 3, "b": 3, "c": 2, "d": 2, "e": 1, "f": 2}
BROKERS = {
    "a": {"kafka-a"},
    "b": {"kafka-a", "kafka-b"},
    "c": {"kafka-a", "rabbitmq"},
    "d": {"rabbitmq"},
    "e": {"rabbitmq"},
    "f": {"kafka-a"},
}


@dataclass(frozen=True)
class Addresses:
    """Where one schedule's sources are."""

    brokers: Brokers
    kafka: dict[str, str]  # kafka-a / kafka-b -> bootstrap
    amqp_url: str  # the schedule's vhost on the private RabbitMQ
    private_nats: str = ""  # the schedule's own nats-server, when a plan is on "private"


def build(letter: str, plan: TopologyPlan, run: str, where: Addresses) -> Built:
    """The topology `letter` for run `run` (a short lowercase id) as `plan` says."""
    p = f"ch{run}.{letter}"
    stream = f"CH{run.upper()}_{letter.upper()}"
    if plan.nats == "cluster":
        assert where.brokers.cluster is not None, "a cluster topology needs the NATS cluster"
        servers = list(where.brokers.cluster.urls)
    elif plan.nats == "private":
        assert where.private_nats, "a private topology needs the schedule's own nats-server"
        assert letter in KAFKA_ONLY, f"topology {letter} cannot run on the private server (only {KAFKA_ONLY})"
        servers = [where.private_nats]
    else:
        servers = [where.brokers.nats_url]
    built = Built(
        letter=letter,
        title=TITLES[letter],
        plan=plan,
        mapping="",
        stream=stream,
        dlq_stream=f"{stream}_DLQ",
        nats_servers=servers,
        sources=[],
        routes=[],
        services=[],
    )
    services, source_yaml = _BUILDERS[letter](built, plan, run, p, where)
    ordered_queue = plan.instances == 1
    built.routes = [
        RouteSpec(
            key=r.key,
            subject_prefix=r.subject_prefix,
            kind=r.kind,
            source=r.source,
            ordered=r.kind != "shadow" or ordered_queue,
            ordering=plan.ordering,
        )
        for r in built.routes
    ]
    replicas = 3 if plan.nats == "cluster" else 1
    server_list = ", ".join(f'"{url}"' for url in servers)
    built.mapping = (
        textwrap.dedent(f"""\
            version: 1
            nats:
              servers: [{server_list}]
              name: chaos-{run}-{letter}
            streams:
              - name: {stream}
                subjects: ["{p}.>"]
                replicas: {replicas}
                duplicate_window: {plan.duplicate_window}
            dead_letters:
              stream: {built.dlq_stream}
              subject_prefix: chdlq{run}.{letter}
            sources:
            """)
        + textwrap.indent(source_yaml, "  ")
        + "services:\n"
        + textwrap.indent(services, "  ")
    )
    return built


# Each builder fills in the topology's sources and routes (ordered/ordering are set by build) and
# returns the `services:` and `sources:` sections of its mapping file.


def _route(key: str, prefix: str, kind: RouteKind, source: str) -> RouteSpec:
    return RouteSpec(key, prefix, kind, source, ordered=True, ordering="pipelined")


def _kafka_source_yaml(name: str, bootstrap: str, client: str, cluster_name: str | None = None) -> str:
    cluster = f", cluster_name: {cluster_name}" if cluster_name else ""
    return f'{name}: {{type: kafka, bootstrap_servers: ["{bootstrap}"], client_id: {client}{cluster}}}\n'


def _rabbit_source_yaml(url: str) -> str:
    return f'rabbit: {{type: rabbitmq, url: "{url}", prefetch: 500}}\n'


def _build_a(built: Built, plan: TopologyPlan, run: str, p: str, where: Addresses) -> tuple[str, str]:
    topic = f"ch{run}-a"
    first, second = f"c{run}a1", f"c{run}a2"
    built.sources = [SourceSpec("a.kafka", "kafka", "kafka-a", topic, partitions=KAFKA_PARTITIONS)]
    built.routes = [
        _route(f"{first}/copy", f"{p}.a", "kafka", "a.kafka"),
        _route(f"{second}/copy", f"{p}.b", "kafka", "a.kafka"),
    ]
    built.services = [first, second]
    services = "".join(
        textwrap.dedent(f"""\
            {service}:
              routes:
                - {{name: copy, source: kafka, from: {{topics: ["{topic}"]}}, to: "{p}.{sub}.{{partition}}",
                    ordering: {plan.ordering}}}
            """)
        for service, sub in ((first, "a"), (second, "b"))
    )
    return services, _kafka_source_yaml("kafka", where.kafka["kafka-a"], f"chaos-{run}-a")


def _build_b(built: Built, plan: TopologyPlan, run: str, p: str, where: Addresses) -> tuple[str, str]:
    topic = f"ch{run}-b"  # the same name on both clusters
    service = f"c{run}b"
    built.sources = [
        SourceSpec("b.east", "kafka", "kafka-a", topic, partitions=KAFKA_PARTITIONS),
        SourceSpec("b.west", "kafka", "kafka-b", topic, partitions=KAFKA_PARTITIONS),
    ]
    built.routes = [
        _route(f"{service}/east", f"{p}.east", "kafka", "b.east"),
        _route(f"{service}/west", f"{p}.west", "kafka", "b.west"),
    ]
    built.services = [service]
    services = textwrap.dedent(f"""\
        {service}:
          routes:
            - {{name: east, source: kafka-east, from: {{topics: ["{topic}"]}}, to: "{p}.east.{{partition}}",
                ordering: {plan.ordering}}}
            - {{name: west, source: kafka-west, from: {{topics: ["{topic}"]}}, to: "{p}.west.{{partition}}",
                ordering: {plan.ordering}}}
        """)
    sources = _kafka_source_yaml(
        "kafka-east", where.kafka["kafka-a"], f"chaos-{run}-b", "east" if plan.cluster_names else None
    ) + _kafka_source_yaml(
        "kafka-west", where.kafka["kafka-b"], f"chaos-{run}-b", "west" if plan.cluster_names else None
    )
    return services, sources


def _build_c(built: Built, plan: TopologyPlan, run: str, p: str, where: Addresses) -> tuple[str, str]:
    topic = exchange = f"ch{run}-c"
    service = f"c{run}c"
    built.sources = [
        SourceSpec(
            "c.kafka", "kafka", "kafka-a", topic, partitions=KAFKA_PARTITIONS, dead_letter_every=DEAD_LETTER_EVERY
        ),
        SourceSpec(
            "c.amqp",
            "amqp",
            "rabbitmq",
            exchange,
            message_id=True,
            dead_letter_every=DEAD_LETTER_EVERY,
            routing_keys=("ev.eu", "ev.us"),
        ),
    ]
    built.routes = [
        _route(f"{service}/records", f"{p}.k", "kafka", "c.kafka"),
        _route(f"{service}/events", f"{p}.r", "shadow", "c.amqp"),
    ]
    built.services = [service]
    built.shadow_queues = [f"nats-bridge.{service}.events"]
    services = textwrap.dedent(f"""\
        {service}:
          routes:
            - {{name: records, source: kafka, from: {{topics: ["{topic}"]}},
                to: "{p}.k.{{partition}}.{{header:kind}}", ordering: {plan.ordering}}}
            - {{name: events, source: rabbit, from: {{exchange: "{exchange}", type: topic, bindings: ["ev.#"]}},
                to: "{p}.r.{{header:kind}}.{{rk}}", ordering: {plan.ordering}}}
        """)
    sources = _kafka_source_yaml("kafka", where.kafka["kafka-a"], f"chaos-{run}-c") + _rabbit_source_yaml(
        where.amqp_url
    )
    return services, sources


def _build_d(built: Built, plan: TopologyPlan, run: str, p: str, where: Addresses) -> tuple[str, str]:
    exchange = f"ch{run}-d"
    service = f"c{run}d"
    built.sources = [
        SourceSpec("d.amqp", "amqp", "rabbitmq", exchange, message_id=False, routing_keys=("ev.a", "ev.b", "ev.c"))
    ]
    built.routes = [_route(f"{service}/shadow", f"{p}.s", "shadow", "d.amqp")]
    built.services = [service]
    built.shadow_queues = [f"nats-bridge.{service}.shadow"]
    services = textwrap.dedent(f"""\
        {service}:
          routes:
            - {{name: shadow, source: rabbit, from: {{exchange: "{exchange}", type: topic, bindings: ["#"]}},
                to: "{p}.s.{{rk}}", ordering: {plan.ordering}}}
        """)
    return services, _rabbit_source_yaml(where.amqp_url)


def _build_e(built: Built, plan: TopologyPlan, run: str, p: str, where: Addresses) -> tuple[str, str]:
    exchange = queue = f"ch{run}-e"
    service = f"c{run}e"
    built.sources = [SourceSpec("e.amqp", "amqp", "rabbitmq", exchange, stream_queue=queue, message_id=False)]
    built.routes = [_route(f"{service}/stream", f"{p}.q", "stream", "e.amqp")]
    built.services = [service]
    services = textwrap.dedent(f"""\
        {service}:
          routes:
            - {{name: stream, source: rabbit, from: {{queue: "{queue}", mode: stream, stream_offset: first}},
                to: "{p}.q.{{queue}}", ordering: {plan.ordering}}}
        """)
    return services, _rabbit_source_yaml(where.amqp_url)


def _build_f(built: Built, plan: TopologyPlan, run: str, p: str, where: Addresses) -> tuple[str, str]:
    topic = f"ch{run}-f"
    service = f"c{run}f"
    built.sources = [
        SourceSpec("f.kafka", "kafka", "kafka-a", topic, partitions=KAFKA_PARTITIONS),
        SourceSpec("f.nats", "nats", "nats", f"{p}.n"),
    ]
    built.routes = [_route(f"{service}/records", f"{p}.k", "kafka", "f.kafka")]
    built.services = [service]
    built.reverse = ReverseSpec(
        key=f"{service}/back",
        durable=f"nats-bridge-reverse-{service}-back",
        nats_source="f.nats",
        kafka_source="f.kafka",
    )
    built.drain_service = service
    # The reverse route reads the whole stream: what the forward route stored carries Kafka-Topic
    # and must never be written back; what NATS producers published must reach the topic.
    services = textwrap.dedent(f"""\
        {service}:
          routes:
            - {{name: records, source: kafka, from: {{topics: ["{topic}"]}}, to: "{p}.k.{{partition}}",
                ordering: {plan.ordering}}}
          reverse:
            - {{name: back, stream: {built.stream}, to: {{source: kafka, topic: "{topic}", key: "{{subject[3]}}"}}}}
        """)
    return services, _kafka_source_yaml("kafka", where.kafka["kafka-a"], f"chaos-{run}-f")


_BUILDERS = {"a": _build_a, "b": _build_b, "c": _build_c, "d": _build_d, "e": _build_e, "f": _build_f}
