"""Where each route's subjects land: captured by one stream, by none, by several; and the
streams' own settings that decide what a landed message becomes (overlap, window, retention)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from bridge.config.durations import format_duration
from bridge.config.model import BridgeConfig
from bridge.config.streams import Retention
from bridge.dryrun.report import Finding, Severity
from bridge.jetstream.plan import subjects_collide
from bridge.route_shapes import RouteShape, route_shapes
from bridge.routing.shapes import FilterIndex, contained_in_filters, filter_shape, intersects, show


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


def route_streams(config: BridgeConfig, server_streams: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Per route (`service/route`), the streams that take any of its subjects, the dead-letter
    stream aside: where what the route copies is kept, for the durability posture."""
    streams = stream_subjects(config, server_streams)
    shapes = {f"{service}/{route.name}": route_shapes(service, route) for service, route in config.routes()}
    dead_letters = config.dead_letters.stream
    return {
        route: sorted({name for capture in found for name in capture.some if name != dead_letters})
        for route, found in capture_map(shapes, streams).items()
    }


def stream_subjects(config: BridgeConfig, server: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
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
    for first, second in pairs_that_may_meet(firsts):
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


def pairs_that_may_meet(firsts: Mapping[str, list[str]]) -> list[tuple[str, str]]:
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
