"""RabbitMQ definitions export -> a shadow-mode mapping file, with notes for what does not translate.

The input is what the management UI's "Export definitions", `GET /api/definitions[/<vhost>]`
or `rabbitmqctl export_definitions` writes. Only vhosts, exchanges, queues and bindings are
read; users, password hashes, permissions, policies' secrets and parameters are never copied
(the generated sources point at `${AMQP_URL}`).

Mapping rules, chosen for a team that wants an exact shadow copy first and cut-over later:

* **Sources.** One `rabbitmq` source per vhost that has something to copy, url
  `${AMQP_URL:-amqp://127.0.0.1:5672/}` and `vhost:` set, so the file holds no credential.
* **Services.** One service per exchange that has queues bound to it (directly; a stream queue
  is read on its own, see below). The service is the unit of cut-over: everything its
  consumers' queues received from that exchange.
* **Routes.** A topic, direct or fanout exchange gets ONE shadow route bound with the union of
  the (deduplicated) binding keys of its queues. A shadow queue receives a message once however
  many of its keys match, so each message is copied once — not once per legacy queue — and the
  stream holds exactly what some legacy consumer receives. A comment lists each legacy queue with
  its keys, so NATS consumers can later be given the same filter. A headers exchange gets one
  route per distinct argument set (a route has one `arguments` table); identical sets share one.
  Such routes share the Msg-Id template `{exchange}/{auto}`, so a message two tables match is
  stored once.
* **Streams and subjects.** A stream per mapped exchange, `RMQ_<EXCHANGE>`, capturing
  `<prefix>.<exchange>` and, for topic/direct, `<prefix>.<exchange>.>`; routes publish to
  `<prefix>.<exchange>.{rk}` (topic, direct) or `<prefix>.<exchange>` (fanout, headers). The
  exchange name is one escaped token (`bridge.routing.escape_token`), so dots or wildcards in
  it cannot change the subject's shape and two exchanges never share a subject. With several
  vhosts the vhost is a token too: `<prefix>.<vhost>.<exchange>`.
* **Exchange-to-exchange bindings.** Each queue's traffic is shadowed where it enters: at the
  exchange(s) no exchange-to-exchange binding feeds (found by following every chain back). The
  entry's route is bound with what the chain selects (topic and direct keys intersected step by
  step: `eu.#` then `*.orders.#` is `eu.orders.#`); where a step cannot be written as a binding of
  the entry (a headers step after a topic entry, two patterns whose intersection takes several
  patterns, like `#.a.#` and `#.b.#`) the key so far, a superset, is used and a comment says so.
  Exchanges fed by such bindings get no service of their own.
* **Hash exchanges** (`x-consistent-hash`, `x-modulus-hash`) send each message to ONE of their
  bindings, so a queue bound to one takes a share, never a copy: they are copied at the exchange
  feeding them (together their queues receive all of it), with the hashing explained; one that
  producers publish to directly is NOT MAPPED.
* **Policies** (`policies`, `operator_policies`): per queue or exchange the matching policy of
  highest priority (pattern searched in the name, `apply-to` all / queues / exchanges /
  classic_queues / quorum_queues / streams); message-ttl, max-length and max-length-bytes take the
  smallest of queue argument, policy and operator policy; dead-letter-exchange, its routing key
  and overflow come from the policy only when the queue has no argument; alternate-exchange alike.
* **Retry and delay queues** (a TTL and a dead-letter exchange that routes the expired message on
  to a queue that is not a parking lot): the TTL is a delay, not retention: no `max_age`. The
  message comes back into its dead-letter exchange with the Msg-Id of its first copy, so that
  exchange's stream gets a `duplicate_window` of the TTL plus the default 2m (at most its
  `max_age`): a retried message is stored once, not once per trip.
* **Nothing to copy** is `NothingToCopyError` (one `error:` line and exit 2 in the CLI), never an empty mapping.
* **Queue arguments -> stream limits.** The stream must keep at least what the most generous
  legacy queue keeps, so a limit is set only when every bound queue has one, and then the
  largest: `x-message-ttl` -> `max_age`, `x-max-length` -> `max_msgs` (with `x-overflow`
  `drop-head` -> `discard: old`, `reject-publish[-dlx]` -> `discard: new`, when all agree),
  `x-max-length-bytes` -> `max_bytes`. Quorum and classic queues are durable on disk: `storage:
  file`, with a comment about replicas. `x-single-active-consumer` on a bound queue makes the
  route's shadow queue single-active-consumer too (order over scale-out, as the legacy chose).
* **Stream queues** (`x-queue-type: stream`) get a route with `mode: stream` in a service of
  their own and a stream `RMQS_<QUEUE>` on `<prefix>-stream.<queue>[.{rk}]`, with
  `x-max-age` -> `max_age` and `x-max-length-bytes` -> `max_bytes`; they are read, not
  shadowed, and kept apart from the exchange's copy because their Msg-Ids (queue/offset) differ.
* **Comments only** (no JetStream equivalent, or a decision for a person): dead-letter
  exchanges (pointing at the DLX's own stream and at the bridge's `dead_letters:` section),
  `x-max-priority`, `x-expires`, lazy mode, `alternate-exchange`, plugin exchange types
  (`x-consistent-hash`, `x-modulus-hash`, `x-delayed-message`, ...), queues reached only through
  the default exchange (which cannot be bound to, so they cannot be shadowed), auto-delete and
  exclusive queues.

The document is checked first (`check_definitions`): the three sections must be lists of
objects, names and keys text, flags booleans, arguments objects, and the queue arguments that
become stream limits whole numbers JetStream can hold. A malformed export is a list of errors
naming each key (`bindings[3].destination`), not a traceback and not a binding on the text `None`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bridge.config.durations import format_duration, parse_duration
from bridge.errors import NothingToCopyError
from bridge.importers.binding_keys import (
    chain_text,
    has_wildcard,
    merge_tables,
    selects_everything,
    topic_intersection,
    topic_subset,
)
from bridge.importers.definitions_check import parse_age
from bridge.importers.render import MappingDocument
from bridge.importers.topology import HASH_TYPES, Binding, Queue, Topology
from bridge.routing import escape_token, topic_matches

DEFAULT_PREFIX = "rmq"
AMQP_URL_REFERENCE = "${AMQP_URL:-amqp://127.0.0.1:5672/}"
NATS_URL_REFERENCE = "${NATS_URL:-nats://127.0.0.1:4222}"
STANDARD_TYPES = frozenset({"topic", "direct", "fanout", "headers"})
DEFAULT_DUPLICATE_WINDOW = timedelta(minutes=2)
MAX_PATHS = 64  # exchange-to-exchange paths followed per queue binding (a mesh cannot explode)


@dataclass
class _Selection:
    """A legacy queue and one chain of bindings that feeds it: the first binding's source is the entry
    exchange, the last binding's destination the queue."""

    queue: str
    chain: list[Binding]


@dataclass
class _Composed:
    """What one chain selects, as a binding of its entry exchange."""

    key: str | None = None  # topic / direct entry
    table: dict[str, Any] | None = None  # headers entry
    dead: bool = False  # no message published to the entry can reach the queue this way
    inexact: list[str] = field(default_factory=list)  # why the binding takes more than the queue gets
    hashed: list[str] = field(default_factory=list)  # hash exchanges on the way


def _plain_name(text: str, fallback: str) -> str:
    """A service, route or source name the model accepts (`[A-Za-z0-9][A-Za-z0-9_-]*`)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_")
    return name or fallback


def _stream_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_").upper() or "DEFAULT"


def _unique(name: str, taken: set[str]) -> str:
    """`name`, or `name-2`, `name-3`... when taken: sanitising can map two names onto one."""
    candidate, count = name, 1
    while candidate in taken or candidate.upper() in {t.upper() for t in taken}:
        count += 1
        candidate = f"{name}-{count}" if "_" not in name or "-" in name else f"{name}_{count}"
    taken.add(candidate)
    return candidate


def _int_arg(arguments: Mapping[str, Any], name: str) -> int | None:
    value = arguments.get(name)
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _vhost_word(vhost: str) -> str:
    """The vhost in stream names: `/` is `DEFAULT` (a stream name cannot hold `/`)."""
    return "DEFAULT" if vhost == "/" else vhost


def _lifetime(queue: Queue) -> str:
    if queue.auto_delete:
        return "auto-delete"
    return "exclusive" if queue.exclusive else "transient"


def _arguments_text(arguments: Mapping[str, Any]) -> str:
    return f", arguments {dict(arguments)}" if arguments else ""


def _window_for(max_age: timedelta | None) -> str | None:
    """duplicate_window may not exceed max_age: shrink it for short-lived queues."""
    if max_age is not None and max_age < DEFAULT_DUPLICATE_WINDOW:
        return format_duration(max_age)
    return None


class _Importer:
    """One pass over a definitions document; builds the mapping and its comments."""

    def __init__(self, definitions: Mapping[str, Any], prefix: str, default_vhost: str) -> None:
        self.prefix = prefix
        self.topology = topology = Topology(definitions, default_vhost)
        self.exchanges = topology.exchanges
        self.queues = topology.queues
        self.bindings = topology.bindings
        self.policies = topology.policies
        self.e2e_into = topology.e2e_into
        self.several_vhosts = len(topology.vhosts) > 1
        self.doc = MappingDocument(data={})
        for policy in self.policies:
            if policy.pattern is None:
                self.doc.header.append(
                    f"policy '{policy.name}' has a pattern that is not a regular expression; it is ignored."
                )
        self.not_mapped: list[str] = []
        self.streams: list[dict[str, Any]] = []
        self.sources: dict[str, dict[str, Any]] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.source_by_vhost: dict[str, str] = {}
        self.taken_services: set[str] = set()
        self.taken_streams: set[str] = set()
        self.stream_of_exchange: dict[tuple[str, str], str] = {}
        # Comments are collected against (kind, name, route) and moved to list positions at the end,
        # because a stream's index in the file is only known once everything is added.
        self.pending: list[tuple[tuple[str, str, int | None], str]] = []

    # -- naming --------------------------------------------------------------------------------

    def _source(self, vhost: str) -> str:
        if vhost not in self.source_by_vhost:
            name = "rabbitmq" if not self.several_vhosts else _plain_name(f"rabbitmq-{vhost}", "rabbitmq-default")
            if vhost == "/" and self.several_vhosts:
                name = "rabbitmq-default"
            name = _unique(name, set(self.sources))
            self.sources[name] = {"type": "rabbitmq", "url": AMQP_URL_REFERENCE, "vhost": vhost}
            self.source_by_vhost[vhost] = name
        return self.source_by_vhost[vhost]

    def _subject_root(self, vhost: str, name: str, prefix: str) -> str:
        tokens = [prefix] + ([escape_token(vhost)] if self.several_vhosts else []) + [escape_token(name)]
        return ".".join(tokens)

    def _label(self, vhost: str, name: str) -> str:
        return f"{name}" if not self.several_vhosts else f"{name} (vhost {vhost})"

    def _exchange_type(self, vhost: str, name: str) -> str | None:
        return self.topology.exchange_type(vhost, name)

    # -- the pass ------------------------------------------------------------------------------

    def run(self) -> MappingDocument:
        self._header()
        queue_bindings: dict[tuple[str, str], list[Binding]] = {}
        selections: dict[tuple[str, str], list[_Selection]] = {}
        for binding in self.bindings:
            if binding.destination_type != "queue":
                continue
            queue_bindings.setdefault((binding.vhost, binding.source), []).append(binding)
            if not binding.source or self._is_stream_queue(binding.vhost, binding.destination):
                continue  # the default exchange's implicit bindings are never exported; stream queues are read
            for entry, chain in self._paths(binding.vhost, binding.source):
                selections.setdefault((binding.vhost, entry), []).append(
                    _Selection(binding.destination, [*chain, binding])
                )
        for vhost, entry in sorted(selections):
            self._exchange_service(vhost, entry, selections[(vhost, entry)])
        self._retry_windows()
        self._stream_queues()
        self._leftovers(queue_bindings)
        self.doc.data = {
            "version": 1,
            "nats": {"servers": [NATS_URL_REFERENCE], "name": "nats-bridge"},
            "streams": self.streams,
            "sources": self.sources,
            "services": self.services,
        }
        self._relocate_comments()
        if not any(service["routes"] for service in self.services.values()):
            raise NothingToCopyError(self.not_mapped)
        return self.doc

    def _paths(self, vhost: str, exchange: str) -> list[tuple[str, list[Binding]]]:
        """Where traffic reaching `exchange` enters: (entry exchange, the exchange-to-exchange bindings
        from it to `exchange`) for every path. An entry is an exchange no exchange-to-exchange binding
        feeds: the exchange producers publish to."""
        found: list[tuple[str, list[Binding]]] = []

        def walk(name: str, chain: list[Binding], seen: frozenset[str]) -> None:
            incoming = self.e2e_into.get((vhost, name), [])
            if not incoming:
                found.append((name, chain))
                return
            for binding in incoming:
                if binding.source not in seen and len(found) < MAX_PATHS:
                    walk(binding.source, [binding, *chain], seen | {binding.source})

        walk(exchange, [], frozenset({exchange}))
        if not found:  # fed only through a cycle of exchange-to-exchange bindings: copy it where it is
            found.append((exchange, []))
        return found

    def _header(self) -> None:
        self.doc.header = [
            "Generated by `nats-bridge import rabbitmq` from a definitions export. Review before use:",
            "every route is in shadow mode (the bridge's own queue, bound like the legacy queues), so legacy",
            "consumers keep every message. Comments mark what JetStream or the bridge cannot express.",
            "The AMQP URL is read from $AMQP_URL; no credential from the export is copied.",
        ]

    def _is_stream_queue(self, vhost: str, queue: str) -> bool:
        found = self.queues.get((vhost, queue))
        return found is not None and found.queue_type == "stream"

    def _note_stream(self, stream: str, line: str) -> None:
        self.pending.append((("stream", stream, None), line))

    def _note_service(self, service: str, line: str, route: int | None = None) -> None:
        self.pending.append((("service", service, route), line))

    def _relocate_comments(self) -> None:
        positions = {stream["name"]: index for index, stream in enumerate(self.streams)}
        for (kind, name, route), line in self.pending:
            if kind == "stream":
                self.doc.note(("streams", positions[name]), line)
            elif route is None:
                self.doc.note(("services", name), line)
            else:
                self.doc.note(("services", name, "routes", route), line)

    def _compose(self, entry_kind: str, chain: list[Binding]) -> _Composed:  # noqa: PLR0912 (one case per step type)
        """What a chain of bindings selects, written as one binding of the entry exchange (of type
        `entry_kind`). The routing key and headers never change on the way, so a message reaches
        the queue when every binding on the chain matches it, each by its own exchange's type."""
        first = chain[0]
        result = _Composed(
            key=first.routing_key if entry_kind in ("topic", "direct") else None,
            table=dict(first.arguments) if entry_kind == "headers" else None,
        )
        for binding in chain[1:]:
            kind = self._exchange_type(binding.vhost, binding.source) or "unknown"
            where = f"exchange '{binding.source}' ({kind})"
            if kind in HASH_TYPES:
                result.hashed.append(binding.source)
                continue
            if selects_everything(kind, binding):
                continue
            key = binding.routing_key
            if entry_kind == "topic" and kind in ("topic", "direct") and result.key is not None:
                if kind == "direct" and has_wildcard(key):
                    result.inexact.append(
                        f"{where} compares the whole key '{key}', which a topic binding reads as a pattern"
                    )
                    continue
                narrowed, exact = topic_intersection(result.key, key)
                if narrowed is None:
                    result.dead = True
                    return result
                if not exact:
                    result.inexact.append(
                        f"{where} binds '{key}': no single topic pattern matches "
                        f"what both '{result.key}' and '{key}' match"
                    )
                result.key = narrowed
            elif entry_kind == "direct" and kind in ("topic", "direct") and result.key is not None:
                if not (topic_matches(key, result.key) if kind == "topic" else key == result.key):
                    result.dead = True
                    return result
            elif entry_kind == "headers" and kind == "headers" and result.table is not None:
                merged = merge_tables(result.table, binding.arguments)
                if merged is None:
                    result.inexact.append(
                        f"{where} binds {dict(binding.arguments)}, which cannot be folded into one "
                        f"headers table with {result.table}"
                    )
                else:
                    result.table = merged
            else:
                what = f"arguments {dict(binding.arguments)}" if kind == "headers" else f"key '{key}'"
                result.inexact.append(f"{where} selects by {what}, which a {entry_kind} binding cannot express")
        return result

    def _exchange_service(  # noqa: PLR0912, PLR0915 (one pass: refusals, route, comments)
        self, vhost: str, exchange: str, selections: list[_Selection]
    ) -> None:
        kind = self._exchange_type(vhost, exchange)
        label = self._label(vhost, exchange)
        queues = ", ".join(sorted({s.queue for s in selections}))
        if kind is None:
            self._not_mapped(
                f"NOT MAPPED: exchange '{label}' feeds queues ({queues}) but is not in the export; its type is unknown."
            )
            return
        if kind in HASH_TYPES:
            self._not_mapped(
                f"NOT MAPPED: exchange '{label}' is a {kind} exchange that producers publish to (queues: {queues}). "
                "It routes each message to ONE of its bindings by a hash, so a shadow queue bound to it would take "
                "a share of the messages away from the legacy queues instead of copying them. Bind a fanout "
                "exchange in front of it (producers publish there; it feeds this one) and import again: the "
                "bridge then copies upstream. At cut-over, drain the queues with `mode: queue`."
            )
            return
        if kind not in STANDARD_TYPES:
            self._not_mapped(
                f"NOT MAPPED: exchange '{label}' is of plugin type '{kind}' (queues: {queues}); the bridge "
                "shadows only topic, direct, fanout and headers exchanges (and copies consistent-hash or "
                "modulus-hash exchanges at the exchange feeding them). Bind an extra topic or fanout exchange "
                "upstream of it and shadow that, or copy each queue at cut-over with `mode: queue`."
            )
            return
        composed = [(selection, self._compose(kind, selection.chain)) for selection in selections]
        live = [(selection, result) for selection, result in composed if not result.dead]
        for selection, result in composed:
            if result.dead:
                self.doc.header.append(
                    f"queue '{selection.queue}' can receive nothing published to exchange '{label}' through "
                    f"{chain_text(selection.chain)}: the bindings on the way never all match one routing key."
                )
        if not live:
            self._not_mapped(f"NOT MAPPED: exchange '{label}': no message published to it can reach a queue.")
            return
        root = self._subject_root(vhost, exchange, self.prefix)
        stream = _unique(
            _stream_name(f"RMQ_{exchange}" if not self.several_vhosts else f"RMQ_{_vhost_word(vhost)}_{exchange}"),
            self.taken_streams,
        )
        self.stream_of_exchange[(vhost, exchange)] = stream
        subjects = [root, f"{root}.>"] if kind in ("topic", "direct") else [root]
        stream_doc: dict[str, Any] = {
            "name": stream,
            "description": f"Shadow copy of RabbitMQ {kind} exchange '{exchange}' (vhost '{vhost}')",
            "subjects": subjects,
            "storage": "file",
        }
        self.streams.append(stream_doc)
        service = _unique(
            _plain_name(exchange if not self.several_vhosts else f"{vhost}-{exchange}", "default"), self.taken_services
        )
        source = self._source(vhost)
        to = f"{root}.{{rk}}" if kind in ("topic", "direct") else root
        routes: list[dict[str, Any]] = []
        by_queue: dict[str, list[tuple[_Selection, _Composed]]] = {}
        for selection, result in live:
            by_queue.setdefault(selection.queue, []).append((selection, result))
        if kind == "headers":
            self._headers_routes(service, source, exchange, to, by_queue, routes)
        else:
            route_from: dict[str, Any] = {"exchange": exchange, "type": kind}
            if kind != "fanout":
                keys: list[str] = []
                for _, result in live:
                    if result.key is not None and result.key not in keys:
                        keys.append(result.key)
                if kind == "topic":  # a chain's key another key already covers adds nothing (order.eu.# under order.#)
                    chained = {r.key for sel, r in live if len(sel.chain) > 1} - {
                        r.key for sel, r in live if len(sel.chain) == 1
                    }
                    keys = [k for k in keys if k not in chained or not any(o != k and topic_subset(k, o) for o in keys)]
                route_from["bindings"] = keys
            routes.append({"name": "shadow", "source": source, "from": route_from, "to": to})
            for queue, reached in by_queue.items():
                direct = [result for selection, result in reached if len(selection.chain) == 1]
                if direct:
                    keys_text = ", ".join(f"'{result.key}'" for result in direct)
                    self._note_service(
                        service, f"legacy queue '{queue}'" + ("" if kind == "fanout" else f" binds {keys_text}"), 0
                    )
                for selection, result in reached:
                    if len(selection.chain) > 1:
                        shown = "" if kind == "fanout" else f": bound here as '{result.key}'"
                        self._note_service(
                            service,
                            f"legacy queue '{queue}' is fed through exchange-to-exchange binding(s) "
                            f"{chain_text(selection.chain)}{shown}",
                            0,
                        )
                    self._chain_notes(service, 0, exchange, selection, result)
        self.services[service] = {
            "description": f"Consumers of RabbitMQ {kind} exchange '{exchange}' (vhost '{vhost}').",
            "routes": routes,
        }
        self._exchange_notes(vhost, exchange, service, stream)
        self._queue_limits(
            stream, stream_doc, service, routes, [self.queues.get((vhost, q)) for q in by_queue], list(by_queue)
        )

    def _not_mapped(self, line: str) -> None:
        self.doc.header.append(line)
        self.not_mapped.append(line)

    def _chain_notes(self, service: str, route: int, entry: str, selection: _Selection, result: _Composed) -> None:
        for reason in result.inexact:
            self._note_service(
                service,
                f"legacy queue '{selection.queue}': {reason}. The route at exchange '{entry}' binds what the "
                "other steps select (a superset): the stream holds more than this queue receives; give its "
                "NATS consumer a narrower filter.",
                route,
            )
        for hashed in result.hashed:
            basis = self.topology.hash_basis(selection.chain[0].vhost, hashed)
            spread = sorted(
                {b.destination for b in self.bindings if b.vhost == selection.chain[0].vhost and b.source == hashed}
            )
            self._note_service(
                service,
                f"exchange '{hashed}' ({self._exchange_type(selection.chain[0].vhost, hashed)}) spreads what it "
                f"receives over {', '.join(repr(s) for s in spread)} by a hash of the {basis}: each message reaches "
                "exactly one of them, so together they receive everything that reaches it, and that is what this "
                "route copies. The subject keeps the routing key: partition NATS consumers with a subject "
                "mapping (partition(n, ...) on the routing-key tokens) or one durable consumer shared by a group.",
                route,
            )

    def _headers_routes(
        self,
        service: str,
        source: str,
        exchange: str,
        to: str,
        by_queue: Mapping[str, list[tuple[_Selection, _Composed]]],
        routes: list[dict[str, Any]],
    ) -> None:
        """One route per distinct argument table: a route matches on one table, as one binding does."""
        taken_routes: set[str] = set()
        seen: dict[str, int] = {}
        for queue, reached in by_queue.items():
            for selection, result in reached:
                table = result.table or {}
                signature = repr(sorted(table.items(), key=lambda item: item[0]))
                if signature in seen:
                    self._note_service(service, f"also bound this way: queue '{queue}'", seen[signature])
                    self._chain_notes(service, seen[signature], exchange, selection, result)
                    continue
                seen[signature] = len(routes)
                route_from: dict[str, Any] = {"exchange": exchange, "type": "headers"}
                if table:
                    route_from["arguments"] = dict(table)
                name = _unique(_plain_name(queue, "queue"), taken_routes)
                routes.append({"name": name, "source": source, "from": route_from, "to": to})
                how = (
                    ""
                    if len(selection.chain) == 1
                    else f" (through exchange-to-exchange binding(s) {chain_text(selection.chain)})"
                )
                self._note_service(service, f"bound like legacy queue '{queue}'{how}", len(routes) - 1)
                self._chain_notes(service, len(routes) - 1, exchange, selection, result)
        if len(seen) > 1:
            # A message several tables match reaches RabbitMQ's queues once each, but it is one
            # message: the routes share their Msg-Ids (not the route-named default), so the
            # stream keeps it once.
            for index in seen.values():
                routes[index]["msg_id"] = "{exchange}/{auto}"

    def _exchange_notes(self, vhost: str, exchange: str, service: str, stream: str) -> None:
        found = self.exchanges.get((vhost, exchange))
        arguments = found.arguments if found is not None else {}
        alternate = arguments.get("alternate-exchange")
        if alternate is not None:
            self._note_service(
                service,
                f"exchange '{exchange}' has alternate-exchange '{alternate}': messages no queue takes go there; "
                "the bridge has no equivalent (its shadow queue counts as a taker once bound). Map that exchange "
                "too if unroutable messages matter.",
            )
        for binding in self.bindings:
            if binding.destination_type != "exchange" or binding.vhost != vhost:
                continue
            if binding.destination == exchange:
                self._note_service(
                    service,
                    f"also receives from exchange '{binding.source}' via an exchange-to-exchange binding "
                    f"(key '{binding.routing_key}'{_arguments_text(binding.arguments)})"
                    "; the shadow queue bound here copies those messages too.",
                )
        del stream

    def _queue_limits(
        self,
        stream: str,
        stream_doc: dict[str, Any],
        service: str,
        routes: list[dict[str, Any]],
        queues: list[Queue | None],
        names: list[str],
    ) -> None:
        known = [queue for queue in queues if queue is not None]
        self._limit_notes(stream, known)
        for name, queue in zip(names, queues, strict=True):
            if queue is None:
                self._note_stream(stream, f"queue '{name}' is bound but not in the export; its limits are unknown")
        if not known or len(known) != len(queues):
            return
        ttls = [None if self._retry_target(q) else _int_arg(q.arguments, "x-message-ttl") for q in known]
        for queue in known:
            target = self._retry_target(queue)
            if target is not None:
                self._note_stream(
                    stream,
                    f"queue '{queue.name}' is a retry or delay queue: its x-message-ttl "
                    f"{queue.arguments.get('x-message-ttl')} ms is how long a message waits before it is "
                    f"dead-lettered back into the topology ({target}), not how long it is kept, so it sets no "
                    "max_age here.",
                )
        if all(ttl is not None for ttl in ttls):
            age = timedelta(milliseconds=max(ttl for ttl in ttls if ttl is not None))
            if age > timedelta(0):
                kept = max(age, DEFAULT_DUPLICATE_WINDOW)
                stream_doc["max_age"] = format_duration(kept)
                self._note_stream(
                    stream,
                    "max_age from x-message-ttl (the longest of the bound queues). A queue's TTL expires "
                    "unconsumed messages; a stream's max_age removes stored ones whether read or not."
                    + (
                        f" Kept {format_duration(kept)}, not the TTL's {format_duration(age)}: the duplicate "
                        "window (which must fit in max_age) has to cover a bridge restart."
                        if kept > age
                        else ""
                    ),
                )
        lengths = [_int_arg(q.arguments, "x-max-length") for q in known]
        if all(length is not None for length in lengths):
            stream_doc["max_msgs"] = max(length for length in lengths if length is not None)
            overflows = {str(q.arguments.get("x-overflow", "drop-head")) for q in known}
            if overflows <= {"reject-publish", "reject-publish-dlx"}:
                stream_doc["discard"] = "new"
                self._note_stream(
                    stream,
                    "max_msgs from x-max-length; x-overflow reject-publish -> discard: new (a full stream "
                    "refuses messages and the bridge pauses its route until there is room).",
                )
            else:
                stream_doc["discard"] = "old"
                self._note_stream(stream, "max_msgs from x-max-length; x-overflow drop-head -> discard: old.")
        sizes = [_int_arg(q.arguments, "x-max-length-bytes") for q in known]
        if all(size is not None for size in sizes):
            stream_doc["max_bytes"] = max(size for size in sizes if size is not None)
            self._note_stream(stream, "max_bytes from x-max-length-bytes (the largest of the bound queues).")
        for queue in known:
            self._queue_notes(queue, stream, service, routes)

    def _limit_notes(self, stream: str, queues: Iterable[Queue]) -> None:
        for queue in queues:
            for argument in ("x-message-ttl", "x-max-length", "x-max-length-bytes"):
                if argument in queue.arguments:
                    self._note_stream(
                        stream,
                        f"queue '{queue.name}' has {argument} {queue.arguments[argument]}; the stream takes a limit "
                        "only when every bound queue has one (then the largest), so no consumer's view is cut short.",
                    )

    def _queue_notes(self, queue: Queue, stream: str, service: str, routes: list[dict[str, Any]]) -> None:
        args = queue.arguments
        name = queue.name
        for line in queue.policy_notes:
            self._note_stream(stream, f"queue '{name}': {line}.")
        if queue.queue_type == "quorum":
            self._note_stream(
                stream,
                f"queue '{name}' is a quorum queue: storage: file; in a NATS cluster consider replicas: 3 "
                "for the same durability.",
            )
        elif queue.queue_type == "classic":
            self._note_stream(stream, f"queue '{name}' is a classic queue: storage: file.")
        dlx = args.get("x-dead-letter-exchange")
        if dlx is not None:
            key = args.get("x-dead-letter-routing-key")
            target = self.stream_of_exchange.get((queue.vhost, str(dlx)))
            where = f"stream {target}" if target else "its own stream once that exchange is mapped"
            if target is None and self._has_queue_bindings(queue.vhost, str(dlx)):
                where = f"the stream of exchange '{dlx}' (see its service)"
            self._note_service(
                service,
                f"queue '{name}' dead-letters to exchange '{dlx}'"
                + (f" with routing key '{key}'" if key is not None else "")
                + f": those messages are copied by that exchange's route, into {where}. The bridge's own "
                "undeliverable messages go to the `dead_letters:` stream (NATS_BRIDGE_DLQ), not there.",
            )
        if "x-max-priority" in args:
            self._note_service(
                service,
                f"queue '{name}' is a priority queue (x-max-priority {args['x-max-priority']}): JetStream "
                "delivers in stream order and has no priorities; use a separate subject per priority if it matters.",
            )
        if "x-expires" in args:
            self._note_service(
                service,
                f"queue '{name}' expires after {args['x-expires']} ms unused (x-expires); streams do not expire. "
                "For short-lived consumers use ephemeral or inactive_threshold consumers in NATS.",
            )
        if args.get("x-queue-mode") == "lazy":
            self._note_stream(stream, f"queue '{name}' is lazy (x-queue-mode): file storage keeps messages on disk.")
        if args.get("x-single-active-consumer"):
            for route in routes:
                route["from"]["single_active_consumer"] = True
            self._note_service(
                service,
                f"queue '{name}' has x-single-active-consumer: the shadow queue gets it too "
                "(single_active_consumer: true), keeping order when several bridges run.",
            )
        if queue.auto_delete or queue.exclusive or not queue.durable:
            self._note_service(
                service,
                f"queue '{name}' is {_lifetime(queue)}: it exists only while its consumer is connected, "
                "so its bindings may not be in every export.",
            )

    def _retry_target(self, queue: Queue) -> str | None:
        """How a retry or delay queue's expired messages re-enter the topology, None when it is not one.

        One is a queue with a message TTL whose dead-letter exchange (with the dead-letter routing key,
        or any key) routes to a queue that is not a parking lot: a queue with a dead-letter exchange or
        a TTL of its own, or one fed by an exchange that is no queue's dead-letter exchange. A TTL into
        a plain dead-letter queue stays retention (the dead-letter exchange's own route keeps the rest).
        """
        dlx = queue.arguments.get("x-dead-letter-exchange")
        if _int_arg(queue.arguments, "x-message-ttl") is None or not isinstance(dlx, str) or not dlx:
            return None
        key = queue.arguments.get("x-dead-letter-routing-key")
        reached = self._queues_reached(queue.vhost, dlx, key if isinstance(key, str) else None)
        dead_letter_exchanges = {
            str(q.arguments["x-dead-letter-exchange"])
            for q in self.queues.values()
            if q.vhost == queue.vhost and "x-dead-letter-exchange" in q.arguments
        }
        onward = []
        for name in sorted(reached - {queue.name}):
            found = self.queues.get((queue.vhost, name))
            feeders = {b.source for b in self.bindings if b.vhost == queue.vhost and b.destination == name}
            if found is None or (
                "x-dead-letter-exchange" in found.arguments
                or "x-message-ttl" in found.arguments
                or bool(feeders - dead_letter_exchanges)
            ):
                onward.append(name)
        if not onward:
            return None
        return f"exchange '{dlx}' routes them to " + ", ".join(f"'{name}'" for name in onward)

    def _retry_windows(self) -> None:
        """Widen the duplicate window of the stream a retry queue sends its messages back into.

        A message comes back from a retry queue a TTL after it failed, and its shadow copy has the
        Msg-Id of its first copy (its message_id, or the content hash, which leaves out what dead
        lettering adds), so JetStream keeps it once only while that Msg-Id is in the window: the
        TTL plus the default window (which covers a bridge restart)."""
        docs = {stream["name"]: stream for stream in self.streams}
        widest: dict[str, tuple[timedelta, list[str]]] = {}
        for (vhost, name), queue in sorted(self.queues.items()):
            ttl = _int_arg(queue.arguments, "x-message-ttl")
            if ttl is None or self._retry_target(queue) is None:
                continue
            dlx = str(queue.arguments["x-dead-letter-exchange"])
            stream = self.stream_of_exchange.get((vhost, dlx))
            if stream is None:
                continue  # not copied where it comes back (the dead-letter note says where it is)
            window = timedelta(milliseconds=ttl) + DEFAULT_DUPLICATE_WINDOW
            line = (
                f"queue '{name}' is a retry queue: each message it holds comes back into exchange '{dlx}' "
                f"{format_duration(timedelta(milliseconds=ttl))} after it failed (its x-message-ttl), with the "
                "Msg-Id of the copy made when it was first published there"
            )
            if "x-dead-letter-routing-key" in queue.arguments:
                line += (
                    f" when it has a message_id (it comes back with routing key "
                    f"'{queue.arguments['x-dead-letter-routing-key']}', so a content hash differs: stored again)"
                )
            best, lines = widest.get(stream, (DEFAULT_DUPLICATE_WINDOW, []))
            widest[stream] = (max(best, window), [*lines, line])
        for stream, (window, lines) in widest.items():
            doc = docs[stream]
            kept = window
            if "max_age" in doc:
                kept = min(window, parse_duration(doc["max_age"]))  # JetStream: the window fits in max_age
            if kept > DEFAULT_DUPLICATE_WINDOW:
                doc["duplicate_window"] = format_duration(kept)
            for line in lines:
                self._note_stream(stream, line + ".")
            self._note_stream(
                stream,
                f"duplicate_window {format_duration(kept)}: JetStream stores a message again once its Msg-Id "
                "has left the window, so the window spans the longest retry delay plus the default 2m, and a "
                "retried message is stored once, not once per attempt. It covers ONE trip through the retry "
                "queue: if consumers retry N times, raise it to N x the delay + 2m (JetStream keeps every "
                "Msg-Id of the window in memory)."
                + (
                    f" Capped at max_age {doc['max_age']}: a retry later than that is stored again (its first "
                    "copy is gone by then)."
                    if kept < window
                    else ""
                ),
            )

    def _queues_reached(self, vhost: str, exchange: str, key: str | None) -> set[str]:
        """Queues a message published to `exchange` with routing key `key` (None: any) can reach."""
        reached: set[str] = set()
        pending, seen = [exchange], {exchange}
        while pending:
            name = pending.pop()
            kind = self._exchange_type(vhost, name)
            for binding in self.bindings:
                if binding.vhost != vhost or binding.source != name:
                    continue
                if key is not None and kind == "topic" and not topic_matches(binding.routing_key, key):
                    continue
                if key is not None and kind == "direct" and binding.routing_key != key:
                    continue
                if binding.destination_type == "queue":
                    reached.add(binding.destination)
                elif binding.destination not in seen:
                    seen.add(binding.destination)
                    pending.append(binding.destination)
        return reached

    def _has_queue_bindings(self, vhost: str, exchange: str) -> bool:
        return any(b.vhost == vhost and b.source == exchange and b.destination_type == "queue" for b in self.bindings)

    def _stream_queues(self) -> None:
        for (vhost, name), queue in sorted(self.queues.items()):
            if queue.queue_type != "stream":
                continue
            root = self._subject_root(vhost, name, f"{self.prefix}-stream")
            stream = _unique(
                _stream_name(f"RMQS_{name}" if not self.several_vhosts else f"RMQS_{_vhost_word(vhost)}_{name}"),
                self.taken_streams,
            )
            stream_doc: dict[str, Any] = {
                "name": stream,
                "description": f"Copy of RabbitMQ stream queue '{name}' (vhost '{vhost}')",
                "subjects": [root, f"{root}.>"],
                "storage": "file",
            }
            age = parse_age(queue.arguments["x-max-age"]) if "x-max-age" in queue.arguments else None
            if age is not None:
                stream_doc["max_age"] = format_duration(age)
                window = _window_for(age)
                if window is not None:
                    stream_doc["duplicate_window"] = window
                self._note_stream(stream, f"max_age from the stream queue's x-max-age {queue.arguments['x-max-age']}.")
            size = _int_arg(queue.arguments, "x-max-length-bytes")
            if size is not None:
                stream_doc["max_bytes"] = size
                self._note_stream(stream, "max_bytes from the stream queue's x-max-length-bytes.")
            self.streams.append(stream_doc)
            service = _unique(
                _plain_name(f"{name}-stream" if not self.several_vhosts else f"{vhost}-{name}-stream", "stream"),
                self.taken_services,
            )
            self.services[service] = {
                "description": f"Readers of RabbitMQ stream queue '{name}' (vhost '{vhost}').",
                "routes": [
                    {
                        "name": "stream",
                        "source": self._source(vhost),
                        "from": {"queue": name, "mode": "stream", "stream_offset": "first"},
                        "to": f"{root}.{{rk}}",
                    }
                ],
            }
            self._note_service(
                service,
                "a stream queue is read, not consumed: legacy readers are untouched. It starts at the first "
                "offset; Msg-Ids are <queue>/<offset> and the route checkpoints like a Kafka partition.",
                0,
            )
            sources = sorted({b.source for b in self.bindings if b.vhost == vhost and b.destination == name})
            if sources:
                self._note_service(service, "fed by exchange(s): " + ", ".join(f"'{s}'" for s in sources))

    def _leftovers(self, queue_bindings: Mapping[tuple[str, str], Iterable[Binding]]) -> None:
        bound = {(b.vhost, b.destination) for bindings in queue_bindings.values() for b in bindings if b.source}
        for (vhost, name), queue in sorted(self.queues.items()):
            if (vhost, name) not in bound and queue.queue_type != "stream":
                self.doc.header.append(
                    f"NOT MAPPED: queue '{self._label(vhost, name)}' has no bindings: it is fed through the "
                    "default exchange (routing key = queue name), which cannot be bound to, so it cannot be "
                    "shadowed. At cut-over, drain it with a route `from: {queue: "
                    f"{name}, mode: queue}}`."
                )
        for (vhost, name), exchange in sorted(self.exchanges.items()):
            if (vhost, name) in self.stream_of_exchange:
                continue
            outgoing = [b for b in self.bindings if b.vhost == vhost and b.source == name]
            label = self._label(vhost, name)
            feeders = sorted({b.source for b in self.e2e_into.get((vhost, name), [])})
            if not outgoing:
                self.doc.header.append(f"exchange '{label}' has no bindings: nothing consumes from it; not mapped.")
            if exchange.type not in STANDARD_TYPES and not outgoing:
                self.doc.header.append(f"NOT MAPPED: exchange '{label}' is of plugin type '{exchange.type}'.")
            elif feeders and outgoing:
                entries = sorted({entry for entry, _ in self._paths(vhost, name)})
                mapped = [e for e in entries if (vhost, e) in self.stream_of_exchange]
                self.doc.header.append(
                    f"exchange '{label}' is fed by exchange-to-exchange binding(s) from "
                    + ", ".join(f"'{f}'" for f in feeders)
                    + ": what its queues receive is copied where that traffic enters ("
                    + (", ".join(f"'{e}'" for e in mapped) or "no exchange that could be shadowed")
                    + "), bound to select what reaches them through the chain. Messages published to "
                    f"'{name}' directly are not copied: if producers do that, add a shadow route on it."
                )
            if "alternate-exchange" in exchange.arguments and not any(b.destination_type == "queue" for b in outgoing):
                self.doc.header.append(
                    f"exchange '{label}' has alternate-exchange '{exchange.arguments['alternate-exchange']}'; "
                    "the bridge has no equivalent."
                )


def import_definitions(
    definitions: Mapping[str, Any], prefix: str = DEFAULT_PREFIX, vhost: str = "/"
) -> MappingDocument:
    """A mapping document (plain data + comments) shadowing the exchanges of a definitions export.

    Pure: reads nothing but `definitions`. The rules are in the module docstring. `vhost` is
    the vhost of items that name none: a single-vhost export (`/api/definitions/<vhost>`)
    leaves it out of every exchange, queue and binding.
    """
    return _Importer(definitions, prefix, vhost).run()
