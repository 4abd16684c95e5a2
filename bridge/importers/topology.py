"""A RabbitMQ definitions export read as the broker holds it: exchanges, queues and bindings per
vhost, with policies and operator policies applied.

`import rabbitmq` (which writes shadow routes from it) and `explain --definitions` (which routes one
message through it) both read an export through `Topology`, so they can never disagree on which
policy wins, what an exchange's alternate is, or what type a built-in exchange has. The document
must have passed `check_definitions` (bridge.importers.definitions_check) first: this trusts its shape.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Built-in exchanges are not in an export but can appear as a binding's source.
BUILTIN_TYPES = {
    "amq.direct": "direct",
    "amq.topic": "topic",
    "amq.fanout": "fanout",
    "amq.headers": "headers",
    "amq.match": "headers",
    "amq.rabbitmq.trace": "topic",
}
# Plugin exchanges that route each message to ONE of their bindings (a hash of the routing key,
# a header or a property): a queue bound to one takes a share of the traffic, never a copy.
HASH_TYPES = frozenset({"x-consistent-hash", "x-modulus-hash"})
# Policy keys the importer applies (RabbitMQ's names, without the queue argument's `x-`).
QUEUE_POLICY_KEYS = (
    "dead-letter-exchange",
    "dead-letter-routing-key",
    "message-ttl",
    "max-length",
    "max-length-bytes",
    "overflow",
    "delivery-limit",
)
# Numeric keys: queue argument, policy and operator policy combine to the smallest (RabbitMQ's
# res_min and the operator-policy merge); the others: the queue's own argument wins over a policy.
NUMERIC_POLICY_KEYS = frozenset({"message-ttl", "max-length", "max-length-bytes"})


@dataclass
class Queue:
    vhost: str
    name: str
    arguments: dict[str, Any]
    durable: bool = True
    auto_delete: bool = False
    exclusive: bool = False
    # Sum of its consumers' prefetch counts, when the queue object lists them (`consumer_details`,
    # as `GET /api/queues` returns; a definitions export does not): what they may hold unacked.
    prefetch: int | None = None
    # What policies changed in `arguments` (the effective values), for the comments.
    policy_notes: list[str] = field(default_factory=list)

    @property
    def queue_type(self) -> str:
        return str(self.arguments.get("x-queue-type", "classic"))


@dataclass
class Policy:
    vhost: str
    name: str
    pattern: re.Pattern[str] | None  # None: RabbitMQ would have refused it; it matches nothing
    apply_to: str
    definition: dict[str, Any]
    priority: int
    operator: bool

    def applies(self, kind: str, name: str, queue_type: str = "classic") -> bool:
        """Whether RabbitMQ would consider this policy for `kind` ("queue" | "exchange") `name`."""
        wanted = {
            "all": True,
            "queues": kind == "queue",
            "exchanges": kind == "exchange",
            "classic_queues": kind == "queue" and queue_type == "classic",
            "quorum_queues": kind == "queue" and queue_type == "quorum",
            "streams": kind == "queue" and queue_type == "stream",
        }.get(self.apply_to, False)
        # The pattern is searched, not anchored (Erlang re:run): `^orders` and `orders$` mean what they say.
        return wanted and self.pattern is not None and self.pattern.search(name) is not None


@dataclass
class Binding:
    vhost: str
    source: str
    destination: str
    destination_type: str  # "queue" | "exchange"
    routing_key: str
    arguments: dict[str, Any]


@dataclass
class Exchange:
    vhost: str
    name: str
    type: str
    arguments: dict[str, Any] = field(default_factory=dict)
    internal: bool = False


class Topology:
    """Exchanges, queues and bindings of a checked definitions export, policies applied.

    `default_vhost` is the vhost of items that name none: a single-vhost export
    (`/api/definitions/<vhost>`) leaves it out of every exchange, queue and binding.
    """

    def __init__(self, definitions: Mapping[str, Any], default_vhost: str = "/") -> None:
        self.exchanges: dict[tuple[str, str], Exchange] = {}
        for item in definitions.get("exchanges", []):
            vhost = str(item.get("vhost", default_vhost))
            self.exchanges[(vhost, item["name"])] = Exchange(
                vhost,
                item["name"],
                str(item.get("type", "direct")),
                dict(item.get("arguments") or {}),
                bool(item.get("internal", False)),
            )
        self.queues: dict[tuple[str, str], Queue] = {}
        for item in definitions.get("queues", []):
            vhost = str(item.get("vhost", default_vhost))
            self.queues[(vhost, item["name"])] = Queue(
                vhost,
                item["name"],
                dict(item.get("arguments") or {}),
                bool(item.get("durable", True)),
                bool(item.get("auto_delete", False)),
                bool(item.get("exclusive", False)),
                _prefetch(item.get("consumer_details")),
            )
        self.bindings = [
            Binding(
                str(item.get("vhost", default_vhost)),
                str(item.get("source", "")),
                str(item["destination"]),
                str(item.get("destination_type", "queue")),
                str(item.get("routing_key", "")),
                dict(item.get("arguments") or {}),
            )
            for item in definitions.get("bindings", [])
        ]
        self.vhosts = {v for v, _ in self.exchanges} | {v for v, _ in self.queues} | {b.vhost for b in self.bindings}
        self.policies = [
            _read_policy(item, default_vhost, operator)
            for operator, section in ((False, "policies"), (True, "operator_policies"))
            for item in definitions.get(section) or []
        ]
        for queue in self.queues.values():
            self._apply_queue_policies(queue)
        for exchange in self.exchanges.values():
            self._apply_exchange_policies(exchange)
        # Who feeds whom: exchange-to-exchange bindings by destination (the default exchange cannot be a source).
        self.e2e_into: dict[tuple[str, str], list[Binding]] = {}
        self.bindings_from: dict[tuple[str, str], list[Binding]] = {}
        for binding in self.bindings:
            self.bindings_from.setdefault((binding.vhost, binding.source), []).append(binding)
            if binding.destination_type == "exchange" and binding.source:
                self.e2e_into.setdefault((binding.vhost, binding.destination), []).append(binding)

    def exchange_type(self, vhost: str, name: str) -> str | None:
        """The exchange's type, a built-in one's too; None when the export does not know it."""
        exchange = self.exchanges.get((vhost, name))
        if exchange is not None:
            return exchange.type
        return BUILTIN_TYPES.get(name)

    def hash_basis(self, vhost: str, name: str) -> str:
        """What a hash exchange hashes to pick one binding: `header 'h'` (its `hash-header`
        argument), `property 'p'` (`hash-property`), else `routing key`. Said, never guessed:
        which binding a given message gets depends on the broker's ring."""
        exchange = self.exchanges.get((vhost, name))
        arguments = exchange.arguments if exchange is not None else {}
        if "hash-header" in arguments:
            return f"header '{arguments['hash-header']}'"
        if "hash-property" in arguments:
            return f"property '{arguments['hash-property']}'"
        return "routing key"

    # -- policies ------------------------------------------------------------------------------

    def _winner(self, kind: str, vhost: str, name: str, queue_type: str, operator: bool) -> Policy | None:
        """The policy RabbitMQ applies: of those matching, the highest priority (the first of equals)."""
        best: Policy | None = None
        for policy in self.policies:
            if policy.operator != operator or policy.vhost != vhost or not policy.applies(kind, name, queue_type):
                continue
            if best is None or policy.priority > best.priority:
                best = policy
        return best

    def _apply_queue_policies(self, queue: Queue) -> None:
        policy = self._winner("queue", queue.vhost, queue.name, queue.queue_type, operator=False)
        operator = self._winner("queue", queue.vhost, queue.name, queue.queue_type, operator=True)
        if policy is None and operator is None:
            return
        effective = dict(queue.arguments)
        for key in QUEUE_POLICY_KEYS:
            argument = f"x-{key}"
            declared = queue.arguments.get(argument)
            from_policy = policy.definition.get(key) if policy is not None else None
            from_operator = operator.definition.get(key) if operator is not None else None
            if key in NUMERIC_POLICY_KEYS:
                candidates = [
                    (value, origin)
                    for value, origin in (
                        (whole_number(declared), "its x-argument"),
                        (whole_number(from_policy), f"policy '{policy.name}'" if policy else ""),
                        (whole_number(from_operator), f"operator policy '{operator.name}'" if operator else ""),
                    )
                    if value is not None
                ]
                if not candidates:
                    continue
                value, origin = min(candidates, key=lambda item: item[0])
                if len(candidates) > 1 or declared is None:
                    effective[argument] = value
                    queue.policy_notes.append(f"{key} {value} from {origin} (the smallest applies)")
            elif declared is None and from_policy is not None:
                # dead-letter-exchange, its routing key, overflow: the queue's own argument wins over
                # a policy; operator policies cannot set them.
                effective[argument] = from_policy
                assert policy is not None
                queue.policy_notes.append(f"{key} '{from_policy}' from policy '{policy.name}'")
        queue.arguments = effective

    def _apply_exchange_policies(self, exchange: Exchange) -> None:
        policy = self._winner("exchange", exchange.vhost, exchange.name, "classic", operator=False)
        if policy is None or "alternate-exchange" in exchange.arguments:
            return
        alternate = policy.definition.get("alternate-exchange")
        if alternate is not None:
            exchange.arguments = {**exchange.arguments, "alternate-exchange": alternate}


def whole_number(value: Any) -> int | None:
    """A whole number as exports write one (a JSON integer or its digits as text), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 20:
        return int(value)
    return None


def _read_policy(item: Mapping[str, Any], default_vhost: str, operator: bool) -> Policy:
    try:
        pattern: re.Pattern[str] | None = re.compile(str(item.get("pattern", "")))
    except re.error:
        pattern = None
    priority = item.get("priority", 0)
    return Policy(
        vhost=str(item.get("vhost", default_vhost)),
        name=str(item.get("name", "")),
        pattern=pattern,
        apply_to=str(item.get("apply-to", "all")),
        definition=dict(item.get("definition") or {}),
        priority=priority if isinstance(priority, int) and not isinstance(priority, bool) else 0,
        operator=operator,
    )


def _prefetch(details: Any) -> int | None:
    """The queue's consumers' prefetch counts summed (0 is unlimited: then unknown), from a
    management API queue object's `consumer_details`; None when it has none."""
    if not isinstance(details, list) or not details:
        return None
    counts: list[int] = []
    for detail in details:
        count = detail.get("prefetch_count") if isinstance(detail, Mapping) else None
        if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
            return None
        counts.append(count)
    return sum(counts)
