"""A service's `consumers:`: the JetStream durable consumers that take over from its legacy ones.

The bridge copies messages into streams; the services' own readers move to JetStream consumers
one by one (MIGRATION.md, runbook step 2). Declaring those consumers here, beside the routes that
fill their streams, lets `consumers plan|apply` make them as declared and lets `validate` and
`dry-run` prove, offline, that each one receives what the legacy queue or group it `replaces`
received (bridge.consumer_coverage).

Every rule below is one nats-server would enforce when the consumer is created
(server/consumer.go, `checkConsumerCfg` and `setConsumerConfigDefaults`), moved forward so a
mistake is a line-numbered error in the file, not a refusal during a cut-over.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import AwareDatetime, Field, field_validator, model_validator

from bridge.config.base import NAME_PATTERN, Strict
from bridge.config.durations import Duration
from bridge.config.limits import INT64_MAX
from bridge.routing import is_valid_subject, is_valid_subject_filter
from bridge.routing.shapes import filter_shape, intersects

# nats-server's isValidName: no whitespace, '.', '*', '>', path separators; at most 255 bytes.
CONSUMER_NAME_PATTERN = r"^[^\s.*>/\\]{1,255}$"
# A queue group is a NATS queue name: one token without whitespace.
QUEUE_GROUP_PATTERN = r"^[^\s.*>]+$"


class DeliverPolicy(StrEnum):
    """Where a new consumer starts; JetStream never changes it afterwards."""

    ALL = "all"
    LAST = "last"
    NEW = "new"
    BY_START_SEQUENCE = "by_start_sequence"
    BY_START_TIME = "by_start_time"
    LAST_PER_SUBJECT = "last_per_subject"


class AckPolicy(StrEnum):
    """How deliveries are acknowledged; JetStream never changes it afterwards."""

    EXPLICIT = "explicit"
    ALL = "all"
    NONE = "none"


class Delivery(StrEnum):
    """Pull: clients fetch (competing workers share one consumer). Push: the server sends to
    `deliver_subject`, to one member of `queue_group` at a time when one is given."""

    PULL = "pull"
    PUSH = "push"


class ReplacesConfig(Strict):
    """The legacy consumer this JetStream consumer takes over from: a RabbitMQ queue or a Kafka group.

    What it received is worked out from the service's route that copies it: a queue's binding
    keys (default: the route's own, as `import rabbitmq` binds a shadow route like the legacy
    queues) or a group's topics (default: the route's), each through the route's `to` template.
    """

    queue: str | None = Field(None, description="The legacy RabbitMQ queue whose consumers move to this one.")
    group: str | None = Field(None, description="The legacy Kafka consumer group whose members move to this one.")
    route: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        description="The service's route that copies what the legacy consumer received; "
        "may be left out when the service has one route of that broker.",
    )
    bindings: list[str] | None = Field(
        None,
        description="The queue's binding keys on the route's exchange; default: the route's `bindings`.",
        examples=[["order.eu.*"]],
    )
    topics: list[str] | None = Field(
        None, description="The topics the group read; default: the route's `topics`.", examples=[["payments"]]
    )

    @model_validator(mode="after")
    def _one_legacy_consumer(self) -> ReplacesConfig:
        if (self.queue is None) == (self.group is None):
            raise ValueError("give exactly one of 'queue' (RabbitMQ) or 'group' (Kafka)")
        if self.queue is not None and self.topics is not None:
            raise ValueError("'topics' is for a Kafka group; a queue takes 'bindings'")
        if self.group is not None and self.bindings is not None:
            raise ValueError("'bindings' is for a RabbitMQ queue; a group takes 'topics'")
        return self

    @property
    def kind(self) -> str:
        return "rabbitmq" if self.queue is not None else "kafka"

    def describe(self) -> str:
        return f"queue '{self.queue}'" if self.queue is not None else f"group '{self.group}'"


class ConsumerConfig(Strict):
    """A JetStream durable consumer, made by `consumers apply` (never by `run`)."""

    name: str = Field(
        pattern=CONSUMER_NAME_PATTERN,
        description="Durable name, unique within its stream; no whitespace, '.', '*', '>', '/' or '\\\\'.",
        examples=["orders-worker"],
    )
    stream: str = Field(description="The stream it reads: one of the file's `streams`.")
    description: str | None = Field(None, max_length=4096, description="Free text shown in `nats consumer info`.")
    filter_subjects: list[str] = Field(
        default_factory=list,
        description="Subjects it receives (wildcards allowed, none overlapping); empty: the whole stream.",
    )
    deliver_policy: DeliverPolicy = Field(
        DeliverPolicy.ALL,
        description="Where it starts: all | last | new | by_start_sequence | by_start_time | last_per_subject. "
        "Fixed once created.",
    )
    start_sequence: int | None = Field(
        None, ge=1, le=INT64_MAX, strict=True, description="With `deliver_policy: by_start_sequence`."
    )
    start_time: AwareDatetime | None = Field(
        None, description="With `deliver_policy: by_start_time`: an ISO-8601 time with its zone."
    )
    ack_policy: AckPolicy = Field(AckPolicy.EXPLICIT, description="explicit | all | none. Fixed once created.")
    ack_wait: Duration | None = Field(
        None, description="How long a delivery may stay unacknowledged before it is redelivered; absent: 30s."
    )
    max_deliver: int | None = Field(
        None, ge=1, le=INT64_MAX, strict=True, description="Deliveries of one message at most; absent: unlimited."
    )
    backoff: list[Duration] = Field(
        default_factory=list,
        description="Delays between redeliveries, e.g. `[1s, 10s, 1m]`; needs max_deliver greater than its length.",
    )
    max_ack_pending: int | None = Field(
        None, ge=1, le=INT64_MAX, strict=True, description="Deliveries unacknowledged at once at most; absent: 1000."
    )
    delivery: Delivery = Field(Delivery.PULL, description="pull (clients fetch) | push (to deliver_subject).")
    deliver_subject: str | None = Field(None, description="Push: the subject deliveries are sent to.")
    queue_group: str | None = Field(
        None, pattern=QUEUE_GROUP_PATTERN, description="Push: the queue group whose members share the deliveries."
    )
    replaces: ReplacesConfig | None = Field(
        None, description="The legacy queue or group it takes over from (checked by validate and dry-run)."
    )

    @field_validator("filter_subjects")
    @classmethod
    def _filters_apart(cls, subjects: list[str]) -> list[str]:
        for index, subject in enumerate(subjects):
            if not is_valid_subject_filter(subject):
                raise ValueError(
                    f"'{subject}' is not a valid NATS subject filter (tokens separated by '.', "
                    "no spaces, '*' for one token, '>' only at the end)"
                )
            for other in subjects[:index]:
                # nats-server refuses overlapping filters on one consumer (err_code 10138).
                if intersects(filter_shape(subject), filter_shape(other)):
                    raise ValueError(f"'{subject}' overlaps '{other}': JetStream refuses overlapping filter subjects")
        return subjects

    @model_validator(mode="after")
    def _as_jetstream_allows(self) -> ConsumerConfig:
        self._check_start()
        self._check_acks()
        self._check_delivery()
        return self

    def _check_start(self) -> None:
        policy = self.deliver_policy
        if (self.start_sequence is not None) != (policy is DeliverPolicy.BY_START_SEQUENCE):
            raise ValueError("'start_sequence' goes with 'deliver_policy: by_start_sequence', and only with it")
        if (self.start_time is not None) != (policy is DeliverPolicy.BY_START_TIME):
            raise ValueError("'start_time' goes with 'deliver_policy: by_start_time', and only with it")
        if policy is DeliverPolicy.LAST_PER_SUBJECT and not self.filter_subjects:
            raise ValueError("'deliver_policy: last_per_subject' needs 'filter_subjects'")

    def _check_acks(self) -> None:
        if self.ack_policy is AckPolicy.NONE:
            given = [f for f in ("ack_wait", "max_deliver", "max_ack_pending") if getattr(self, f) is not None]
            if self.backoff:
                given.append("backoff")
            if given:
                raise ValueError(f"{', '.join(given)} mean nothing with 'ack_policy: none' (nothing is acked)")
        if self.backoff:
            # checkConsumerCfg: "max deliver is required to be > length of backoff values" (10116);
            # an absent max_deliver is unlimited (-1) there, which fails the same test.
            if self.max_deliver is None or self.max_deliver <= len(self.backoff):
                raise ValueError(
                    f"'backoff' has {len(self.backoff)} delays: JetStream needs 'max_deliver' greater than that"
                )
            # setConsumerConfigDefaults: a backoff's first delay *is* the ack wait.
            if self.ack_wait is not None and self.ack_wait != self.backoff[0]:
                raise ValueError("with 'backoff', JetStream waits its first delay for an ack: leave 'ack_wait' out")

    def _check_delivery(self) -> None:
        if self.delivery is Delivery.PULL:
            if self.deliver_subject is not None or self.queue_group is not None:
                raise ValueError("'deliver_subject' and 'queue_group' are for 'delivery: push'")
            return
        if self.deliver_subject is None:
            raise ValueError("'delivery: push' needs 'deliver_subject', the subject the server sends to")
        if not is_valid_subject(self.deliver_subject):
            raise ValueError(f"'{self.deliver_subject}' is not a literal NATS subject (no wildcards)")

    @property
    def effective_ack_wait(self) -> float | None:
        """Seconds the server will wait for an ack, as it stores it (None: acks off)."""
        if self.ack_policy is AckPolicy.NONE:
            return None
        if self.backoff:
            return self.backoff[0].total_seconds()
        return self.ack_wait.total_seconds() if self.ack_wait is not None else 30.0
