"""`dry-run --sample N`: what the bridge would do with the traffic on the brokers now.

A replay of recorded messages (bridge.dryrun.replay) shows the mapping's effect on traffic
someone saved; a sample reads it live. Reading must take nothing from anybody, so each kind
of source is read the one way that leaves it as it was:

- Kafka: a consumer *without a group*, assigned to every partition of the routes' topics and
  positioned at the last N offsets. No group is joined, nothing is committed, no legacy
  consumer's share of the partitions changes.
- A RabbitMQ exchange (shadow routes): a server-named, exclusive, auto-delete queue bound so
  that it gets a copy of everything the exchange routes (topic `#`, fanout, headers with
  `x-match: all` and no arguments; a direct exchange only the routes' own keys, as direct
  bindings have no wildcard). It sees what is published while it listens (`--duration`), not
  what was published before, and disappears with the connection.
- A RabbitMQ stream queue (stream routes): read from an offset. A stream keeps what is read;
  the acknowledgements a stream consumer sends only grant credit.
- A RabbitMQ queue a route drains (queue mode) is *not* sampled: a classic or quorum queue
  cannot be read without taking messages from its consumers, and a requeue would mark them
  redelivered (and count toward a quorum queue's delivery limit). Record them and use `--input`.

N is per place read (a topic, an exchange, a stream queue). Every sampled message then goes
through the same replay as `--input`, so what is shown is what `run` would publish.

This module holds what the two readers share; `sample_kafka` and `sample_rabbitmq` read, and
`bridge.dryrun.connect` runs them together and replays what they read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.dryrun.records import AmqpRecord, KafkaRecord
from bridge.dryrun.report import Finding
from bridge.message import SourceMessage

CHECK = "sample"
CONNECT_TIMEOUT = 10.0


@dataclass(slots=True)
class Sampled:
    """One message read from a broker: where, the record a replay takes, the exact message."""

    where: str
    record: KafkaRecord | AmqpRecord
    message: SourceMessage | None = None  # exact, when a replay of `record` alone would lose detail


@dataclass(slots=True)
class Sample:
    """Everything read, and what could not be read or was left alone on purpose."""

    messages: list[Sampled] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
