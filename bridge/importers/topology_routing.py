"""Where RabbitMQ itself sends one message, given a definitions export: `explain --definitions`.

A mapping file only knows the exchanges the bridge shadows; the legacy estate also has
exchange-to-exchange bindings, alternate exchanges and plugin exchanges, so "which legacy queues
get this message, and does the bridge copy it?" needs the broker's own routing, re-done offline
from the export. This follows rabbit_exchange:route/2 (RabbitMQ 3.10+):

* each exchange routes by its type with the project's matching rules (`bridge.routing`): direct
  (equal keys), topic (`*` one word, `#` zero or more), fanout (everything), headers (x-match
  all / any / all-with-x / any-with-x, `x-` arguments ignored unless `-with-x`);
* an exchange's exchange-to-exchange bindings are followed, and each exchange is passed through
  once per message however many bindings lead to it (a cycle ends there, as in the broker);
* an exchange whose own bindings take nothing hands the message to its `alternate-exchange`
  (its argument, else its policy's: `Topology` has applied policies already);
* a consistent-hash or modulus-hash exchange sends it to ONE of its bindings, chosen by a hash of
  the routing key (or a header or property) over the broker's ring: reported as a choice ("one of:
  q1, q2, q3"), never guessed; what lies behind such a choice is only *possibly* reached;
* the default exchange (`""`) delivers to the queue named by the routing key.

`taps` are queues the export does not hold but the running bridge does: its shadow queues, bound
with a route's keys or arguments. RabbitMQ matches them by the exchange's type like any binding (the
bridge does not filter again), and they take part in routing, which matters for alternate
exchanges: a shadow queue that takes a message keeps it from the alternate.

Pure: no I/O; bounded on any export (each exchange is routed once, paths listed up to MAX_PATHS).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bridge.config.durations import format_duration
from bridge.importers.topology import HASH_TYPES, Binding, Topology, whole_number
from bridge.importers.topology_paths import Choice, Hop, Path, Routed, Tap
from bridge.routing import headers_match, topic_matches

MAX_PATHS = 64  # paths listed per message; the queues reached are complete whatever the count
MAX_STEPS = 10_000  # exchanges entered while listing paths: a dense mesh of bindings cannot explode
MAX_DEPTH = 64  # exchange-to-exchange hops one listed path follows
DEFAULT_EXCHANGES = frozenset({"", "amq.default"})
CYCLE = "a cycle: RabbitMQ passes a message through each exchange once, so it ends here"
STANDARD_TYPES = frozenset({"direct", "topic", "fanout", "headers"})
# Plugin exchanges that send each message to one of their bindings, and what decides which.
CHOOSING_TYPES = {**dict.fromkeys(HASH_TYPES, "hash"), "x-random": "random"}


@dataclass
class _Out:
    """What one exchange does with the message: the hops it takes (a choice's options when `choice`)."""

    source_type: str
    hops: list[Hop] = field(default_factory=list)
    choice: Choice | None = None
    stop: str = "no binding matches"  # why it goes nowhere, when `hops` is empty


def route_message(
    topology: Topology,
    vhost: str,
    exchange: str,
    routing_key: str,
    headers: Mapping[str, object] | None = None,
    taps: Iterable[Tap] = (),
) -> Routed:
    """Route a message published to `exchange` in `vhost` as RabbitMQ would (module docstring)."""
    return _Router(topology, vhost, routing_key, headers or {}, taps).run(exchange)


def feeding_exchanges(topology: Topology, vhost: str, exchange: str) -> set[str]:
    """Exchanges whose traffic can flow into `exchange` (through exchange-to-exchange bindings or as
    their alternate exchange), whatever the key: where a shadow upstream of it sits."""
    alternates: dict[str, list[str]] = {}
    for (where, name), found in topology.exchanges.items():
        alternate = found.arguments.get("alternate-exchange")
        if where == vhost and isinstance(alternate, str):
            alternates.setdefault(alternate, []).append(name)
    found_upstream: set[str] = set()
    pending = [exchange]
    while pending:
        name = pending.pop()
        feeders = [b.source for b in topology.e2e_into.get((vhost, name), [])] + alternates.get(name, [])
        for feeder in feeders:
            if feeder not in found_upstream and feeder != exchange:
                found_upstream.add(feeder)
                pending.append(feeder)
    return found_upstream


def binding_text(kind: str, binding: Binding) -> str:
    """A binding as the hop label shows it: the key (topic, direct), the table (headers)."""
    if kind == "headers":
        return table_text(binding.arguments)
    if kind == "fanout":
        return ""
    return binding.routing_key or "''"


def table_text(arguments: Mapping[str, Any]) -> str:
    return " ".join(f"{name}={value}" for name, value in arguments.items()) or "{}"


class _Router:
    def __init__(
        self, topology: Topology, vhost: str, routing_key: str, headers: Mapping[str, object], taps: Iterable[Tap]
    ) -> None:
        self.topology = topology
        self.vhost = vhost
        self.routing_key = routing_key
        self.headers = headers
        # The taps as bindings to a destination of kind "route": matched exactly as the export's are.
        self.taps: dict[str, list[Binding]] = {}
        for tap in taps:
            self.taps.setdefault(tap.exchange, []).extend(
                Binding(vhost, tap.exchange, tap.label, "route", key, dict(arguments))
                for key, arguments in tap.bindings
            )
        self.outs: dict[str, _Out] = {}
        self.notes: list[str] = []

    def note(self, line: str) -> None:
        if line not in self.notes:
            self.notes.append(line)

    def run(self, exchange: str) -> Routed:
        refused = self._refusal(exchange)
        if refused is not None:
            return Routed(self.vhost, exchange, self.routing_key, refused=refused)
        reached = self._reach(exchange)
        paths, more = self._paths(exchange)
        paths.sort(key=lambda path: bool(path.hops) and path.hops[-1].destination_kind == "route")  # legacy first
        surely = {(kind, name) for (kind, name), sure in reached.items() if sure}
        maybe = {(kind, name) for (kind, name), sure in reached.items() if not sure}

        def names(kind: str, found: set[tuple[str, str]]) -> tuple[str, ...]:
            return tuple(sorted(name for k, name in found if k == kind))

        queues, possible_queues = names("queue", surely), names("queue", maybe)
        for queue in (*queues, *possible_queues):
            self._dead_letter_note(queue)
        if not (queues or possible_queues or names("route", surely | maybe)):
            self.note("no queue gets it: RabbitMQ drops it (or returns it to a publisher that set `mandatory`)")
        return Routed(
            vhost=self.vhost,
            exchange=exchange,
            routing_key=self.routing_key,
            paths=tuple(paths),
            more_paths=more,
            queues=queues,
            possible_queues=possible_queues,
            routes=names("route", surely),
            possible_routes=names("route", maybe),
            exchanges=names("exchange", surely | maybe),
            types={name: out.source_type for name, out in self.outs.items()},
            notes=tuple(self.notes),
        )

    def _refusal(self, exchange: str) -> str | None:
        """Why the broker refuses a client's publish to `exchange`, None when it accepts it."""
        if exchange in DEFAULT_EXCHANGES:
            return None
        found = self.topology.exchanges.get((self.vhost, exchange))
        if found is None and self.topology.exchange_type(self.vhost, exchange) is None:
            elsewhere = sorted(v for v, name in self.topology.exchanges if name == exchange)
            where = f" (it is in vhost {', '.join(repr(v) for v in elsewhere)})" if elsewhere else ""
            return (
                f"exchange '{exchange}' is not in the export's vhost '{self.vhost}'{where}: "
                "RabbitMQ refuses the publish (404 NOT_FOUND)"
            )
        if found is not None and found.internal:
            return (
                f"exchange '{exchange}' is internal: RabbitMQ refuses a client's publish to it (403 ACCESS_REFUSED); "
                "only exchange-to-exchange bindings feed it"
            )
        return None

    def _reach(self, exchange: str) -> dict[tuple[str, str], bool]:
        """Everything the message reaches, (kind, name) -> surely (False: only if a hash picks it).
        Breadth first, each exchange routed once per status, as RabbitMQ passes through each once."""
        reached: dict[tuple[str, str], bool] = {("exchange", exchange): True}
        pending = deque([exchange])
        while pending:
            name = pending.popleft()
            sure = reached[("exchange", name)]
            out = self._out(name)
            for hop in out.hops:
                key = (hop.destination_kind, hop.destination)
                status = sure and out.choice is None
                if key in reached and (reached[key] or not status):
                    continue
                reached[key] = status
                if hop.destination_kind == "exchange":
                    pending.append(hop.destination)
        return reached

    def _paths(self, exchange: str) -> tuple[list[Path], bool]:
        """Every path to a queue, route, choice or dead end, depth first in binding order; a cycle is
        cut where it closes. Bounded: MAX_PATHS paths, MAX_DEPTH hops each, MAX_STEPS exchanges entered
        (True: there were more). The reach itself (`_reach`) is exact whatever these bounds cut."""
        paths: list[Path] = []
        steps = 0
        pending: list[tuple[str, tuple[Hop, ...], frozenset[str]]] = [(exchange, (), frozenset({exchange}))]
        while pending and steps < MAX_STEPS and len(paths) <= MAX_PATHS:
            name, hops, on_path = pending.pop()
            steps += 1
            out = self._out(name)
            if out.choice is not None or not out.hops:
                paths.append(Path(hops, out.choice, None if out.hops else out.stop))
            deeper: list[tuple[str, tuple[Hop, ...], frozenset[str]]] = []
            for hop in out.hops:
                if len(paths) > MAX_PATHS:
                    break
                if hop.destination_kind != "exchange":
                    if out.choice is None:
                        paths.append(Path((*hops, hop)))
                elif hop.destination in on_path:
                    paths.append(Path((*hops, hop), stop=CYCLE))
                elif len(hops) >= MAX_DEPTH:
                    paths.append(Path((*hops, hop), stop=f"more than {MAX_DEPTH} exchanges deep: not followed"))
                else:
                    deeper.append((hop.destination, (*hops, hop), on_path | {hop.destination}))
            pending.extend(reversed(deeper))
        return paths[:MAX_PATHS], len(paths) > MAX_PATHS or bool(pending)

    def _out(self, name: str) -> _Out:
        if name not in self.outs:
            self.outs[name] = self._route_exchange(name)
        return self.outs[name]

    def _route_exchange(self, name: str) -> _Out:
        """Where exchange `name` sends the message (rabbit_exchange:route1 for one exchange)."""
        if name in DEFAULT_EXCHANGES:
            return self._default_exchange(name)
        kind = self.topology.exchange_type(self.vhost, name)
        if kind is None:
            self.note(f"exchange '{name}' is not in the export: where it sends messages is unknown")
            return _Out("unknown", stop="not in the export")
        found = self.topology.exchanges.get((self.vhost, name))
        arguments = found.arguments if found is not None else {}
        routed_as = kind
        if kind == "x-delayed-message":
            routed_as = str(arguments.get("x-delayed-type", ""))
            self.note(
                f"exchange '{name}' (x-delayed-message) holds a message for its x-delay header's milliseconds, "
                f"then routes it as a{'n' if routed_as[:1] in 'aeiou' else ''} {routed_as or 'unknown'} exchange"
            )
        bindings = [*self.topology.bindings_from.get((self.vhost, name), []), *self.taps.get(name, [])]
        out = _Out(kind, stop="no binding matches" if bindings else "no bindings")
        if kind in CHOOSING_TYPES:
            out.hops = self._unique(
                [Hop(name, kind, CHOOSING_TYPES[kind], b.destination, b.destination_type) for b in bindings]
            )
            if len(out.hops) > 1:
                hashed = self.topology.hash_basis(self.vhost, name)
                basis = "random" if kind == "x-random" else f"a hash of the {hashed}"
                out.choice = Choice(name, kind, basis, tuple(out.hops))
        elif routed_as in STANDARD_TYPES:
            out.hops = self._unique(
                [
                    Hop(name, kind, binding_text(routed_as, b), b.destination, b.destination_type)
                    for b in bindings
                    if self._matches(routed_as, b)
                ]
            )
        else:
            targets = sorted({b.destination for b in bindings})
            self.note(
                f"exchange '{name}' is of plugin type '{kind}': where it sends a message is not modelled"
                + (f" (its bindings lead to {', '.join(repr(t) for t in targets)})" if targets else "")
            )
            out.stop = "not modelled (see the notes)"
            return out
        alternate = arguments.get("alternate-exchange")
        if not out.hops and isinstance(alternate, str) and alternate:
            out.hops = [Hop(name, kind, "alternate-exchange", alternate, "exchange")]
        return out

    def _default_exchange(self, name: str) -> _Out:
        """The default exchange: the queue named by the routing key, when there is one."""
        if (self.vhost, self.routing_key) in self.topology.queues:
            return _Out("default", [Hop(name, "default", "queue name", self.routing_key, "queue")])
        return _Out("default", stop=f"no queue named '{self.routing_key}' in the export")

    def _matches(self, kind: str, binding: Binding) -> bool:
        if kind == "fanout":
            return True
        if kind == "direct":
            return binding.routing_key == self.routing_key
        if kind == "topic":
            return topic_matches(binding.routing_key, self.routing_key)
        try:
            return headers_match(binding.arguments, self.headers)
        except ValueError as error:  # RabbitMQ refuses such a binding: it cannot exist on the broker
            self.note(f"binding of '{binding.source}' to '{binding.destination}' is ignored: {error}")
            return False

    @staticmethod
    def _unique(hops: list[Hop]) -> list[Hop]:
        """One hop per destination: a queue bound twice gets one copy, as in RabbitMQ."""
        seen: set[tuple[str, str]] = set()
        kept = []
        for hop in hops:
            if (hop.destination_kind, hop.destination) not in seen:
                seen.add((hop.destination_kind, hop.destination))
                kept.append(hop)
        return kept

    def _dead_letter_note(self, queue: str) -> None:
        """Where a reached queue sends what it dead-letters, and which queues that reaches: a retry
        queue's messages come back (and are shadowed again), a dead-letter queue's stay there. The
        dead-lettered copy keeps the message's headers and, unless the queue sets one, its key."""
        found = self.topology.queues.get((self.vhost, queue))
        dlx = found.arguments.get("x-dead-letter-exchange") if found is not None else None
        if found is None or not isinstance(dlx, str):
            return
        key = found.arguments.get("x-dead-letter-routing-key")
        with_key = f" with routing key '{key}'" if isinstance(key, str) else ""
        ttl = whole_number(found.arguments.get("x-message-ttl"))
        expired = f"expired after its message-ttl of {format_duration(timedelta(milliseconds=ttl))}, " if ttl else ""
        onward = _Router(self.topology, self.vhost, key if isinstance(key, str) else self.routing_key, self.headers, ())
        reached = sorted(name for kind, name in onward._reach(dlx) if kind == "queue")
        self.note(
            f"queue '{queue}' dead-letters a message ({expired}rejected, or dropped by a length limit) into "
            f"exchange '{dlx}'{with_key}, "
            + (f"which routes it to {', '.join(reached)}" if reached else "which routes it to no queue")
        )
