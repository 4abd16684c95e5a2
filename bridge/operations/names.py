"""Every metric the bridge exports, by name: the contract with dashboards and alert rules.

`compose/` ships Prometheus alert rules and a Grafana dashboard; a test checks that each
name they use is listed here, and another that a running bridge exports exactly these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PREFIX = "nats_bridge"
ROUTE = ("service", "route")


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric family: its name as exposed (counters end in `_total`), kind, labels and meaning."""

    name: str
    kind: Literal["counter", "gauge", "histogram"]
    labels: tuple[str, ...]
    help: str

    @property
    def family(self) -> str:
        """The family name prometheus-client wants (counters without `_total`)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name

    @property
    def samples(self) -> tuple[str, ...]:
        """Names of the samples the family exposes."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


def _m(name: str, kind: Literal["counter", "gauge", "histogram"], labels: tuple[str, ...], help_: str) -> MetricSpec:
    return MetricSpec(f"{PREFIX}_{name}", kind, labels, help_)


RECEIVED = _m("messages_received_total", "counter", ROUTE, "Messages read from the route's source.")
PUBLISHED = _m(
    "messages_published_total", "counter", ROUTE, "Messages JetStream acknowledged (stored, or already stored)."
)
DUPLICATES = _m(
    "messages_duplicate_total", "counter", ROUTE, "PubAcks flagged duplicate: JetStream had the Msg-Id already."
)
DEAD_LETTERED = _m(
    "messages_dead_lettered_total",
    "counter",
    (*ROUTE, "reason"),
    "Messages stored in the dead-letter stream instead of their subject, by reason.",
)
SKIPPED = _m(
    "messages_skipped_total",
    "counter",
    (*ROUTE, "reason"),
    "Messages not published: filtered, already stored before a restart, on_error: skip, or re-read "
    "(a position the source handed over twice).",
)
PUBLISH_ERRORS = _m(
    "publish_errors_total",
    "counter",
    (*ROUTE, "kind"),
    "Publish attempts that did not end in a PubAck (error, no-responders, timeout, disconnected, refused).",
)
REORDERED = _m(
    "messages_reordered_total",
    "counter",
    ROUTE,
    "Records JetStream stored after a later record of their partition or channel (PubAck sequences).",
)
RECOPIED = _m(
    "messages_recopied_total",
    "counter",
    ROUTE,
    "Records settled at the source but missing from JetStream (it lost them), read and copied again.",
)
RETRIES = _m("publish_retries_total", "counter", ROUTE, "Times a lane resent its unacknowledged messages.")
IN_FLIGHT = _m("messages_in_flight", "gauge", ROUTE, "Messages read and not yet settled at the source.")
PUBLISH_LATENCY = _m(
    "publish_latency_seconds", "histogram", ROUTE, "Time from publish to PubAck, per successful publish."
)
SOURCE_BACKLOG = _m(
    "source_backlog_messages",
    "gauge",
    (*ROUTE, "lane"),
    "Messages waiting at the source: Kafka lag per partition, RabbitMQ queue depth.",
)
PAUSED = _m("route_paused", "gauge", ROUTE, "1 while the route holds its source back (JetStream slow or refusing).")
STALLED = _m("route_stalled", "gauge", ROUTE, "1 while the route has backlog but made no progress for too long.")
LAST_PROGRESS = _m(
    "route_last_progress_timestamp_seconds", "gauge", ROUTE, "When the route last settled a message (Unix time)."
)
CONNECTION_UP = _m("connection_up", "gauge", ("connection", "kind"), "1 while the connection is established.")
RECONNECTS = _m(
    "connection_reconnects_total", "counter", ("connection", "kind"), "Times the connection was re-established."
)
SLOW_CONSUMERS = _m(
    "nats_slow_consumers_total", "counter", (), "Slow-consumer errors the NATS client reported (replies dropped)."
)
SERVICE_PHASE = _m(
    "service_phase", "gauge", ("service", "phase"), "1 for the service's current cut-over phase, 0 for the others."
)
PHASE_RECORDS_REJECTED = _m(
    "phase_records_rejected_total",
    "counter",
    ("service", "kind"),
    "Phase records the bridge ignored, keeping the service's last valid phase: invalid (not JSON, wrong "
    "types, unknown phase, too large), transition (a move cutover refuses, or a deletion), report (an "
    "invalid bridge report).",
)
STREAM_MESSAGES = _m("stream_messages", "gauge", ("stream",), "Messages in a declared stream.")
STREAM_BYTES = _m("stream_bytes", "gauge", ("stream",), "Bytes in a declared stream.")
STREAM_MAX_BYTES = _m("stream_max_bytes", "gauge", ("stream",), "The stream's max_bytes limit; -1 when unlimited.")
CONSUMER_PENDING = _m(
    "stream_consumer_pending_messages",
    "gauge",
    ("stream", "consumer"),
    "Messages a JetStream consumer of a declared stream has not yet received.",
)
CONSUMER_ACK_PENDING = _m(
    "stream_consumer_ack_pending_messages",
    "gauge",
    ("stream", "consumer"),
    "Messages a JetStream consumer of a declared stream received and has not acknowledged.",
)
REVERSE_MESSAGES = _m(
    "reverse_messages_total",
    "counter",
    ("service", "route", "outcome"),
    "JetStream messages a reverse route settled: written (confirmed by the legacy broker), filtered "
    "(stored by a forward route: never written back) or unrenderable (terminated).",
)
REVERSE_FAILURES = _m(
    "reverse_write_failures_total",
    "counter",
    ("service", "route"),
    "Messages in legacy writes that failed (held and retried in order).",
)
REVERSE_RUNNING = _m(
    "reverse_route_running", "gauge", ("service", "route"), "1 while the reverse route runs (its service's phase)."
)
REVERSE_WRITING = _m(
    "reverse_route_writing",
    "gauge",
    ("service", "route"),
    "1 while this bridge holds the reverse route's lease and so writes it; summed over the bridges, 1 at most.",
)
READY = _m("ready", "gauge", (), "1 when /readyz answers 200: connected everywhere and no route stalled.")
INFO = _m("info", "gauge", ("version",), "Always 1; the bridge's version as a label.")

METRICS: tuple[MetricSpec, ...] = (
    RECEIVED,
    PUBLISHED,
    DUPLICATES,
    DEAD_LETTERED,
    SKIPPED,
    PUBLISH_ERRORS,
    REORDERED,
    RECOPIED,
    RETRIES,
    IN_FLIGHT,
    PUBLISH_LATENCY,
    SOURCE_BACKLOG,
    PAUSED,
    STALLED,
    LAST_PROGRESS,
    CONNECTION_UP,
    RECONNECTS,
    SLOW_CONSUMERS,
    SERVICE_PHASE,
    PHASE_RECORDS_REJECTED,
    REVERSE_MESSAGES,
    REVERSE_FAILURES,
    REVERSE_RUNNING,
    REVERSE_WRITING,
    STREAM_MESSAGES,
    STREAM_BYTES,
    STREAM_MAX_BYTES,
    CONSUMER_PENDING,
    CONSUMER_ACK_PENDING,
    READY,
    INFO,
)

# `run --workers N`: the supervisor's /metrics is its workers' (each sample labelled `worker`), plus these.
WORKER_UP = _m("worker_up", "gauge", ("worker",), "1 when the worker process runs and answered this scrape.")
WORKER_RESTARTS = _m(
    "worker_restarts_total", "counter", ("worker",), "Times the supervisor started the worker again after it died."
)
SUPERVISOR_METRICS: tuple[MetricSpec, ...] = (WORKER_UP, WORKER_RESTARTS)

# Process metrics prometheus-client adds (resident memory, CPU seconds, open files, ...).
PROCESS_SAMPLES = (
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
)


def exported_sample_names() -> frozenset[str]:
    """Every sample name a bridge's /metrics can contain (a supervisor's too)."""
    names = {sample for spec in (*METRICS, *SUPERVISOR_METRICS) for sample in spec.samples}
    return frozenset(names | set(PROCESS_SAMPLES))
