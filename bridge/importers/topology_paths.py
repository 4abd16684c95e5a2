"""What routing a message through a RabbitMQ topology finds: the paths it takes (hops through
exchanges), the choices a hash or random exchange makes, the queues reached, and the shadow taps
met on the way (value types; bridge.importers.topology_routing does the routing)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Tap:
    """A queue outside the export bound to `exchange`, once per (routing key, arguments) in
    `bindings`: the bridge's shadow queue of route `label`."""

    exchange: str
    label: str
    bindings: tuple[tuple[str, Mapping[str, Any]], ...]


@dataclass(frozen=True, slots=True)
class Hop:
    """One step a message takes: from exchange `source` through a binding (`via`) to `destination`,
    an exchange, a legacy queue or a bridge route's shadow queue."""

    source: str
    source_type: str
    via: str
    destination: str
    destination_kind: str  # "exchange" | "queue" | "route"

    def as_json(self) -> dict[str, str]:
        return {
            "from": self.source,
            "type": self.source_type,
            "via": self.via,
            "to": self.destination,
            "to_kind": self.destination_kind,
        }


@dataclass(frozen=True, slots=True)
class Choice:
    """A hash (or random) exchange's pick: exactly one of `options` gets the message."""

    exchange: str
    type: str
    basis: str  # "a hash of the routing key", "a hash of header 'h'", "random"
    options: tuple[Hop, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "type": self.type,
            "by": self.basis,
            "one_of": [{"kind": hop.destination_kind, "name": hop.destination} for hop in self.options],
        }


@dataclass(frozen=True, slots=True)
class Path:
    """Hops from the exchange published to. It ends at a queue or route; at a `choice`; or at an
    exchange where the message goes no further, `stop` saying why (that is the answer to "why did
    queue X not get it?")."""

    hops: tuple[Hop, ...]
    choice: Choice | None = None
    stop: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "hops": [hop.as_json() for hop in self.hops],
            "choice": self.choice.as_json() if self.choice is not None else None,
            "stop": self.stop,
        }


@dataclass(frozen=True, slots=True)
class Routed:
    """Where one message goes. `queues` and `routes` surely get it; `possible_*` get it only if a
    hash exchange on the way picks them. `refused`: RabbitMQ would not accept the publish."""

    vhost: str
    exchange: str
    routing_key: str
    refused: str | None = None
    paths: tuple[Path, ...] = ()
    more_paths: bool = False
    queues: tuple[str, ...] = ()
    possible_queues: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()
    possible_routes: tuple[str, ...] = ()
    exchanges: tuple[str, ...] = ()
    types: Mapping[str, str] = field(default_factory=dict)  # exchange -> type, of those routed
    notes: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "vhost": self.vhost,
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "refused": self.refused,
            "paths": [path.as_json() for path in self.paths],
            "more_paths": self.more_paths,
            "queues": list(self.queues),
            "possible_queues": list(self.possible_queues),
            "exchanges": list(self.exchanges),
            "notes": list(self.notes),
        }
