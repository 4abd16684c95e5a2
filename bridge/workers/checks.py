"""What a mapping file must not do, and what its owner should know, before N >= 2 workers run it.

- A RabbitMQ `stream` route cannot be shared: a stream queue hands every consumer every message,
  from the offset that consumer asked for (the route resumes after the last offset stored for
  the queue, bridge.brokers.rabbitmq.source). N workers would each read the whole stream: N times
  the work, and N writers of the one checkpoint. Refused; run such a route in one process.
- A RabbitMQ `shadow` or `queue` route without `single_active_consumer: true` makes the workers
  competing consumers: each gets an interleaved share of the queue, so the stream no longer holds
  the queue's order. Allowed (it is how RabbitMQ routes scale), with one WARNING per route.
- Kafka routes share partitions through the consumer group; nothing to say here (a topic with
  fewer partitions than workers leaves some idle, which only the broker knows).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.config.model import BridgeConfig
from bridge.config.routes import FromRabbitMQ, RabbitMQMode


@dataclass(slots=True)
class WorkerChecks:
    """Refusals (any: the supervisor does not start) and warnings (logged once each)."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_workers(config: BridgeConfig, workers: int) -> WorkerChecks:
    """What `config` means for `workers` processes; nothing at all for one."""
    found = WorkerChecks()
    if workers < 2:
        return found
    for service, route in config.routes():
        subscription = route.from_
        if not isinstance(subscription, FromRabbitMQ):
            continue
        name = f"{service}/{route.name}"
        mode = subscription.effective_mode
        if mode is RabbitMQMode.STREAM:
            found.errors.append(
                f"route {name} reads the stream queue '{subscription.queue}' (mode: stream), which "
                f"{workers} workers cannot share: each would read every message from its own offset. "
                "Run it with --workers 1, or move it to a mapping file of its own"
            )
        elif not subscription.single_active_consumer:
            found.warnings.append(_interleave_warning(name, workers, mode, subscription.queue))
    return found


def _interleave_warning(name: str, workers: int, mode: RabbitMQMode, queue: str | None) -> str:
    if mode is RabbitMQMode.SHADOW:
        where = "its shadow queue"
        cure = (
            "; set single_active_consumer: true on the route's `from` to keep the order (one worker "
            "consumes, the others stand by)"
        )
    else:  # the bridge never declares a legacy queue: the queue's own arguments decide
        where = f"queue '{queue}'"
        cure = (
            " (unless the queue was declared with x-single-active-consumer: then say so with "
            "single_active_consumer: true on the route's `from`)"
        )
    return (
        f"route {name}: {workers} workers consume {where} as competing consumers, so the stream receives "
        f"its messages interleaved, not in the queue's order{cure}"
    )
