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

The brokers read (`SourceBroker.sample`, in bridge/brokers/*/sample.py); this module turns what
they read into replay records, and `bridge.dryrun.connect` runs them together and replays it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.brokers.base import Look, SampledMessage, SampleRead
from bridge.dryrun.records import AmqpRecord, KafkaRecord
from bridge.dryrun.report import Finding, Severity
from bridge.message import AmqpOrigin, KafkaOrigin, SourceMessage

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

    def add(self, read: SampleRead) -> None:
        """What one broker read, as replay records and findings."""
        self.messages += [_sampled(item) for item in read.messages]
        self.findings += [finding(look) for look in read.looks]


def finding(look: Look) -> Finding:
    """A broker's answer as a dry-run finding (the levels are dry-run's severities)."""
    return Finding(Severity(look.level.value), look.check, look.subject, look.text)


def _sampled(item: SampledMessage) -> Sampled:
    message = item.message
    return Sampled(item.where, replay_record(message), message if item.exact else None)


def replay_record(message: SourceMessage) -> KafkaRecord | AmqpRecord:
    """The record a replay takes, of a message read live: a Kafka record as consumed, an AMQP
    delivery from its exchange, or (stream routes) its queue."""
    origin = message.origin
    if isinstance(origin, KafkaOrigin):
        return KafkaRecord(
            topic=origin.topic,
            partition=origin.partition,
            offset=origin.offset,
            key=origin.key,
            value=message.body,
            headers=tuple(message.headers),
            timestamp_ms=origin.timestamp_ms,
        )
    assert isinstance(origin, AmqpOrigin)
    queue = origin.queue
    return AmqpRecord(
        exchange=origin.exchange if queue is None else None,
        routing_key=origin.routing_key,
        queue=queue,
        properties=dict(origin.properties),
        headers=dict(message.headers),
        body=message.body or b"",
    )
