"""`nats-bridge verify`: a parity report between what the sources hold and what JetStream stored.

The bridge promises each source message stored exactly once. `verify` checks that promise
after the fact, read-only, on every broker:

- **Kafka routes**, per partition of every topic the route reads: each record in the range
  `[first, committed)` of the bridge's own group is stored exactly once (`kafka`).
- **RabbitMQ stream-queue routes** (`mode: stream`), by `Amqp-Stream-Offset`, the same way,
  up to the highest offset stored: RabbitMQ keeps no offset for stream consumers (`rabbitmq`).
- **RabbitMQ shadow and queue routes** have no positions: only "no Nats-Msg-Id stored twice"
  can be checked (not completeness, not order), and the report says so instead of guessing.

Order too: within one lane and one stream, positions must be stored increasing. A position
whose first copy a stream holds after a higher position of its lane is *out of order* (a second
copy is doubled, not counted again); dead letters keep no order.

Every source message of a range is judged with the route's own mapping code, so a message
the route filters or skips is not expected and one it dead-letters counts when its dead
letter is stored. Exit code 0 is clean, 1 something missing, doubled or out of order, 2
something could not be checked (`report`).

The modules, in the order a check runs:

* command: the whole check, in order, and the CLI command around it.
* claims: which stored message (or dead letter) is which route's, and each route's tallies
  (copies, and order as the scan goes).
* counts: those tallies, per lane position or per Msg-Id, small enough for ten million.
* scan: reading the streams into the tallies (headers only, nothing acknowledged).
* kafka, rabbitmq: each broker's side of a route, read over its range.
* expect: what the bridge does with one source message; a lane walked against its tallies.
* ranges: positions as runs (`120-130, 145`), missing, doubled and out of order.
* report: the result and its JSON and exit code; output: the same for people.
* limits: timeouts and batch sizes.
"""

from bridge.errors import ScanError
from bridge.route_shapes import SubjectFit
from bridge.verify.claims import RouteCheck, build_checks, route_kind
from bridge.verify.command import verify, verify_command
from bridge.verify.counts import IdCounts, PositionCounts
from bridge.verify.expect import Expectation, LaneComparer, expectation, unchecked_lane
from bridge.verify.kafka import KafkaRouteReader
from bridge.verify.output import render
from bridge.verify.rabbitmq import compare_stream_queue
from bridge.verify.ranges import DoubledRun, RunBuilder, compress, doubled_runs, format_ranges
from bridge.verify.report import (
    EXIT_CLEAN,
    EXIT_DIFFERS,
    EXIT_UNCHECKED,
    LaneParity,
    RouteKind,
    RouteParity,
    VerifyReport,
)
from bridge.verify.scan import StreamScan, dispatcher, scan_stream

__all__ = [
    "EXIT_CLEAN",
    "EXIT_DIFFERS",
    "EXIT_UNCHECKED",
    "DoubledRun",
    "Expectation",
    "IdCounts",
    "KafkaRouteReader",
    "LaneComparer",
    "LaneParity",
    "PositionCounts",
    "RouteCheck",
    "RouteKind",
    "RouteParity",
    "RunBuilder",
    "ScanError",
    "StreamScan",
    "SubjectFit",
    "VerifyReport",
    "build_checks",
    "compare_stream_queue",
    "compress",
    "dispatcher",
    "doubled_runs",
    "expectation",
    "format_ranges",
    "render",
    "route_kind",
    "scan_stream",
    "unchecked_lane",
    "verify",
    "verify_command",
]
