"""One service per entry exchange: the routes that copy what its queues select, composed along
exchange-to-exchange chains, headers exchanges, and notes for what cannot be copied exactly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.importers.binding_keys import (
    chain_text,
    has_wildcard,
    merge_tables,
    selects_everything,
    topic_intersection,
    topic_subset,
)
from bridge.importers.rabbitmq.consumers import _Consumers
from bridge.importers.rabbitmq.state import (
    STANDARD_TYPES,
    _arguments_text,
    _Composed,
    _plain_name,
    _Selection,
    _stream_name,
    _unique,
    _vhost_word,
)
from bridge.importers.topology import HASH_TYPES, Binding
from bridge.routing import topic_matches


class _Exchanges(_Consumers):
    """Services and routes from exchanges (see the module docstring)."""

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
        route_of: dict[str, int] = {}
        if kind == "headers":
            route_of = self._headers_routes(service, source, exchange, to, by_queue, routes)
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
        self._queue_consumers(vhost, service, stream, by_queue, route_of)
        self._exchange_notes(vhost, exchange, service, stream)
        self._queue_limits(
            stream, stream_doc, service, routes, [self.queues.get((vhost, q)) for q in by_queue], list(by_queue)
        )

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
    ) -> dict[str, int]:
        """One route per distinct argument table: a route matches on one table, as one binding does.
        Returns the route of each queue (the first of its tables), for its consumer's `replaces`."""
        taken_routes: set[str] = set()
        seen: dict[str, int] = {}
        route_of: dict[str, int] = {}
        for queue, reached in by_queue.items():
            for selection, result in reached:
                table = result.table or {}
                signature = repr(sorted(table.items(), key=lambda item: item[0]))
                route_of.setdefault(queue, seen.get(signature, len(routes)))
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
        return route_of

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
