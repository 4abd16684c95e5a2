"""(3) OUT: the NATS side — connecting, declaring streams, and the pipelined publisher."""

from bridge.brokers.nats.client import ConnectionEvents, connect_nats
from bridge.jetstream.publish_types import InFlight, PublishFailure, PublishOwner
from bridge.jetstream.publisher import JetStreamPublisher
from bridge.logs import redact_url

__all__ = [
    "ConnectionEvents",
    "InFlight",
    "JetStreamPublisher",
    "PublishFailure",
    "PublishOwner",
    "connect_nats",
    "redact_url",
]
