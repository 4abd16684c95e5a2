"""Routes against each other: two that copy one message, subjects or Msg-Ids that mix
messages of different origin, and headers that would overwrite the bridge's own."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from bridge.brokers.kafka.names import default_group, full_match_pattern
from bridge.config.model import BridgeConfig
from bridge.config.routes import FromKafka, FromRabbitMQ, RabbitMQMode, RouteConfig
from bridge.dryrun.report import Finding, Severity
from bridge.dryrun.streams import Capture, pairs_that_may_meet
from bridge.headers import RESERVED_HEADER_PREFIXES
from bridge.route_shapes import RouteShape
from bridge.routing import ExchangeType
from bridge.routing.shapes import Lit, binding_words, intersects, show


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
    for first, second in pairs_that_may_meet(firsts):
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
