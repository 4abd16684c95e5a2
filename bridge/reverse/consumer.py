"""The JetStream side of a reverse route: its durable pull consumer, created or bound.

The consumer is durable so a restarted bridge resumes exactly where the last one stopped
acknowledging, and its ack policy is explicit so a message counts as done only once the
legacy broker confirmed it. `max_ack_pending` bounds what is in flight to the legacy broker.

`add_consumer` with a name is JetStream's create-or-update (nats-server 2.9+): an existing
consumer of the same name is bound as it is, and fields JetStream allows to change (filter
subjects, max_ack_pending, ack_wait) follow the mapping file. A change it refuses (another
deliver policy, a push consumer of that name) is an error a person must resolve.
"""

from __future__ import annotations

import asyncio
import logging

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, ReplayPolicy
from nats.js.errors import APIError, NotFoundError

from bridge.config.services import ReverseRouteConfig
from bridge.errors import ReverseConsumerError

log = logging.getLogger(__name__)

PullSubscription = JetStreamContext.PullSubscription


def durable_name(service: str, config: ReverseRouteConfig) -> str:
    """The consumer's name: the route's `durable`, or one derived from service and route."""
    return config.durable_name(service)


def consumer_config(name: str, config: ReverseRouteConfig, *, ack_wait: float) -> ConsumerConfig:
    """A durable pull consumer that starts at the stream's first message and wants explicit acks.

    One filter goes in `filter_subject`, several in `filter_subjects` (nats-server 2.10+), none
    reads the whole stream. `ack_wait` is generous: a batch waits for legacy confirms (bounded
    well below it), and a held batch is kept alive with in-progress acks while it is retried.
    """
    filters = list(config.filter_subjects)
    return ConsumerConfig(
        name=name,
        durable_name=name,
        description="nats-bridge reverse route: NATS -> legacy broker, acked after the legacy confirm",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_ack_pending=config.max_ack_pending,
        replay_policy=ReplayPolicy.INSTANT,
        filter_subject=filters[0] if len(filters) == 1 else None,
        filter_subjects=filters if len(filters) > 1 else None,
    )


async def bind_consumer(
    js: JetStreamContext, stream: str, config: ConsumerConfig, *, attempts: int = 5
) -> PullSubscription:
    """Create (or update) the durable consumer and subscribe to it for pulling.

    Timeouts and lost connections are retried a few times (NATS reconnects by itself); a
    refusal is not: it needs a person.
    """
    name = config.durable_name
    assert name is not None
    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            await js.add_consumer(stream, config)
            return await js.pull_subscribe_bind(durable=name, stream=stream)
        except NotFoundError as error:
            raise ReverseConsumerError(
                f"stream '{stream}' does not exist: declare it before the reverse route reads it "
                f"({error.description or error})"
            ) from None
        except APIError as error:
            raise ReverseConsumerError(
                f"JetStream refused consumer '{name}' on stream '{stream}': {error.description or error} "
                f"(err_code {error.err_code})"
            ) from None
        except (NatsError, TimeoutError) as error:
            if attempt == attempts:
                raise ReverseConsumerError(
                    f"JetStream did not answer for consumer '{name}' on stream '{stream}': "
                    f"{str(error) or type(error).__name__}"
                ) from None
            text = str(error) or type(error).__name__
            log.warning("consumer %s on stream %s: %s; retrying in %.1fs", name, stream, text, delay)
            await asyncio.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")
