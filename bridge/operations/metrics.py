"""/metrics: the bridge's counters as Prometheus metrics, built only when scraped.

The pipeline keeps plain integers (RouteStats); a custom collector turns them and the
health monitor's snapshot into metric families on each scrape, so exporting metrics costs
nothing per message. Names and help texts come from bridge.operations.names.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.operations import names
from bridge.operations.names import MetricSpec

if TYPE_CHECKING:
    from bridge.operations.health import HealthMonitor

PHASES = ("shadow", "drain", "retired")
REJECTION_KINDS = ("invalid", "transition", "report")  # bridge.cutover.store: INVALID, TRANSITION, REPORT


def bridge_version() -> str:
    try:
        return version("nats-bridge")
    except PackageNotFoundError:
        return "unknown"


def _counter(spec: MetricSpec) -> CounterMetricFamily:
    return CounterMetricFamily(spec.family, spec.help, labels=spec.labels)


def _gauge(spec: MetricSpec) -> GaugeMetricFamily:
    return GaugeMetricFamily(spec.family, spec.help, labels=spec.labels)


class BridgeCollector(Collector):
    """Reads the pipelines' stats and the monitor's snapshot at scrape time."""

    def __init__(self, monitor: HealthMonitor) -> None:
        self._monitor = monitor
        self._version = bridge_version()

    def collect(self) -> Iterator[Metric]:
        yield from self._route_metrics()
        yield from self._service_metrics()
        yield from self._stream_metrics()
        ready = _gauge(names.READY)
        ready.add_metric([], 0 if self._monitor.problems() else 1)
        info = _gauge(names.INFO)
        info.add_metric([self._version], 1)
        yield from (ready, info)

    def _route_metrics(self) -> Iterator[Metric]:
        monitor = self._monitor
        received, published, duplicates = (
            _counter(names.RECEIVED),
            _counter(names.PUBLISHED),
            _counter(names.DUPLICATES),
        )
        dead, skipped, errors = _counter(names.DEAD_LETTERED), _counter(names.SKIPPED), _counter(names.PUBLISH_ERRORS)
        retries, reordered, recopied = _counter(names.RETRIES), _counter(names.REORDERED), _counter(names.RECOPIED)
        in_flight, backlog, paused = _gauge(names.IN_FLIGHT), _gauge(names.SOURCE_BACKLOG), _gauge(names.PAUSED)
        stalled, progress = _gauge(names.STALLED), _gauge(names.LAST_PROGRESS)
        latency = HistogramMetricFamily(
            names.PUBLISH_LATENCY.family, names.PUBLISH_LATENCY.help, labels=names.PUBLISH_LATENCY.labels
        )
        up, reconnects = _gauge(names.CONNECTION_UP), _counter(names.RECONNECTS)
        sources_up: dict[tuple[str, str], bool] = {}
        source_reconnects: dict[tuple[str, str], int] = {}
        for pipeline in monitor.pipelines:
            route = pipeline.route
            labels = [route.service, route.config.name]
            stats = pipeline.stats
            health = monitor.routes[route.key]
            received.add_metric(labels, stats.received)
            published.add_metric(labels, stats.published)
            duplicates.add_metric(labels, stats.duplicates)
            for reason, count in stats.dead_lettered.items():
                dead.add_metric([*labels, reason], count)
            skip_on_error = stats.skipped - stats.filtered
            for reason, count in (
                ("filtered", stats.filtered),
                ("already-stored", stats.already_stored),
                ("re-read", stats.reread),
                ("on-error", skip_on_error),
            ):
                skipped.add_metric([*labels, reason], count)
            for kind, count in stats.failures_by_kind.items():
                errors.add_metric([*labels, kind], count)
            retries.add_metric(labels, stats.retries)
            reordered.add_metric(labels, stats.reordered)
            recopied.add_metric(labels, stats.recopied)
            in_flight.add_metric(labels, pipeline.unsettled)
            for lane, count in health.backlog.items():
                backlog.add_metric([*labels, lane], count)
            paused.add_metric(labels, 1 if pipeline.paused else 0)
            stalled.add_metric(labels, 1 if health.stalled else 0)
            progress.add_metric(labels, health.last_progress_wall)
            latency.add_metric(labels, buckets=stats.latency.cumulative(), sum_value=stats.latency.sum)
            # Each route has its own connection to its source; a source is up when all are.
            source = (pipeline.source.name, route.config.source_kind)
            sources_up[source] = sources_up.get(source, True) and health.source_up
            source_reconnects[source] = source_reconnects.get(source, 0) + pipeline.source.reconnects
        for (name, kind), is_up in sources_up.items():
            up.add_metric([name, kind], 1 if is_up else 0)
            reconnects.add_metric([name, kind], source_reconnects[(name, kind)])
        up.add_metric(["nats", "nats"], 1 if monitor.publisher.connected else 0)
        reconnects.add_metric(["nats", "nats"], monitor.events.reconnects)
        yield from (received, published, duplicates, dead, skipped, errors, retries, reordered, recopied)
        yield from (in_flight, latency)
        yield from (backlog, paused, stalled, progress, up, reconnects)

    def _service_metrics(self) -> Iterator[Metric]:
        monitor = self._monitor
        slow = _counter(names.SLOW_CONSUMERS)
        slow.add_metric([], monitor.events.slow_consumers)
        yield slow

        phase = _gauge(names.SERVICE_PHASE)
        for service, current in monitor.phases.items():
            for name in PHASES:
                phase.add_metric([service, name], 1 if name == current else 0)
        yield phase

        rejected = _counter(names.PHASE_RECORDS_REJECTED)
        services = set(monitor.phases) | {service for service, _ in monitor.phase_rejections}
        for service in sorted(services):
            for kind in REJECTION_KINDS:
                rejected.add_metric([service, kind], monitor.phase_rejections.get((service, kind), 0))
        yield rejected

        messages, failures, running, writing = (
            _counter(names.REVERSE_MESSAGES),
            _counter(names.REVERSE_FAILURES),
            _gauge(names.REVERSE_RUNNING),
            _gauge(names.REVERSE_WRITING),
        )
        for (service, route), (stats, is_running) in monitor.reverse.items():
            labels = [service, route]
            messages.add_metric([*labels, "written"], stats.written)
            messages.add_metric([*labels, "filtered"], stats.filtered_forwarded)
            messages.add_metric([*labels, "unrenderable"], stats.unrenderable)
            failures.add_metric(labels, stats.failures)
            running.add_metric(labels, 1 if is_running else 0)
            writing.add_metric(labels, 1 if is_running and stats.writing else 0)
        yield from (messages, failures, running, writing)

    def _stream_metrics(self) -> Iterator[Metric]:
        monitor = self._monitor
        messages, size, max_bytes = (
            _gauge(names.STREAM_MESSAGES),
            _gauge(names.STREAM_BYTES),
            _gauge(names.STREAM_MAX_BYTES),
        )
        pending, ack_pending = _gauge(names.CONSUMER_PENDING), _gauge(names.CONSUMER_ACK_PENDING)
        for stream in monitor.streams:
            if not stream.exists:
                continue
            messages.add_metric([stream.name], stream.messages)
            size.add_metric([stream.name], stream.bytes)
            max_bytes.add_metric([stream.name], stream.max_bytes)
            for consumer, waiting, unacked in stream.consumers:
                pending.add_metric([stream.name, consumer], waiting)
                ack_pending.add_metric([stream.name, consumer], unacked)
        yield from (messages, size, max_bytes, pending, ack_pending)


def bridge_registry(monitor: HealthMonitor) -> CollectorRegistry:
    """A registry of the bridge's own metrics and the process's (memory, CPU, file descriptors)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BridgeCollector(monitor))
    ProcessCollector(registry=registry)
    return registry
