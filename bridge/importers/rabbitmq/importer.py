"""The pass itself: exchanges into services, then stream queues read directly, then what is left
unmapped named in the file's header."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bridge.config.durations import format_duration
from bridge.errors import NothingToCopyError
from bridge.importers.definitions_check import parse_age
from bridge.importers.rabbitmq.exchanges import _Exchanges
from bridge.importers.rabbitmq.state import (
    DEFAULT_PREFIX,
    NATS_URL_REFERENCE,
    STANDARD_TYPES,
    _int_arg,
    _plain_name,
    _Selection,
    _stream_name,
    _unique,
    _vhost_word,
    _window_for,
)
from bridge.importers.render import MappingDocument
from bridge.importers.topology import Binding


class _Importer(_Exchanges):
    """One pass over a definitions document; builds the mapping and its comments."""

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
