"""Does each JetStream consumer receive what the legacy consumer it `replaces` received?

The question behind moving a service's readers (MIGRATION.md §2 and runbook step 2). What a
legacy queue received is its binding keys on the route's exchange; what a Kafka group read is
its topics; either becomes subjects through the route's `to` template (bridge.route_shapes),
and the consumer's filter subjects must cover all of them (bridge.routing.shapes). Checked
offline by `validate` and `dry-run`, per consumer with `replaces`:

coverage  error: some of what the legacy consumer received reaches no filter of the consumer
          (the new reader would miss it), or the route does not copy it at all (a binding or
          topic the route is not bound to or does not read: the stream never holds it).
inexact   warning: a binding no set of NATS filters can express (`#` before the end, as in
          `a.#.b` or `#.error`): the consumer's filters take more than the queue did, and its
          code must skip the rest — or the route gives those messages subjects of their own.
wider     warning: a filter takes subjects the legacy consumer never received (its code
          sees messages it did not see before; once producers publish to NATS, any of them).
legacy-headers info: a headers exchange's queue is selected on headers; JetStream filters on
          subjects only, so the consumer gets everything the route copies.

Each finding names the consumer, the legacy queue or group, and the binding or topic, with
the filters that would be exact where there are some.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.config.consumer_refs import replaced_route
from bridge.config.consumers import ConsumerConfig, ReplacesConfig
from bridge.config.model import BridgeConfig
from bridge.config.routes import FromKafka, FromRabbitMQ, RabbitMQMode, RouteConfig
from bridge.dryrun.report import Finding, Severity
from bridge.route_shapes import route_shapes
from bridge.routing import ExchangeType, kafka_topic_matches
from bridge.routing.filters import covering_filter as _covering_filter
from bridge.routing.filters import exact_filters as _exact_filters
from bridge.routing.shapes import Shape, contained_in_filters, filter_shape, intersects, show, within_shapes


@dataclass(frozen=True, slots=True)
class _Family:
    """Subjects one binding or topic of the legacy consumer becomes."""

    origin: str  # "binding 'order.#'", "topic 'payments'"
    shape: Shape


def check_consumers(config: BridgeConfig) -> list[Finding]:
    """The coverage of every consumer that says what it `replaces` (the module docstring's checks)."""
    streams = {stream.name: stream for stream in config.streams}
    findings: list[Finding] = []
    for service_name, service in config.services.items():
        for consumer in service.consumers:
            replaces = consumer.replaces
            route = replaced_route(service, replaces) if replaces is not None else None
            if replaces is None or not isinstance(route, RouteConfig):
                continue  # nothing to compare, or the loader refused the file already
            stream = streams.get(consumer.stream)
            filters = consumer.filter_subjects or (list(stream.subjects) if stream else [">"])
            about = f"{service_name}/{consumer.name}"
            findings += _check_one(about, service_name, consumer, replaces, route, filters)
    return findings


def _check_one(
    about: str, service: str, consumer: ConsumerConfig, replaces: ReplacesConfig, route: RouteConfig, filters: list[str]
) -> list[Finding]:
    legacy, findings = _legacy_families(about, service, replaces, route)
    copied = [family.shape for family in route_shapes(service, route)]
    who = replaces.describe()
    inexact = False
    for family in legacy:
        if not within_shapes(family.shape, copied):
            findings.append(
                Finding(
                    Severity.ERROR,
                    "coverage",
                    about,
                    f"route '{route.name}' does not copy all of what {who} receives through {family.origin} "
                    f"({show(family.shape)}): the stream never holds those messages; bind or subscribe the route "
                    "to it too",
                )
            )
        exact = _exact_filters(family.shape)
        wanted = (
            f"; exact: {', '.join(exact)}"
            if exact
            else f"; a filter that takes it: {_covering_filter(family.shape)} (wider: see 'inexact')"
        )
        if not contained_in_filters(family.shape, filters):
            some = "some of " if any(intersects(family.shape, filter_shape(f)) for f in filters) else ""
            findings.append(
                Finding(
                    Severity.ERROR,
                    "coverage",
                    about,
                    f"misses {some}what {who} received through {family.origin}: {show(family.shape)} is not "
                    f"covered by its filter subjects ({', '.join(filters)}){wanted}",
                )
            )
        if exact is None:
            inexact = True
            findings.append(
                Finding(
                    Severity.WARNING,
                    "inexact",
                    about,
                    f"{family.origin} of {who} has no exact NATS filter ({show(family.shape)}: '>' only ends a "
                    f"filter): one that covers it, such as {_covering_filter(family.shape)}, takes more than the "
                    "queue did, so the consumer's code must skip the rest; or a route bound with it alone gives "
                    "those messages subjects of their own",
                )
            )
    if not inexact and legacy:
        shapes = [family.shape for family in legacy]
        for subject_filter in filters:
            if not within_shapes(filter_shape(subject_filter), shapes):
                findings.append(
                    Finding(
                        Severity.WARNING,
                        "wider",
                        about,
                        f"filter '{subject_filter}' also takes subjects {who} never received (it got: "
                        f"{', '.join(show(shape) for shape in shapes)})",
                    )
                )
    return findings


def _legacy_families(
    about: str, service: str, replaces: ReplacesConfig, route: RouteConfig
) -> tuple[list[_Family], list[Finding]]:
    """What the legacy consumer received, as subject families of the route, and what cannot be known."""
    source = route.from_
    if isinstance(source, FromKafka):
        topics = replaces.topics if replaces.topics is not None else list(source.topics)
        if not topics:  # a topic_pattern route and no topics named: whatever the pattern reads
            return _families(service, route), []
        families: list[_Family] = []
        findings: list[Finding] = []
        for topic in topics:
            if not kafka_topic_matches(topic, source.topics, source.topic_pattern):
                findings.append(
                    Finding(
                        Severity.ERROR,
                        "coverage",
                        about,
                        f"route '{route.name}' does not read topic '{topic}' that {replaces.describe()} read: "
                        "the stream never holds those records",
                    )
                )
                continue
            one = route.model_copy(
                update={"from_": source.model_copy(update={"topics": [topic], "topic_pattern": None})}
            )
            families += _families(service, one)
        return families, findings
    assert isinstance(source, FromRabbitMQ)
    mode = source.effective_mode
    if mode is not RabbitMQMode.SHADOW:
        if source.queue != replaces.queue:
            message = (
                f"route '{route.name}' reads queue '{source.queue}' ({mode} mode), not {replaces.describe()}: "
                "name the route that copies it in 'replaces.route'"
            )
            return [], [Finding(Severity.ERROR, "coverage", about, message)]
        return _families(service, route), []
    if source.type in (ExchangeType.FANOUT, ExchangeType.HEADERS):
        notes = []
        if source.type is ExchangeType.HEADERS:
            notes.append(
                Finding(
                    Severity.INFO,
                    "legacy-headers",
                    about,
                    f"{replaces.describe()} is bound to headers exchange '{source.exchange}': JetStream filters on "
                    "subjects only, so the consumer gets everything the route copies",
                )
            )
        return _families(service, route), notes
    bindings = replaces.bindings if replaces.bindings is not None else list(source.bindings)
    bound = route.model_copy(update={"from_": source.model_copy(update={"bindings": bindings})})
    return _families(service, bound), []


def _families(service: str, route: RouteConfig) -> list[_Family]:
    return [_Family(family.origin, family.shape) for family in route_shapes(service, route)]
