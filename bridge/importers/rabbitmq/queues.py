"""What a queue's arguments and policies become: stream limits (max-length, TTLs), and notes for
what JetStream has no equivalent of (dead lettering, retry loops, priorities, lazy mode)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from bridge.config.durations import format_duration, parse_duration
from bridge.importers.rabbitmq.state import DEFAULT_DUPLICATE_WINDOW, _int_arg, _lifetime, _State
from bridge.importers.topology import Queue


class _Queues(_State):
    """Queue limits and notes (see the module docstring)."""

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
