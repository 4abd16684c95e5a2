"""One JetStream durable consumer per legacy queue: the starting point for moving its readers.

Each queue the importer shadows gets a `consumers:` entry in the service holding the route that
copies what it receives, with `replaces: {queue: ...}` so validate and dry-run check the two
agree (bridge.dryrun.consumers). Its values, and the comment beside each, come from the queue:

* `filter_subjects`: the queue's binding keys (as composed at the entry exchange) through the
  route's subject template, the very translation the route uses (bridge.route_shapes), made
  exact where NATS can say it (`order.#` -> `x.order`, `x.order.>`) and otherwise the narrowest
  single filter that still takes all of it (`a.#.b` -> `x.a.>`, a superset, said in a comment).
* `max_ack_pending`: the prefetch of the queue's consumers when the export lists them, else a
  small `x-max-length`; `max_deliver`: `x-delivery-limit` + 1 (RabbitMQ counts redeliveries,
  JetStream deliveries); `ack_wait`: `x-consumer-timeout`.
* Comments only: dead lettering (JetStream has none), priorities, what a person must decide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from bridge.config.durations import format_duration
from bridge.config.routes import RouteConfig
from bridge.importers.consumer_names import consumer_name
from bridge.importers.rabbitmq.queues import _Queues
from bridge.importers.rabbitmq.state import _Composed, _int_arg, _lifetime, _Selection
from bridge.importers.topology import Queue
from bridge.route_shapes import route_shapes
from bridge.routing.filters import consumer_filters

JETSTREAM_MAX_ACK_PENDING = 1000  # nats-server's default; a smaller x-max-length is taken instead
Path = tuple[str | int, ...]


class _Consumers(_Queues):
    """The `consumers:` entries of a shadowed exchange's service (see the module docstring)."""

    def _queue_consumers(
        self,
        vhost: str,
        service: str,
        stream: str,
        by_queue: Mapping[str, list[tuple[_Selection, _Composed]]],
        route_of: Mapping[str, int],
    ) -> None:
        """One consumer per queue of `by_queue`, reading `stream`; `route_of` gives the index of the
        route that copies what each queue receives (route 0 when it is not listed)."""
        self._consumers_header()
        doc = self.services[service]
        routes: list[dict[str, Any]] = doc["routes"]
        consumers: list[dict[str, Any]] = doc.setdefault("consumers", [])
        taken: set[str] = {c["name"] for c in consumers}
        for queue_name, reached in by_queue.items():
            route = routes[route_of.get(queue_name, 0)]
            index = len(consumers)
            path: Path = ("services", service, "consumers", index)
            consumer: dict[str, Any] = {"name": consumer_name(queue_name, taken), "stream": stream}
            consumers.append(consumer)
            replaces: dict[str, Any] = {"queue": queue_name}
            self._filters(path, consumer, replaces, route, service, reached)
            if len(routes) > 1:
                replaces["route"] = route["name"]
            queue = self.queues.get((vhost, queue_name))
            self.doc.note(
                path,
                f"Takes over from legacy queue '{self._label(vhost, queue_name)}'"
                + (f" ({queue.queue_type} queue)." if queue is not None else " (not in the export: no limits known)."),
            )
            if queue is not None:
                self._limits(path, consumer, queue)
                self._queue_consumer_notes(path, queue, stream)
            consumer["replaces"] = replaces

    def _filters(
        self,
        path: Path,
        consumer: dict[str, Any],
        replaces: dict[str, Any],
        route: Mapping[str, Any],
        service: str,
        reached: Sequence[tuple[_Selection, _Composed]],
    ) -> None:
        """filter_subjects from the queue's binding keys through the route's own subject template."""
        source = dict(route["from"])
        kind = source["type"]
        keys: list[str] = []
        if kind in ("topic", "direct"):
            for _, composed in reached:
                if composed.key is not None and composed.key not in keys:
                    keys.append(composed.key)
            source["bindings"] = keys
            if set(keys) != set(route["from"].get("bindings", [])):
                replaces["bindings"] = keys
        shadow = RouteConfig.model_validate({**route, "from": source})
        shapes = [family.shape for family in route_shapes(service, shadow)]
        chosen = consumer_filters(shapes)
        consumer["filter_subjects"] = chosen.filters
        field_path = (*path, "filter_subjects")
        if kind in ("topic", "direct"):
            self.doc.note(
                field_path,
                "filter_subjects: the queue's binding key(s) "
                + ", ".join(f"'{key}'" for key in keys)
                + f" through the route's subject template ({route['to']}).",
            )
        elif kind == "fanout":
            self.doc.note(field_path, f"filter_subjects: a fanout exchange's subject ({route['to']}), all of it.")
        else:
            tables = [composed.table for _, composed in reached]
            self.doc.note(
                field_path,
                f"filter_subjects: the headers exchange's subject ({route['to']}). The queue is selected on "
                f"headers ({', '.join(str(t) for t in tables)}); JetStream filters on subjects only, so this "
                "consumer gets everything the service's routes copy and its code must skip the rest.",
            )
        for cover in chosen.inexact:
            self.doc.note(
                field_path,
                f"'{cover}' is wider than the queue's binding: a '#' before a key's end has no exact NATS filter "
                "('>' only ends one), so this is the narrowest filter that still takes everything the queue got. "
                "The consumer also gets subjects the queue did not; its code must skip them, or a route bound "
                "with that key alone can give those messages subjects of their own.",
            )
        for line in chosen.merged:
            self.doc.note(field_path, f"{line}: JetStream refuses overlapping filters on one consumer.")
        for selection, composed in reached:
            for reason in composed.inexact:
                self.doc.note(
                    field_path,
                    f"through {len(selection.chain) - 1} exchange-to-exchange step(s): {reason}; the filter "
                    "follows the route's binding, a superset of what the queue receives.",
                )
            for hashed in composed.hashed:
                self.doc.note(
                    field_path,
                    f"the queue takes a share of what exchange '{hashed}' spreads by a hash, not a copy: the "
                    "filter takes every share; one consumer shared by the readers of all those queues replaces them.",
                )

    def _limits(self, path: Path, consumer: dict[str, Any], queue: Queue) -> None:
        """max_ack_pending, max_deliver and ack_wait from what the queue says, each with its reason."""
        args = queue.arguments
        length = _int_arg(args, "x-max-length")
        if queue.prefetch is not None:
            consumer["max_ack_pending"] = queue.prefetch
            self.doc.note(
                (*path, "max_ack_pending"),
                f"max_ack_pending: the prefetch counts of the queue's consumers, summed ({queue.prefetch}): "
                "shared by all the workers of this consumer, as they were by the queue's.",
            )
        elif length is not None and 0 < length < JETSTREAM_MAX_ACK_PENDING:
            consumer["max_ack_pending"] = length
            self.doc.note(
                (*path, "max_ack_pending"),
                f"max_ack_pending from x-max-length {length}: the queue never held more than that waiting, so "
                "its readers were sized for it. RabbitMQ's prefetch (basic.qos) x workers is the better value "
                "(`--api` reads it while they are connected); set it if known.",
            )
        limit = _int_arg(args, "x-delivery-limit")
        if limit is not None and queue.queue_type != "quorum":
            self.doc.note(path, f"x-delivery-limit {limit} is ignored: RabbitMQ applies it to quorum queues only.")
        elif limit is not None and limit >= 0:
            consumer["max_deliver"] = limit + 1
            self.doc.note(
                (*path, "max_deliver"),
                f"max_deliver {limit + 1} from x-delivery-limit {limit}: RabbitMQ counts redeliveries, "
                "JetStream counts deliveries (the first one too).",
            )
        elif queue.queue_type == "quorum":
            self.doc.note(
                path,
                "no x-delivery-limit: max_deliver is unlimited. RabbitMQ 4 gives quorum queues a delivery "
                "limit of 20 when none is set; on such a broker set max_deliver: 21 for the same behaviour.",
            )
        timeout = _int_arg(args, "x-consumer-timeout")
        if timeout is not None and timeout > 0:
            consumer["ack_wait"] = format_duration(timedelta(milliseconds=timeout))
            self.doc.note(
                (*path, "ack_wait"),
                f"ack_wait from x-consumer-timeout {timeout} ms: how long a delivery may stay unacknowledged.",
            )

    def _consumers_header(self) -> None:
        """What every generated consumer leaves at JetStream's defaults, said once in the header."""
        lines = [
            "Consumers: one durable per legacy queue, in the service whose route copies what it receives, with",
            "`replaces:` naming the queue (validate and dry-run check its filters cover the queue's bindings).",
            "Each is a starting point; the comment above a value says where it came from. Left at defaults:",
            "deliver_policy all (`nats-bridge handoff` creates the consumer where the queue's readers stopped);",
            "ack_wait 30s (RabbitMQ waits its consumer_timeout, 30 min by default: raise it for slow handlers);",
            "max_ack_pending 1000 unless known: prefetch (basic.qos) x workers, which an export does not say",
            "(`import rabbitmq --api URL` reads it from the consumers connected now).",
        ]
        if lines[0] not in self.doc.header:
            self.doc.header.extend(lines)

    def _queue_consumer_notes(self, path: Path, queue: Queue, stream: str) -> None:
        args = queue.arguments
        dlx = args.get("x-dead-letter-exchange")
        if dlx is not None:
            key = args.get("x-dead-letter-routing-key")
            target = self.stream_of_exchange.get((queue.vhost, str(dlx)))
            if target is None and self._has_queue_bindings(queue.vhost, str(dlx)):
                target = f"the stream of exchange '{dlx}' (see its service)"
            self.doc.note(
                path,
                f"the queue dead-letters to exchange '{dlx}'"
                + (f" with routing key '{key}'" if key is not None else "")
                + " (rejected, expired or over a limit). JetStream has no dead lettering: a message past "
                f"max_deliver stays in {stream}, and the server publishes an advisory to "
                f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.<consumer> (MSG_TERMINATED for one the "
                "code terminates). To keep a dead-letter queue, have the consumer's code publish the message "
                "to a dead-letter subject before it terminates it, or a small service republish it from the "
                "advisory (which names its stream sequence)"
                + (f"; what the dead-letter exchange routes is copied into {target}." if target else "."),
            )
        if "x-max-priority" in args:
            self.doc.note(path, "a priority queue: JetStream delivers in stream order (see the service's note).")
        if queue.auto_delete or queue.exclusive or not queue.durable:
            self.doc.note(
                path,
                f"the queue is {_lifetime(queue)}: its reader may want an ephemeral or ordered consumer "
                "instead of this durable one.",
            )
