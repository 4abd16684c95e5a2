"""Durability posture: what the legacy side promised about an acknowledged message, what the
JetStream stream it lands on keeps, and a warning when the stream keeps less.

Why this exists: Jepsen's analysis of NATS 2.12.1 (2025-12) showed JetStream acknowledging a
publish before it is fsynced (the server's `sync_interval`, 2 minutes by default) and losing
acknowledged messages on a power failure or an OS crash; an R1 stream loses everything its one
disk held. A RabbitMQ quorum queue confirms only once a majority of its members fsynced the
message. Moving a team from one to the other silently downgrades what "acknowledged" means, and
nothing in a mapping file says so. `dry-run --connect` and `status` show, per stream, replicas,
storage and (where a server's monitoring endpoint reveals it) `sync_interval`, and warn when a
route from a replicated or fsyncing legacy source lands on a weaker stream.

What each legacy setting promises (MIGRATION.md has the table and the measured cost):

- RabbitMQ quorum queue: Raft; a publisher confirm after a majority of its members wrote *and
  fsynced* it. Kept by: replicas 3, storage file, `sync_interval: always`.
- RabbitMQ stream: replicated to a majority before the confirm, but never fsynced explicitly
  (it relies on replication). Kept by: replicas 3, storage file; the default sync is comparable.
- Kafka topic, acks=all: the in-sync replicas have it (in the page cache: Kafka does not fsync
  by default, `flush.messages`); replication factor N. Kept by: replicas 3 for N >= 2 (a
  `flush.messages: 1` topic fsyncs each record, like a quorum queue).
- RabbitMQ classic durable queue: one node; persistent messages are confirmed after they reach
  the disk. Kept by: replicas 1, storage file, `sync_interval: always` (a note, not a warning:
  the node is still one disk either way).
- Transient (non-durable) queue: nothing to keep.

The package: `sync.py` (what a stream keeps), `assess.py` (the advice and the report) and
`legacy.py` (the words they share) are pure; what a queue or topic promised is the brokers'
description of it (bridge.brokers.legacy, read by each broker's `legacy.py`), and `probe.py`
asks the brokers for the facts.
"""
