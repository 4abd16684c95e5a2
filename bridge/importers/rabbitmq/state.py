"""The importer's state and plumbing: naming (sources, subjects, labels), exchange-to-exchange
paths, comments collected against streams and services and placed at the end, and the small
helpers every step shares. The steps build on it: queues.py, exchanges.py, importer.py."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bridge.config.durations import format_duration
from bridge.importers.render import MappingDocument
from bridge.importers.topology import Binding, Queue, Topology
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


class _State:
    """One pass over a definitions document: what it has built so far, and how it names things."""

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

    def _not_mapped(self, line: str) -> None:
        self.doc.header.append(line)
        self.not_mapped.append(line)

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
