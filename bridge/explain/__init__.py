"""`explain`: which routes take a given message, and exactly what each would publish.

It runs the same matching (`bridge.routing`) and mapping (`bridge.mapping`) code as the
live bridge, offline, so its answer is the bridge's behaviour rather than a description
of it. Routes that do not take the message are listed with the reason, because "why
didn't my message arrive" is the question people bring to this command.

Given the legacy estate (a RabbitMQ definitions export, `explain --definitions`), an AMQP
message is also routed as RabbitMQ routes it (`bridge.importers.topology_routing`): which
legacy queues get it and through which exchanges, with the bridge's shadow queues bound
where its routes bind them. A shadow route then takes the message when its queue is reached
(through exchange-to-exchange bindings too), a queue route when its queue is; and the two
answers are compared, because the migration's risk is exactly where they differ: a message
legacy consumers get that no stream keeps, or one a stream keeps that no legacy consumer got.
"""

from bridge.explain.messages import explain_amqp, explain_kafka
from bridge.explain.outcome import route_outcome
from bridge.explain.output import format_explanation
from bridge.explain.types import Definitions, Explanation, LegacyRouting, Mismatch, RouteOutcome

__all__ = [
    "Definitions",
    "Explanation",
    "LegacyRouting",
    "Mismatch",
    "RouteOutcome",
    "explain_amqp",
    "explain_kafka",
    "format_explanation",
    "route_outcome",
]
