"""`nats-bridge consumers plan|apply`: the file's durable consumers against the server's, field by field.

The consumers' counterpart of bridge.jetstream.plan, with the same actions (create, update,
unchanged, refused) and the same promises: consumers the file does not name are never touched
and never listed, and nothing is ever deleted — a consumer's position and pending acks are
a service's state, and only a person may throw them away.

The file's settings are compared as the schema defines them: an absent `ack_wait` is 30s (or
the first `backoff` delay, which JetStream uses instead), an absent `max_deliver` unlimited, an
absent `max_ack_pending` 1000 (nats-server's `setConsumerConfigDefaults`); `description` only
when given; filter subjects as a set (JetStream keeps one as `filter_subject`, several as
`filter_subjects`).

Refused: what nats-server's `checkNewConsumerConfig` (server/consumer.go) will not change on an
existing consumer — "deliver policy can not be updated", "start sequence ...", "start time ...",
"ack policy ...", and "can not update pull consumer to push based" (or back). A refused consumer
keeps its position; the way out is a consumer with a new name, which the reason says.

An update starts from the server's config (`consumer_info().config`) with only the differing
fields replaced, so what the file has no word for (replay policy, max_waiting, replicas,
metadata...) is kept, as far as nats-py's ConsumerConfig knows those fields.

The planner is pure; bridge.jetstream.consumer_apply reads the server and applies.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nats.js import api as js_api

from bridge.config.consumers import AckPolicy, ConsumerConfig, Delivery
from bridge.jetstream.plan import Action, FieldChange, Refusal, show_value

_DEFAULT_MAX_ACK_PENDING = 1000


@dataclass(frozen=True, slots=True)
class ConsumerPlan:
    """The plan for one consumer of the file; `target` is what apply sends (None: nothing to send)."""

    service: str
    stream: str
    name: str
    action: Action
    changes: tuple[FieldChange, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    target: js_api.ConsumerConfig | None = None

    @property
    def label(self) -> str:
        return f"{self.stream}/{self.name}"

    def as_json(self) -> dict[str, object]:
        return {
            "service": self.service,
            "stream": self.stream,
            "consumer": self.name,
            "action": self.action.value,
            "changes": [{"field": c.field, "server": c.server, "file": c.file} for c in self.changes],
            "refusals": [{"field": r.field, "reason": r.reason} for r in self.refusals],
        }


@dataclass(frozen=True, slots=True)
class ConsumersPlan:
    """Every consumer the file names, in file order."""

    consumers: tuple[ConsumerPlan, ...]

    @property
    def refused(self) -> bool:
        return any(c.action is Action.REFUSED for c in self.consumers)

    @property
    def pending(self) -> bool:
        return any(c.action in (Action.CREATE, Action.UPDATE) for c in self.consumers)

    def count(self, action: Action) -> int:
        return sum(1 for c in self.consumers if c.action is action)

    def as_json(self) -> dict[str, object]:
        return {
            "consumers": [c.as_json() for c in self.consumers],
            "summary": {action.value: self.count(action) for action in Action},
        }


def to_nats_consumer(consumer: ConsumerConfig) -> js_api.ConsumerConfig:
    """What create sends: the file's consumer with JetStream's own defaults written out."""
    values = _file_values(consumer)
    filters = values["filter_subjects"]
    return js_api.ConsumerConfig(
        name=consumer.name,
        durable_name=consumer.name,
        description=consumer.description,
        deliver_policy=js_api.DeliverPolicy(values["deliver_policy"]),
        opt_start_seq=consumer.start_sequence,
        opt_start_time=consumer.start_time,
        ack_policy=js_api.AckPolicy(values["ack_policy"]),
        ack_wait=values["ack_wait"],
        max_deliver=values["max_deliver"],
        backoff=values["backoff"] or None,
        max_ack_pending=values["max_ack_pending"],
        filter_subject=filters[0] if len(filters) == 1 else None,
        filter_subjects=filters if len(filters) > 1 else None,
        deliver_subject=consumer.deliver_subject,
        deliver_group=consumer.queue_group,
    )


def _file_values(consumer: ConsumerConfig) -> dict[str, Any]:
    """The file's consumer as the server will hold it, by the mapping file's field names."""
    acked = consumer.ack_policy is not AckPolicy.NONE
    return {
        "filter_subjects": sorted(consumer.filter_subjects),
        "deliver_policy": consumer.deliver_policy.value,
        "start_sequence": consumer.start_sequence,
        "start_time": consumer.start_time,
        "ack_policy": consumer.ack_policy.value,
        "ack_wait": consumer.effective_ack_wait,
        "max_deliver": consumer.max_deliver if consumer.max_deliver is not None else -1,
        "backoff": [delay.total_seconds() for delay in consumer.backoff],
        "max_ack_pending": (consumer.max_ack_pending or _DEFAULT_MAX_ACK_PENDING) if acked else None,
        "delivery": consumer.delivery.value,
        "deliver_subject": consumer.deliver_subject,
        "queue_group": consumer.queue_group,
    }


def _server_values(actual: js_api.ConsumerConfig) -> dict[str, Any]:
    filters = list(actual.filter_subjects or []) or ([actual.filter_subject] if actual.filter_subject else [])
    return {
        "filter_subjects": sorted(filters),
        "deliver_policy": _plain(actual.deliver_policy) or "all",
        "start_sequence": actual.opt_start_seq or None,
        "start_time": actual.opt_start_time,
        "ack_policy": _plain(actual.ack_policy) or "explicit",
        "ack_wait": actual.ack_wait,
        "max_deliver": actual.max_deliver if actual.max_deliver is not None else -1,
        "backoff": list(actual.backoff or []),
        "max_ack_pending": actual.max_ack_pending,
        "delivery": Delivery.PUSH.value if actual.deliver_subject else Delivery.PULL.value,
        "deliver_subject": actual.deliver_subject or None,
        "queue_group": actual.deliver_group or None,
    }


# Fields JetStream fixes at creation (checkNewConsumerConfig), with the server's own words.
_IMMUTABLE = {
    "deliver_policy": "deliver policy can not be updated",
    "start_sequence": "start sequence can not be updated",
    "start_time": "start time can not be updated",
    "ack_policy": "ack policy can not be updated",
}


def plan_consumers(
    wanted: Sequence[tuple[str, ConsumerConfig]],
    server: Mapping[tuple[str, str], js_api.ConsumerConfig | None],
    streams_present: set[str],
) -> ConsumersPlan:
    """The plan that makes the server's consumers match `wanted` ((service, consumer) in file order).

    `server` maps (stream, durable name) to the server's config (None or absent: no such consumer);
    `streams_present` names the file's streams that exist on the server.
    """
    return ConsumersPlan(
        tuple(
            _plan_one(service, consumer, server.get((consumer.stream, consumer.name)), streams_present)
            for service, consumer in wanted
        )
    )


def _plan_one(
    service: str, consumer: ConsumerConfig, actual: js_api.ConsumerConfig | None, streams_present: set[str]
) -> ConsumerPlan:
    mine = _file_values(consumer)
    head = (service, consumer.stream, consumer.name)
    if actual is None:
        changes = tuple(
            FieldChange(field, None, _json(value)) for field, value in mine.items() if value not in (None, [])
        )
        if consumer.stream not in streams_present:
            reason = f"stream '{consumer.stream}' does not exist on the server: `streams apply` it first"
            return ConsumerPlan(*head, Action.REFUSED, changes, (Refusal("stream", reason),))
        return ConsumerPlan(*head, Action.CREATE, changes, target=to_nats_consumer(consumer))

    theirs = _server_values(actual)
    differing = [field for field, value in mine.items() if not _same(field, value, theirs[field])]
    if HANDOFF_METADATA in (actual.metadata or {}):
        # `handoff` started it where the legacy consumer stopped: that start is the right one.
        differing = [field for field in differing if field not in _HANDOFF_START]
    if consumer.description is not None and consumer.description != (actual.description or None):
        differing.insert(0, "description")
        theirs["description"], mine["description"] = actual.description, consumer.description
    if consumer.ack_policy is AckPolicy.NONE:
        differing = [field for field in differing if field not in ("ack_wait", "max_ack_pending")]
    if not differing:
        return ConsumerPlan(*head, Action.UNCHANGED)
    changes = tuple(FieldChange(field, _json(theirs[field]), _json(mine[field])) for field in differing)
    refusals = tuple(_refusal(field, theirs, mine) for field in differing if field in _IMMUTABLE or field == "delivery")
    if refusals:
        return ConsumerPlan(*head, Action.REFUSED, changes, refusals)
    return ConsumerPlan(*head, Action.UPDATE, changes, target=_update_target(actual, consumer))


# Set by `nats-bridge handoff` on a durable it made (bridge.handoff.command), with the fields
# it chose: the start the legacy consumer's position gave.
HANDOFF_METADATA = "nats-bridge-handoff"
_HANDOFF_START = ("deliver_policy", "start_sequence", "start_time")


def _same(field: str, mine: object, theirs: object) -> bool:
    if field in ("ack_wait", "backoff"):
        # Durations travel as nanoseconds and come back as float seconds.
        first = mine if isinstance(mine, list) else [mine]
        second = theirs if isinstance(theirs, list) else [theirs]
        return len(first) == len(second) and all(
            (a is None and b is None) or (a is not None and b is not None and abs(float(a) - float(b)) < 1e-6)
            for a, b in zip(first, second, strict=True)
        )
    if field == "start_time" and isinstance(mine, datetime) and isinstance(theirs, datetime):
        return mine == theirs
    return mine == theirs


def _refusal(field: str, theirs: Mapping[str, Any], mine: Mapping[str, Any]) -> Refusal:
    if field == "delivery":
        words = f"can not update {theirs['delivery']} consumer to {mine['delivery']} based"
        keep = f"delivery: {theirs['delivery']}"
    else:
        words = _IMMUTABLE[field]
        keep = f"{field}: {show_value(field, _json(theirs[field]))}"
    return Refusal(
        field,
        f"JetStream fixes this when a consumer is created ({words}); write `{keep}` in the mapping file, or give "
        "the consumer a new name (the old one keeps its position until you delete it)",
    )


def _update_target(actual: js_api.ConsumerConfig, consumer: ConsumerConfig) -> js_api.ConsumerConfig:
    """The server's config with the file's mutable fields put in (see the module docstring)."""
    wanted = to_nats_consumer(consumer)
    fields: dict[str, Any] = {
        name: getattr(wanted, name)
        for name in (
            "ack_wait",
            "max_deliver",
            "backoff",
            "max_ack_pending",
            "filter_subject",
            "filter_subjects",
            "deliver_subject",
            "deliver_group",
        )
    }
    if consumer.description is not None:
        fields["description"] = consumer.description
    if consumer.ack_policy is AckPolicy.NONE:
        fields.pop("ack_wait")
        fields.pop("max_ack_pending")
    return dataclasses.replace(copy.deepcopy(actual), name=consumer.name, durable_name=consumer.name, **fields)


def _plain(value: object) -> Any:
    return getattr(value, "value", value)


def _json(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    return _plain(value)


# --------------------------------------------------------------------------- output

_REASONS = {
    Action.CREATE: "missing on the server",
    Action.UPDATE: "JetStream can change these in place",
    Action.UNCHANGED: "matches the file",
}
_WIDTH = 32


def show(field: str, value: object) -> str:
    """A value as the mapping file writes it (`30s`, `unlimited`, `1s, 10s`)."""
    if value is None or value == []:
        return "-"
    if field == "max_deliver" and value == -1:
        return "unlimited"
    if field in ("ack_wait", "backoff"):
        values = value if isinstance(value, list) else [value]
        return ", ".join(show_value("duplicate_window", v) for v in values)
    return show_value(field, value)


def format_consumers_plan(plan: ConsumersPlan) -> str:
    """The plan as a table for people, with a summary line."""
    lines = [f"{'consumer':<{_WIDTH}} {'action':<10} {'field':<17} {'server':<18} file"]
    for consumer in plan.consumers:
        head = f"{consumer.label:<{_WIDTH}} {consumer.action.value:<10} "
        if consumer.action is Action.UNCHANGED or not consumer.changes:
            lines.append(head + _REASONS.get(consumer.action, ""))
        for index, change in enumerate(consumer.changes):
            prefix = head if index == 0 else " " * len(head)
            server = show(change.field, change.server)
            lines.append(f"{prefix}{change.field:<17} {server:<18} {show(change.field, change.file)}")
        for refusal in consumer.refusals:
            lines.append(f"{'':<{_WIDTH + 12}}refused: {refusal.field}: {refusal.reason}")
    summary = ", ".join(f"{plan.count(action)} to {action.value}" for action in (Action.CREATE, Action.UPDATE))
    lines.append("")
    lines.append(
        f"{summary}, {plan.count(Action.UNCHANGED)} unchanged, {plan.count(Action.REFUSED)} refused. "
        "Consumers the file does not name are left alone; nothing is ever deleted."
    )
    return "\n".join(lines) + "\n"
