"""What a `consumers:` entry must agree with elsewhere in the file: its stream, the other consumers
of that stream, and the route that copies what the legacy consumer it `replaces` received.

Kept apart from bridge.config.consumers (which knows one consumer) because these span sections,
and from model.py so that file stays a table of contents. Problems come back with key paths,
which the loader turns into line numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bridge.config.consumers import AckPolicy, ConsumerConfig, DeliverPolicy, ReplacesConfig
from bridge.config.routes import RouteConfig
from bridge.config.services import ServiceConfig
from bridge.config.streams import Retention, StreamConfig
from bridge.routing.shapes import contained_in_filters, filter_shape, intersects

Loc = tuple[int | str, ...]


def replaced_route(service: ServiceConfig, replaces: ReplacesConfig) -> RouteConfig | str:
    """The service's route that copies what the replaced legacy consumer received, or why there is none."""
    kind = replaces.kind
    if replaces.route is not None:
        route = next((r for r in service.routes if r.name == replaces.route), None)
        if route is None:
            known = ", ".join(r.name for r in service.routes)
            return f"the service has no route '{replaces.route}' (its routes: {known})"
        if route.source_kind != kind:
            return f"route '{route.name}' reads {route.source_kind}, but {replaces.describe()} is {kind}'s"
        return route
    candidates = [r for r in service.routes if r.source_kind == kind]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        return f"the service has no {kind} route to copy what {replaces.describe()} received"
    names = ", ".join(r.name for r in candidates)
    return f"the service has several {kind} routes ({names}): name the one in 'replaces.route'"


def consumer_problems(services: Mapping[str, ServiceConfig], streams: Sequence[StreamConfig]) -> list[tuple[Loc, str]]:
    """Every cross-section problem of the file's consumers, with its key path."""
    by_name = {stream.name: stream for stream in streams}
    problems: list[tuple[Loc, str]] = []
    durables: dict[tuple[str, str], str] = {}
    for service_name, service in services.items():
        for reverse in service.reverse:
            durables[(reverse.stream, reverse.durable_name(service_name))] = (
                f"reverse route {service_name}/{reverse.name}"
            )
    workqueue: dict[str, list[tuple[str, ConsumerConfig]]] = {}
    for service_name, service in services.items():
        for index, consumer in enumerate(service.consumers):
            loc: Loc = ("services", service_name, "consumers", index)
            owner = durables.get((consumer.stream, consumer.name))
            if owner is not None:
                problems.append(
                    (
                        (*loc, "name"),
                        f"'{consumer.name}' on stream '{consumer.stream}' is already the name of {owner}: durable "
                        "names are unique per stream",
                    )
                )
            durables[(consumer.stream, consumer.name)] = f"consumer {service_name}/{consumer.name}"
            stream = by_name.get(consumer.stream)
            if stream is None:
                known = ", ".join(by_name) or "none"
                problems.append(((*loc, "stream"), f"stream '{consumer.stream}' is not declared (known: {known})"))
            else:
                problems += _against_stream(loc, consumer, stream)
                if stream.retention is Retention.WORKQUEUE:
                    workqueue.setdefault(stream.name, []).append((f"{service_name}/{consumer.name}", consumer))
            if consumer.replaces is not None:
                found = replaced_route(service, consumer.replaces)
                if isinstance(found, str):
                    problems.append(((*loc, "replaces"), found))
    for stream_name, members in workqueue.items():
        problems += _workqueue_overlaps(services, stream_name, members)
    return problems


def _against_stream(loc: Loc, consumer: ConsumerConfig, stream: StreamConfig) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    for index, subject in enumerate(consumer.filter_subjects):
        if not contained_in_filters(filter_shape(subject), stream.subjects):
            held = ", ".join(stream.subjects)
            partly = any(intersects(filter_shape(subject), filter_shape(f)) for f in stream.subjects)
            problems.append(
                (
                    (*loc, "filter_subjects", index),
                    f"'{subject}' is {'only partly' if partly else 'not'} captured by stream '{stream.name}' "
                    f"({held}): the consumer would never receive {'some of ' if partly else ''}those messages",
                )
            )
    if stream.retention is Retention.WORKQUEUE:
        # addConsumerWithAssignment: a work-queue stream takes explicit acks from all-delivering consumers only.
        if consumer.ack_policy is not AckPolicy.EXPLICIT:
            problems.append(
                ((*loc, "ack_policy"), f"stream '{stream.name}' is a work queue: JetStream needs explicit acks")
            )
        if consumer.deliver_policy is not DeliverPolicy.ALL:
            problems.append(
                (
                    (*loc, "deliver_policy"),
                    f"stream '{stream.name}' is a work queue: JetStream needs 'deliver_policy: all'",
                )
            )
    return problems


def _workqueue_overlaps(
    services: Mapping[str, ServiceConfig], stream: str, members: list[tuple[str, ConsumerConfig]]
) -> list[tuple[Loc, str]]:
    """A work queue hands each message to one consumer, so JetStream refuses consumers whose filters
    overlap (or a second one without a filter)."""
    problems: list[tuple[Loc, str]] = []
    for position, (name, consumer) in enumerate(members):
        for other_name, other in members[:position]:
            mine = consumer.filter_subjects or [">"]
            theirs = other.filter_subjects or [">"]
            if any(intersects(filter_shape(a), filter_shape(b)) for a in mine for b in theirs):
                service, _, _ = name.partition("/")
                index = next(i for i, c in enumerate(services[service].consumers) if c is consumer)
                problems.append(
                    (
                        ("services", service, "consumers", index, "filter_subjects"),
                        f"stream '{stream}' is a work queue and '{name}' overlaps '{other_name}': "
                        "JetStream gives each message to one consumer and refuses overlapping filters",
                    )
                )
                break
    return problems
