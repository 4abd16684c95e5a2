"""(1) IN and (3') OUT: one package per broker, the same shape in each.

    brokers/kafka/      client.py (the one place that builds aiokafka clients: TLS, SASL),
                        source.py (a route's consumer group), target.py (reverse routes),
                        admin.py (offsets, lag, groups, topic configs), ranges.py (offsets without
                        a group), groups.py (a legacy group), probe.py + sample.py (dry-run),
                        legacy.py (durability), demo.py (`traffic`), route.py + cluster.py (the
                        objects features ask), start.py, records.py, names.py
    brokers/rabbitmq/   client.py (the one place that connects: URL, TLS, auth), source.py
                        (shadow, queue and stream modes), target.py, admin.py (depths, clean-up),
                        ranges.py (stream offsets), queues.py (a legacy queue), probe.py +
                        sample.py (dry-run), legacy.py (durability), route.py + server.py (the
                        objects features ask), management.py, records.py, names.py
    brokers/nats/       client.py (the one place a NATS connection is made), admin.py

The features (runner, status, cut-over, verify, handoff, explain, reverse routes) ask a
`RouteBroker` or a `LegacyTarget` made here, dry-run, the durability posture and `traffic` a
`SourceBroker` (the protocols are in base.py); this module is the one place that looks at which
broker a route or a source is.
"""

from __future__ import annotations

import aiormq
from aiokafka.errors import KafkaError

from bridge.brokers.base import Backlog, RouteBroker, SourceBroker
from bridge.brokers.kafka.cluster import KafkaCluster
from bridge.brokers.kafka.route import KafkaRoute
from bridge.brokers.kafka.target import KafkaTarget
from bridge.brokers.rabbitmq.route import RabbitMQRoute
from bridge.brokers.rabbitmq.server import RabbitMQServer
from bridge.brokers.rabbitmq.target import RabbitMQTarget
from bridge.config.model import BridgeConfig
from bridge.config.routes import FromKafka, FromRabbitMQ, RouteConfig
from bridge.config.services import ReverseTo
from bridge.config.sources import KafkaSource, RabbitMQSource
from bridge.errors import BridgeError
from bridge.targets import LegacyTarget

__all__ = [
    "BROKER_ERRORS",
    "Backlog",
    "RouteBroker",
    "SourceBroker",
    "reverse_target",
    "route_broker",
    "source_broker",
]

# What the broker clients raise for a broker's refusal or a connection that broke (besides
# OSError and TimeoutError), for the commands that report it rather than stop on it.
BROKER_ERRORS: tuple[type[Exception], ...] = (KafkaError, aiormq.exceptions.AMQPError)


def route_broker(config: BridgeConfig, service: str, route: RouteConfig) -> RouteBroker:
    """The broker `route` reads, bound to the route (its group or queue)."""
    source = config.sources[route.source]
    subscription = route.from_
    if isinstance(source, KafkaSource) and isinstance(subscription, FromKafka):
        return KafkaRoute(route.source, source, subscription, service, route.name)
    if isinstance(source, RabbitMQSource) and isinstance(subscription, FromRabbitMQ):
        return RabbitMQRoute(route.source, source, subscription, service, route.name)
    raise BridgeError(f"route {service}/{route.name}: source '{route.source}' does not match its 'from'")


def source_broker(name: str, source: RabbitMQSource | KafkaSource) -> SourceBroker:
    """The broker of source `name`, for what is asked of all the routes reading it at once."""
    if isinstance(source, RabbitMQSource):
        return RabbitMQServer(name, source)
    return KafkaCluster(name, source)


def reverse_target(source: RabbitMQSource | KafkaSource, to: ReverseTo, *, label: str) -> LegacyTarget:
    """The target `to` names, on the connection of `source`; `label` names the route in logs."""
    if isinstance(source, RabbitMQSource) and to.exchange is not None:
        return RabbitMQTarget(source, to.exchange, label=label)
    if isinstance(source, KafkaSource) and to.topic is not None:
        return KafkaTarget(source, to.topic, label=label)
    what = f"exchange '{to.exchange}'" if to.exchange is not None else f"topic '{to.topic}'"
    raise BridgeError(f"reverse route {label}: source '{to.source}' is {source.type}, but 'to' names {what}")
