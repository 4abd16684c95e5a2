"""Reverse routes: NATS -> legacy broker, for legacy consumers that have not moved yet.

targets.py          the LegacyTarget interface, LegacyMessage, per-message outcomes
rabbitmq_target.py  publish to an existing exchange with publisher confirms
kafka_target.py     produce to a topic, idempotent, acks=all
consumer.py         the route's durable JetStream pull consumer
route.py            fetch -> filter -> render -> write -> ack after confirm; retries in order

The routing-key / record-key templates ({subject[i]}, {header:NAME}) are
`bridge.routing.key_template`, below the config model that validates them at load time; they are
re-exported here for the reverse routes' users. Import the route from `bridge.reverse.route`.
"""

from bridge.routing.key_template import KeyTemplate, parse

__all__ = ["KeyTemplate", "parse"]
