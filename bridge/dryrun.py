"""`nats-bridge dry-run`: what would go wrong if this file ran — found without running it.

Pure checks on a loaded mapping file (the --connect probes live in bridge.dryrun_connect).
Each finding has a severity; the command exits 2 when there is an error, 1 when there is
only a warning, 0 otherwise ("info" findings never change the exit code):

capture      every subject a route can produce (bridge.dryrun_patterns) must land in exactly
             one stream. error: no stream captures any of them (every publish fails and goes
             to on_error); warning: some of them may fall outside every stream.
overlap      two streams whose filters share a subject: JetStream refuses the second (error).
duplicates   two routes that take the same source message (same Kafka topic in two groups,
             shadow routes on one exchange with overlapping bindings): each publishes a copy.
             Maybe intended, so a warning. Two routes consuming one queue, or sharing one
             Kafka group, split the messages instead: also a warning.
window       a stream's duplicate_window shorter than the outage budget (--outage-budget):
             a source redelivers what was unacked when the bridge went down, and JetStream
             drops the copies only while it still remembers the Msg-Ids (warning).
collision    subjects that mix messages of different origin: a multi-topic Kafka route whose
             subjects do not tell the topics apart, or two routes whose subjects can meet.
msg-id       two routes that store into one stream with Msg-Id templates that can give two
             messages one id: JetStream de-duplicates per stream, so it drops one (an error
             when both read the same messages with the same template, a warning otherwise).
             Strategy ids (`auto`, ...) start with `service/route/` and never meet.
headers      source headers named Nats-* (and the bridge's own prefixes) never become NATS
             headers: bridge.headers sends them as Source-<name> (info). A rename or `set`
             into Kafka-/Amqp-/Source-/Bridge- overwrites or fakes the bridge's metadata (warning).
durability   (--connect only) each stream's replicas, storage and sync_interval, each route's
             legacy side (queue type, replication factor), and a warning where a replicated
             or fsyncing legacy source lands on a weaker stream (bridge.durability).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

from bridge.brokers.kafka.names import default_group, full_match_pattern
from bridge.config.durations import format_duration
from bridge.config.model import BridgeConfig
from bridge.config.routes import FromKafka, FromRabbitMQ, RabbitMQMode, RouteConfig
from bridge.config.streams import Retention
from bridge.dryrun_patterns import (
    FilterIndex,
    Lit,
    RouteShape,
    binding_words,
    contained_in_filters,
    filter_shape,
    intersects,
    route_shapes,
    show,
)
from bridge.durability import DurabilityReport
from bridge.headers import RESERVED_HEADER_PREFIXES
from bridge.jetstream.plan import Plan, subjects_collide
from bridge.routing import ExchangeType

DEFAULT_OUTAGE_BUDGET = timedelta(minutes=2)
EXIT_CLEAN, EXIT_WARNINGS, EXIT_ERRORS = 0, 1, 2


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem (or note): which check, about what (a route, stream or broker), and what to do."""

    severity: Severity
    check: str
    subject: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"severity": self.severity.value, "check": self.check, "subject": self.subject, "message": self.message}


@dataclass(slots=True)
class DryRunReport:
    """Everything dry-run found; the --connect part fills `probes` and `plan`."""

    file: str
    findings: list[Finding] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)
    plan: dict[str, Any] | None = None
    drift: Plan | None = None  # the same plan, for the table
    durability: DurabilityReport | None = None  # --connect: streams' posture against the legacy side

    @property
    def exit_code(self) -> int:
        severities = {finding.severity for finding in self.findings}
        if Severity.ERROR in severities:
            return EXIT_ERRORS
        return EXIT_WARNINGS if Severity.WARNING in severities else EXIT_CLEAN

    def count(self, severity: Severity) -> int:
        return sum(1 for finding in self.findings if finding.severity is severity)

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "exit_code": self.exit_code,
            "errors": self.count(Severity.ERROR),
            "warnings": self.count(Severity.WARNING),
            "findings": [finding.as_json() for finding in self.findings],
            "probes": self.probes,
            "streams": self.plan,
            "durability": self.durability.as_json() if self.durability is not None else None,
        }


def offline_checks(
    config: BridgeConfig,
    *,
    outage_budget: timedelta = DEFAULT_OUTAGE_BUDGET,
    server_streams: Mapping[str, Sequence[str]] | None = None,
) -> list[Finding]:
    """Every offline check. `server_streams` (name -> subjects, from --connect) adds the
    server's streams the file does not declare to the capture and overlap checks."""
    streams = _stream_subjects(config, server_streams or {})
    shapes = {f"{service}/{route.name}": route_shapes(service, route) for service, route in config.routes()}
    routes = {f"{service}/{route.name}": (service, route) for service, route in config.routes()}
    captures = capture_map(shapes, streams)
    findings: list[Finding] = []
    findings += check_capture(captures, streams)
    findings += check_stream_overlap(streams)
    findings += check_duplicates(config, routes)
    findings += check_window(config, captures, outage_budget)
    findings += check_collisions(config, routes, shapes)
    findings += check_msg_ids(routes, captures)
    findings += check_headers(routes)
    findings += check_retention(config, captures)
    return findings


@dataclass(frozen=True, slots=True)
class Capture:
    """Which streams take one subject family of a route: all of it (`always`), or some of it."""

    family: RouteShape
    always: list[str]
    some: list[str]


def capture_map(shapes: Mapping[str, list[RouteShape]], streams: Mapping[str, list[str]]) -> dict[str, list[Capture]]:
    """Per route, where each of its subject families lands; worked out once for every check."""
    index = FilterIndex(streams)
    captures: dict[str, list[Capture]] = {}
    for route, families in shapes.items():
        captures[route] = []
        for family in families:
            candidates = {name: streams[name] for name in index.candidates(family.shape)}
            always, some = _capturing(family, candidates)
            captures[route].append(Capture(family, always, some))
    return captures


def check_retention(config: BridgeConfig, captures: Mapping[str, list[Capture]]) -> list[Finding]:
    """Streams a route publishes into must keep what they PubAck, and let the bridge read back.

    Both behaviours were seen on nats-server 2.15: an `interest` stream with no consumer yet
    acknowledges a message and drops it at once (the bridge would then ack the source for a
    message nothing keeps); a `workqueue` stream refuses the bridge's own read-back consumer,
    so a Kafka or stream-queue route could not resume from its checkpoints after a restart.
    """
    findings: list[Finding] = []
    for stream in config.streams:
        if stream.retention is Retention.LIMITS:
            continue
        users = [route for route, found in captures.items() if any(stream.name in c.always for c in found)]
        if not users:
            continue
        if stream.retention is Retention.INTEREST:
            text = (
                "retention interest: a message stored while no consumer is interested is dropped at once, "
                "after the PubAck, so the source would be acknowledged for a message nothing keeps; "
                "use limits retention (and consumers with acks) for bridged streams"
            )
        else:
            text = (
                "retention workqueue: the bridge cannot read the stream back after a restart (the server "
                "refuses its extra consumer), so routes with checkpoints stop instead of resuming, and a "
                "message a consumer took is gone before the bridge could check it; use limits retention"
            )
        findings.append(Finding(Severity.WARNING, "retention", stream.name, f"{text} (routes: {', '.join(users)})"))
    return findings


def route_streams(config: BridgeConfig, server_streams: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Per route (`service/route`), the streams that take any of its subjects, the dead-letter
    stream aside: where what the route copies is kept, for the durability posture."""
    streams = _stream_subjects(config, server_streams)
    shapes = {f"{service}/{route.name}": route_shapes(service, route) for service, route in config.routes()}
    dead_letters = config.dead_letters.stream
    return {
        route: sorted({name for capture in found for name in capture.some if name != dead_letters})
        for route, found in capture_map(shapes, streams).items()
    }


def _stream_subjects(config: BridgeConfig, server: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Stream name -> filters: the file's streams (and dead-letter stream), then the server's others."""
    streams = {stream.name: list(stream.subjects) for stream in config.all_streams()}
    for name, subjects in server.items():
        streams.setdefault(name, list(subjects))
    return streams


def _capturing(shape: RouteShape, streams: Mapping[str, list[str]]) -> tuple[list[str], list[str]]:
    """(streams that take every subject of `shape`, streams that take some of them)."""
    always = [name for name, filters in streams.items() if contained_in_filters(shape.shape, filters)]
    some = [name for name, filters in streams.items() if any(intersects(shape.shape, filter_shape(f)) for f in filters)]
    return always, some


def check_capture(captures: Mapping[str, list[Capture]], streams: Mapping[str, list[str]]) -> list[Finding]:
    """Each subject family of each route lands in exactly one stream."""
    findings = []
    for route, found in captures.items():
        for family, always, some in ((c.family, c.always, c.some) for c in found):
            if family.never_renders:
                findings.append(Finding(Severity.ERROR, "capture", route, family.never_renders))
            where = f"subjects {show(family.shape)} (from {family.origin})"
            if not some:
                findings.append(
                    Finding(
                        Severity.ERROR,
                        "capture",
                        route,
                        f"{where} are captured by no stream: JetStream refuses every publish and each "
                        "message goes to on_error; add a stream or change `to`",
                    )
                )
            elif not always and len(some) == 1:
                findings.append(
                    Finding(
                        Severity.WARNING,
                        "capture",
                        route,
                        f"{where} are only partly captured by stream '{some[0]}' "
                        f"({', '.join(streams[some[0]])}): the others go to on_error",
                    )
                )
            elif not always:
                findings.append(
                    Finding(
                        Severity.WARNING,
                        "capture",
                        route,
                        f"{where} fall into streams {', '.join(some)}, but none takes all of them "
                        "(dry-run does not prove the streams cover them together): check the subjects",
                    )
                )
    return findings


def check_stream_overlap(streams: Mapping[str, list[str]]) -> list[Finding]:
    """Two streams may not capture one subject: JetStream refuses that (err_code 10065)."""
    findings = []
    firsts = {name: [subject.split(".", 1)[0] for subject in filters] for name, filters in streams.items()}
    for first, second in _pairs_that_may_meet(firsts):
        mine, theirs = streams[first], streams[second]
        clash = next(((a, b) for a in mine for b in theirs if subjects_collide(a, b)), None)
        if clash is not None:
            findings.append(
                Finding(
                    Severity.ERROR,
                    "overlap",
                    f"{first}, {second}",
                    f"'{clash[0]}' of stream '{first}' overlaps '{clash[1]}' of stream '{second}': "
                    "JetStream lets no two streams capture the same subject",
                )
            )
    return findings


def _pairs_that_may_meet(firsts: Mapping[str, list[str]]) -> list[tuple[str, str]]:
    """The pairs of names (in their given order) whose subjects can meet at all, judged by each
    one's first tokens (`*` or `>`: any): the others part at once, and a file of a thousand
    streams or routes has half a million pairs."""
    order = {name: index for index, name in enumerate(firsts)}
    buckets: dict[str, list[str]] = {}
    wild: list[str] = []
    for name, tokens in firsts.items():
        if any(token in ("*", ">") for token in tokens):
            wild.append(name)
        for token in set(tokens) - {"*", ">"}:
            buckets.setdefault(token, []).append(name)
    pairs: set[tuple[str, str]] = set()
    for names in buckets.values():
        pairs.update(itertools.combinations(names, 2))
    for name in wild:
        pairs.update((other, name) if order[other] < order[name] else (name, other) for other in order if other != name)
    return sorted(pairs, key=lambda pair: (order[pair[0]], order[pair[1]]))


def check_duplicates(config: BridgeConfig, routes: Mapping[str, tuple[str, RouteConfig]]) -> list[Finding]:
    """Pairs of routes that both receive one source message (or split one source's messages)."""
    findings = []
    for (first, (service_a, a)), (second, (service_b, b)) in itertools.combinations(routes.items(), 2):
        if a.source != b.source:
            continue
        pair = f"{first}, {second}"
        if isinstance(a.from_, FromKafka) and isinstance(b.from_, FromKafka):
            shared = _kafka_overlap(a.from_, b.from_)
            if shared is None:
                continue
            group_a = a.from_.group or default_group(service_a, a.name)
            group_b = b.from_.group or default_group(service_b, b.name)
            if group_a == group_b:
                message = (
                    f"both read {shared} in the one consumer group '{group_a}': they split the partitions, "
                    "so each route sees only part of the records"
                )
            else:
                message = f"both read {shared} (groups '{group_a}' and '{group_b}'): every record is published twice"
            findings.append(Finding(Severity.WARNING, "duplicates", pair, message))
        elif isinstance(a.from_, FromRabbitMQ) and isinstance(b.from_, FromRabbitMQ):
            overlap = _rabbit_overlap(a.from_, b.from_)
            if overlap is None:
                continue
            if _same_copy(a, b):
                # Both copies get one subject and one Msg-Id (a template that does not name the
                # route or the queue): JetStream keeps the first.
                overlap += (
                    ", but both copies have the same subject and Nats-Msg-Id, so JetStream stores one "
                    "(within the stream's duplicate_window)"
                )
                findings.append(Finding(Severity.INFO, "duplicates", pair, overlap))
            else:
                findings.append(Finding(Severity.WARNING, "duplicates", pair, overlap))
    return findings


def _same_copy(a: RouteConfig, b: RouteConfig) -> bool:
    """Two shadow routes on one exchange publish a message they both receive identically: the
    same subject template and the same Msg-Id template, one that does not depend on the queue
    (strategy ids name the route, so those copies are both stored)."""
    return a.to == b.to and a.msg_id == b.msg_id and "{" in a.msg_id and "{queue" not in a.msg_id


def _kafka_overlap(a: FromKafka, b: FromKafka) -> str | None:
    """What two subscriptions share, in words; None when they share no topic."""
    if a.topics and b.topics:
        shared = sorted(set(a.topics) & set(b.topics))
        return f"topic(s) {', '.join(shared)}" if shared else None
    if a.topics or b.topics:
        listed, pattern = (a.topics, b.topic_pattern) if a.topics else (b.topics, a.topic_pattern)
        regex = full_match_pattern(pattern or "")
        shared = [topic for topic in listed if regex.match(topic)]
        return f"topic(s) {', '.join(shared)}" if shared else None
    # Two regexes: equal, or one's literal start a prefix of the other's, may share topics.
    left, right = _literal_prefix(a.topic_pattern or ""), _literal_prefix(b.topic_pattern or "")
    if left.startswith(right) or right.startswith(left):
        return f"topics matching both '{a.topic_pattern}' and '{b.topic_pattern}' (possibly)"
    return None


def _literal_prefix(pattern: str) -> str:
    out = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern) and pattern[index + 1] in ".-_":
            out.append(pattern[index + 1])
            index += 2
        elif char.isalnum() or char in "-_":
            out.append(char)
            index += 1
        else:
            break
    return "".join(out)


def _rabbit_overlap(a: FromRabbitMQ, b: FromRabbitMQ) -> str | None:
    mode_a, mode_b = a.effective_mode, b.effective_mode
    if mode_a is not RabbitMQMode.SHADOW and mode_b is not RabbitMQMode.SHADOW:
        if a.queue == b.queue and mode_a is RabbitMQMode.QUEUE and mode_b is RabbitMQMode.QUEUE:
            return f"both consume queue '{a.queue}': they compete, each message reaches only one of them"
        if a.queue == b.queue:
            return f"both read stream queue '{a.queue}': every message is published twice"
        return None
    if mode_a is not RabbitMQMode.SHADOW or mode_b is not RabbitMQMode.SHADOW or a.exchange != b.exchange:
        return None
    copy = f"both copy exchange '{a.exchange}' into their own queues"
    if a.type is ExchangeType.FANOUT or b.type is ExchangeType.FANOUT:
        return f"{copy} (fanout): every message is published twice"
    if a.type is ExchangeType.HEADERS or b.type is ExchangeType.HEADERS:
        if _headers_disjoint(a.arguments, b.arguments):
            return None
        return f"{copy}; their headers bindings can match one message, which is then published twice"
    for key_a, key_b in itertools.product(a.bindings, b.bindings):
        if intersects(tuple(binding_words(key_a, a.type)), tuple(binding_words(key_b, b.type))):
            return f"{copy}; bindings '{key_a}' and '{key_b}' match some routing keys alike: those are published twice"
    return None


def _headers_disjoint(first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
    """True only when both are x-match all and require different values of one header."""
    if first.get("x-match", "all") not in ("all", "all-with-x") or second.get("x-match", "all") not in (
        "all",
        "all-with-x",
    ):
        return False
    return any(key in second and second[key] != value for key, value in first.items() if not key.startswith("x-"))


def check_window(
    config: BridgeConfig, captures: Mapping[str, list[Capture]], outage_budget: timedelta
) -> list[Finding]:
    """Streams a route publishes into whose duplicate_window is shorter than the outage budget."""
    findings = []
    declared = {stream.name: stream for stream in config.streams}
    flagged: set[str] = set()
    for route, found in captures.items():
        for capture in found:
            for name in capture.some:
                if name not in declared:
                    continue  # the dead-letter stream, or a server's stream the file does not declare
                window = declared[name].duplicate_window
                if window < outage_budget and name not in flagged:
                    flagged.add(name)
                    findings.append(
                        Finding(
                            Severity.WARNING,
                            "window",
                            name,
                            f"duplicate_window {format_duration(window)} is shorter than the outage budget "
                            f"{format_duration(outage_budget)} (route {route}): messages redelivered after a "
                            "longer outage are stored twice; raise duplicate_window or pass a smaller "
                            "--outage-budget if outages are really shorter",
                        )
                    )
    return findings


def check_collisions(
    config: BridgeConfig,
    routes: Mapping[str, tuple[str, RouteConfig]],
    shapes: Mapping[str, list[RouteShape]],
) -> list[Finding]:
    """Subjects shared by messages of different origin (topics, routes, clusters)."""
    findings = []
    for name, (_, route) in routes.items():
        if not isinstance(route.from_, FromKafka):
            continue
        families = shapes[name]
        if route.from_.topic_pattern is not None and not ({"topic"} & {f.split("[")[0] for f in _fields(route)}):
            findings.append(
                Finding(
                    Severity.WARNING,
                    "collision",
                    name,
                    "the route reads every topic matching a pattern but `to` has no {topic}: records of "
                    "different topics share subjects (the topic is only in the Kafka-Topic header)",
                )
            )
        for one, other in itertools.combinations(families, 2):
            if intersects(one.shape, other.shape):
                findings.append(
                    Finding(
                        Severity.WARNING,
                        "collision",
                        name,
                        f"{one.origin} and {other.origin} can publish to the same subjects "
                        f"({show(one.shape)}): consumers cannot tell them apart by subject",
                    )
                )
    firsts = {
        name: [family.shape[0].token if family.shape and isinstance(family.shape[0], Lit) else "*" for family in found]
        for name, found in shapes.items()
    }
    for first, second in _pairs_that_may_meet(firsts):
        (_, a), (_, b) = routes[first], routes[second]
        if a.source == b.source:
            continue  # same-source pairs are the duplicates check's business
        meet = next(
            ((x, y) for x in shapes[first] for y in shapes[second] if intersects(x.shape, y.shape)),
            None,
        )
        if meet is None:
            continue
        pair = f"{first}, {second}"
        findings.append(
            Finding(
                Severity.WARNING,
                "collision",
                pair,
                f"routes from sources '{a.source}' and '{b.source}' can publish to the same subjects "
                f"({show(meet[0].shape)} / {show(meet[1].shape)}): consumers cannot tell them apart",
            )
        )
    return findings


def check_msg_ids(
    routes: Mapping[str, tuple[str, RouteConfig]], captures: Mapping[str, list[Capture]]
) -> list[Finding]:
    """Two routes storing into one stream must never give two messages one Nats-Msg-Id.

    A strategy id starts with `service/route/`; a template's ids start with its literal text
    up to the first placeholder. Ids that start with different text never meet; otherwise
    they can, and JetStream keeps only the first message of an id within the window.
    """
    stores = {name: {stream for capture in found for stream in capture.some} for name, found in captures.items()}
    by_stream: dict[str, list[str]] = {}
    for name, names in stores.items():
        for stream in names:
            by_stream.setdefault(stream, []).append(name)
    pairs = sorted({(a, b) for users in by_stream.values() for a, b in itertools.combinations(users, 2)})
    order = {name: index for index, name in enumerate(routes)}
    findings = []
    for first, second in sorted(pairs, key=lambda pair: (order[pair[0]], order[pair[1]])):
        (service_a, a), (service_b, b) = routes[first], routes[second]
        shared = sorted(stores[first] & stores[second])
        start_a, start_b = _id_start(service_a, a), _id_start(service_b, b)
        if not (start_a.startswith(start_b) or start_b.startswith(start_a)):
            continue
        templates = "{" in a.msg_id and "{" in b.msg_id
        if templates and a.source == b.source and a.to == b.to and a.msg_id == b.msg_id:
            continue  # one message, one subject, one id: the same copy twice (see `duplicates`)
        same_messages = a.msg_id == b.msg_id and _same_messages(a, b)
        severity = Severity.ERROR if templates and same_messages else Severity.WARNING
        what = (
            f"both read the same messages and give each the Msg-Id '{a.msg_id}'"
            if severity is Severity.ERROR
            else f"their Msg-Ids ('{a.msg_id}' / '{b.msg_id}') can be equal for different messages"
        )
        findings.append(
            Finding(
                severity,
                "msg-id",
                f"{first}, {second}",
                f"both store into stream {', '.join(shared)} and {what}: JetStream de-duplicates per stream, "
                "so it keeps one and drops the other as a duplicate; start each route's template with text "
                f"of its own (e.g. '{service_a}-{a.name}/...') or use msg_id: auto",
            )
        )
    return findings


def _id_start(service: str, route: RouteConfig) -> str:
    """The text every Msg-Id of the route starts with."""
    if "{" not in route.msg_id:
        return f"{service}/{route.name}/"
    return route.msg_id.split("{", 1)[0]


def _same_messages(a: RouteConfig, b: RouteConfig) -> bool:
    """Whether two routes can read the same source messages (the same Kafka topic name, on
    one cluster or two; the same RabbitMQ exchange or queue of one source)."""
    if isinstance(a.from_, FromKafka) and isinstance(b.from_, FromKafka):
        return _kafka_overlap(a.from_, b.from_) is not None
    if isinstance(a.from_, FromRabbitMQ) and isinstance(b.from_, FromRabbitMQ):
        return a.source == b.source and _rabbit_overlap(a.from_, b.from_) is not None
    return False


def _fields(route: RouteConfig) -> Iterable[str]:
    return route.subject_template.fields


def check_headers(routes: Mapping[str, tuple[str, RouteConfig]]) -> list[Finding]:
    """Reserved header names: escaped when copied from a source; risky when written on purpose."""
    findings = []
    bridge_prefixes = tuple(prefix for prefix in RESERVED_HEADER_PREFIXES if prefix != "nats-")
    copying = [name for name, (_, route) in routes.items() if route.headers.copy_source]
    if copying:
        findings.append(
            Finding(
                Severity.INFO,
                "headers",
                ", ".join(copying),
                "source headers are copied; one named Nats-* (or Kafka-/Amqp-/Source-/Bridge-*) travels as "
                "Source-<name>, so it can never steer JetStream (e.g. a source Nats-Msg-Id)",
            )
        )
    for name, (_, route) in routes.items():
        rules = route.headers
        written = [*(rules.rename.values() if rules.copy_source else ()), *rules.set]
        for header in written:
            if header.lower().startswith(bridge_prefixes):
                findings.append(
                    Finding(
                        Severity.WARNING,
                        "headers",
                        name,
                        f"header '{header}' uses a prefix the bridge reserves for its own metadata "
                        f"({', '.join(p.title() for p in bridge_prefixes)}): it can overwrite or fake it",
                    )
                )
    return findings
