"""`nats-bridge dry-run`: what would go wrong if this file ran — found without running it.

Pure checks on a loaded mapping file (the --connect probes live in bridge.dryrun.connect).
Each finding has a severity; the command exits 2 when there is an error, 1 when there is
only a warning, 0 otherwise ("info" findings never change the exit code):

capture      every subject a route can produce (bridge.route_shapes) must land in exactly
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
consumers    each service's `consumers:` against the legacy queue or group it `replaces`: what it
             would miss (error), bindings no NATS filter expresses exactly, filters wider than the
             legacy subscription (warnings); bridge.dryrun.consumers.
consumer     (--connect only) each declared consumer against the server's, as `consumers plan`
drift        sees it: not made yet (info), drifted (warning), a change JetStream refuses (error).
durability   (--connect only) each stream's replicas, storage and sync_interval, each route's
             legacy side (queue type, replication factor), and a warning where a replicated
             or fsyncing legacy source lands on a weaker stream (bridge.durability).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta

from bridge.config.model import BridgeConfig
from bridge.dryrun.consumers import check_consumers
from bridge.dryrun.report import Finding
from bridge.dryrun.routes import check_collisions, check_duplicates, check_headers, check_msg_ids
from bridge.dryrun.streams import (
    capture_map,
    check_capture,
    check_retention,
    check_stream_overlap,
    check_window,
    stream_subjects,
)
from bridge.plan import Plan, compile_plan
from bridge.route_shapes import route_shapes

DEFAULT_OUTAGE_BUDGET = timedelta(minutes=2)


def offline_checks(
    config: BridgeConfig | Plan,
    *,
    outage_budget: timedelta = DEFAULT_OUTAGE_BUDGET,
    server_streams: Mapping[str, Sequence[str]] | None = None,
) -> list[Finding]:
    """Every offline check. `server_streams` (name -> subjects, from --connect) adds the
    server's streams the file does not declare to the capture and overlap checks."""
    plan = compile_plan(config)
    config = plan.config
    streams = stream_subjects(config, server_streams or {})
    shapes = {route.key: route_shapes(route.service, route.config) for route in plan}
    routes = {route.key: (route.service, route.config) for route in plan}
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
    findings += check_consumers(config)
    return findings
