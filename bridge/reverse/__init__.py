"""Reverse routes: NATS -> legacy broker, for legacy consumers that have not moved yet.

template.py         routing-key / record-key templates ({subject[i]}, {header:NAME}), parsed once
targets.py          the LegacyTarget interface, LegacyMessage, per-message outcomes
rabbitmq_target.py  publish to an existing exchange with publisher confirms
kafka_target.py     produce to a topic, idempotent, acks=all
consumer.py         the route's durable JetStream pull consumer
route.py            fetch -> filter -> render -> write -> ack after confirm; retries in order

Only the pure template module is re-exported here: `bridge.config.model` validates templates
with it at load time, and a package import that pulled in the route (which imports the
config model) would be circular. Import the route from `bridge.reverse.route`.
"""

from bridge.reverse.template import KeyTemplate, parse

__all__ = ["KeyTemplate", "parse"]
