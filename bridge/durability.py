"""Durability posture: what the legacy side promised about an acknowledged message, what the
JetStream stream it lands on keeps, and a warning when the stream keeps less.

Why this exists: Jepsen's analysis of NATS 2.12.1 (2025-12) showed JetStream acknowledging a
publish before it is fsynced (the server's `sync_interval`, 2 minutes by default) and losing
acknowledged messages on a power failure or an OS crash; an R1 stream loses everything its one
disk held. A RabbitMQ quorum queue confirms only once a majority of its members fsynced the
message. Moving a team from one to the other silently downgrades what "acknowledged" means, and
nothing in a mapping file says so. `dry-run --connect` and `status` show, per stream, replicas,
storage and (where a server's monitoring endpoint reveals it) `sync_interval`, and warn when a
route from a replicated or fsyncing legacy source lands on a weaker stream.

What each legacy setting promises (MIGRATION.md has the table and the measured cost):

- RabbitMQ quorum queue: Raft; a publisher confirm after a majority of its members wrote *and
  fsynced* it. Kept by: replicas 3, storage file, `sync_interval: always`.
- RabbitMQ stream: replicated to a majority before the confirm, but never fsynced explicitly
  (it relies on replication). Kept by: replicas 3, storage file; the default sync is comparable.
- Kafka topic, acks=all: the in-sync replicas have it (in the page cache: Kafka does not fsync
  by default, `flush.messages`); replication factor N. Kept by: replicas 3 for N >= 2 (a
  `flush.messages: 1` topic fsyncs each record, like a quorum queue).
- RabbitMQ classic durable queue: one node; persistent messages are confirmed after they reach
  the disk. Kept by: replicas 1, storage file, `sync_interval: always` (a note, not a warning:
  the node is still one disk either way).
- Transient (non-durable) queue: nothing to keep.

This module is pure: bridge.durability_probe asks the brokers for the facts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

from bridge.config.durations import format_duration

DEFAULT_SYNC_INTERVAL = timedelta(minutes=2)  # nats-server's default flush to disk (filestore)
NOT_REVEALED = "not revealed to clients"


class LegacyKind(StrEnum):
    CLASSIC = "classic queue"
    QUORUM = "quorum queue"
    STREAM = "RabbitMQ stream"
    KAFKA = "Kafka topic"


class Level(StrEnum):
    WARNING = "warning"  # the stream keeps less than the legacy side promised
    NOTE = "note"  # worth knowing; changes no exit code


@dataclass(frozen=True, slots=True)
class LegacySource:
    """One legacy queue or topic whose messages a route copies, as its broker describes it."""

    kind: LegacyKind
    name: str
    durable: bool = True
    copies: int | None = None  # quorum/stream members, mirrors + 1, Kafka replication factor
    min_insync: int | None = None  # Kafka min.insync.replicas
    fsync_each: bool = False  # Kafka flush.messages=1: every record fsynced before the ack

    @property
    def replicated(self) -> bool:
        """Promises copies on more than one node: quorum queues and streams by design (even
        while a single node runs them, their type is the promise), Kafka and mirrored classic
        queues by their replication factor."""
        if self.kind in (LegacyKind.QUORUM, LegacyKind.STREAM):
            return True
        return (self.copies or 1) >= 2

    @property
    def fsyncs(self) -> bool:
        """Confirms only what reached the disk."""
        if self.kind is LegacyKind.QUORUM:
            return True
        if self.kind is LegacyKind.CLASSIC:
            return self.durable
        return self.kind is LegacyKind.KAFKA and self.fsync_each

    def describe(self) -> str:
        """The legacy setting in words, for a posture line or a warning."""
        name = f"{self.kind} '{self.name}'"
        if self.kind is LegacyKind.QUORUM:
            members = f"{self.copies} member(s), " if self.copies else ""
            return f"{name} ({members}Raft: confirmed once a majority fsynced it)"
        if self.kind is LegacyKind.STREAM:
            members = f"{self.copies} member(s), " if self.copies else ""
            return f"{name} ({members}replicated to a majority before the confirm, not fsynced)"
        if self.kind is LegacyKind.KAFKA:
            parts = [f"replication factor {self.copies}" if self.copies else "replication factor unknown"]
            if self.min_insync is not None:
                parts.append(f"min.insync.replicas {self.min_insync}")
            parts.append("flush.messages 1: fsync per record" if self.fsync_each else "no fsync (page cache)")
            return f"{name} ({', '.join(parts)})"
        if not self.durable:
            return f"{name} (transient: lost on a broker restart)"
        mirrors = f", {self.copies - 1} mirror(s)" if self.copies and self.copies > 1 else ", one node"
        return f"{name} (durable{mirrors}; persistent messages confirmed after fsync)"

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "name": self.name,
            "durable": self.durable,
            "copies": self.copies,
            "min_insync_replicas": self.min_insync,
            "fsync_before_ack": self.fsyncs,
            "replicated": self.replicated,
            "text": self.describe(),
        }


def legacy_from_management(queue: Mapping[str, Any]) -> LegacySource:
    """A queue as RabbitMQ's management API lists it (`type`, `durable`, `members` of a quorum
    queue or stream, `slave_nodes` of a mirrored classic queue)."""
    kind = {"quorum": LegacyKind.QUORUM, "stream": LegacyKind.STREAM}.get(
        str(queue.get("type", "classic")), LegacyKind.CLASSIC
    )
    members, mirrors = queue.get("members"), queue.get("slave_nodes")
    copies: int | None = None
    if isinstance(members, list) and members:
        copies = len(members)
    elif kind is LegacyKind.CLASSIC:
        copies = 1 + (len(mirrors) if isinstance(mirrors, list) else 0)
    return LegacySource(kind, str(queue.get("name", "")), durable=queue.get("durable") is not False, copies=copies)


def legacy_from_kafka(topic: str, partitions: Sequence[Mapping[str, Any]], configs: Mapping[str, str]) -> LegacySource:
    """A topic as the admin API describes it: the smallest partition replica set is its
    replication factor; `min.insync.replicas` and `flush.messages` from its configs."""
    sizes = [len(p.get("replicas") or []) for p in partitions]
    min_insync = configs.get("min.insync.replicas")
    return LegacySource(
        LegacyKind.KAFKA,
        topic,
        copies=min(sizes) if sizes else None,
        min_insync=int(min_insync) if min_insync is not None and min_insync.isdigit() else None,
        fsync_each=configs.get("flush.messages") == "1",
    )


@dataclass(frozen=True, slots=True)
class LegacyView:
    """What is known of the legacy side of one route: its queues or topics, or why it is unknown.
    No sources and no `unknown` means no legacy queue takes these messages (nothing promised)."""

    sources: tuple[LegacySource, ...] = ()
    unknown: str | None = None

    def describe(self) -> str:
        if self.unknown is not None:
            known = "; ".join(source.describe() for source in self.sources)
            return f"unknown: {self.unknown}" + (f" (known: {known})" if known else "")
        if not self.sources:
            return "no legacy queue takes these messages"
        return "; ".join(source.describe() for source in self.sources)

    def as_json(self) -> dict[str, Any]:
        return {"sources": [source.as_json() for source in self.sources], "unknown": self.unknown}


@dataclass(frozen=True, slots=True)
class SyncSetting:
    """A server's (or the weakest of several servers') `sync_interval`; `always` None when unknown."""

    always: bool | None
    interval: timedelta | None = None
    reason: str = NOT_REVEALED  # why it is unknown

    @property
    def known(self) -> bool:
        return self.always is not None

    def text(self) -> str:
        if self.always is None:
            return f"unknown ({self.reason})"
        if self.always:
            return "always"
        interval = self.interval or DEFAULT_SYNC_INTERVAL
        default = " (the default)" if interval == DEFAULT_SYNC_INTERVAL else ""
        return f"{format_duration(interval)}{default}"

    def as_json(self) -> dict[str, Any]:
        return {
            "known": self.known,
            "always": self.always,
            "interval_seconds": self.interval.total_seconds() if self.interval is not None else None,
            "text": self.text(),
        }


UNKNOWN_SYNC = SyncSetting(None)
SYNC_UNKNOWN_NOTE = (
    "sync_interval is not revealed to clients: by default a server flushes to disk every 2m and acknowledges "
    "before that, so a power failure or OS crash loses what was acknowledged since; for quorum-queue-grade "
    "durability run the servers with `sync_interval: always` (and list their monitoring endpoints in "
    "nats.monitor_urls to have it checked)"
)


def sync_from_varz(varz: Mapping[str, Any]) -> SyncSetting:
    """The sync setting /varz shows: `jetstream.config.sync_always`, `.sync_interval` (Go
    nanoseconds; absent means the default)."""
    jetstream = varz.get("jetstream")
    config = jetstream.get("config") if isinstance(jetstream, Mapping) else None
    if not isinstance(config, Mapping):
        return SyncSetting(None, reason="the server shows no JetStream configuration")
    if config.get("sync_always") is True:
        return SyncSetting(True)
    nanoseconds = config.get("sync_interval")
    if isinstance(nanoseconds, int) and not isinstance(nanoseconds, bool) and nanoseconds > 0:
        return SyncSetting(False, timedelta(microseconds=nanoseconds / 1000))
    return SyncSetting(False, DEFAULT_SYNC_INTERVAL)


def weakest(settings: Iterable[SyncSetting]) -> SyncSetting:
    """What a stream on these servers can count on: the longest interval; unknown if one is."""
    found = list(settings)
    if not found:
        return UNKNOWN_SYNC
    unknown = [setting for setting in found if not setting.known]
    if unknown:
        return unknown[0]
    intervals = [setting.interval or DEFAULT_SYNC_INTERVAL for setting in found if not setting.always]
    return SyncSetting(False, max(intervals)) if intervals else SyncSetting(True)


def stream_sync(peers: Sequence[str] | None, by_server: Mapping[str, SyncSetting], reason: str) -> SyncSetting:
    """The sync setting of a stream whose replicas live on `peers` (None: not known, e.g. a stream
    not created yet or a server without a cluster), from what each monitored server showed.
    `reason` says why it is unknown when no server was asked."""
    if not by_server:
        return SyncSetting(None, reason=reason)
    if peers is None:
        return weakest(by_server.values())
    missing = [peer for peer in peers if peer not in by_server]
    if missing:
        return SyncSetting(None, reason=f"server(s) {', '.join(missing)} not among nats.monitor_urls")
    return weakest(by_server[peer] for peer in peers)


@dataclass(frozen=True, slots=True)
class StreamPosture:
    """How a stream keeps what it acknowledges."""

    stream: str
    replicas: int
    storage: str  # "file" | "memory"
    sync: SyncSetting
    origin: str = "server"  # "server", or "file" for a stream `run` has yet to create

    def line(self) -> str:
        where = "" if self.origin == "server" else " (as the file declares it: not read from the server)"
        return f"replicas {self.replicas}, storage {self.storage}, sync_interval {self.sync.text()}{where}"

    def as_json(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "replicas": self.replicas,
            "storage": self.storage,
            "sync_interval": self.sync.as_json(),
            "origin": self.origin,
            "line": self.line(),
        }


@dataclass(frozen=True, slots=True)
class Advice:
    """One warning or note about a route landing on a stream: the legacy setting, the stream's
    setting, and the fix."""

    level: Level
    route: str
    stream: str
    legacy: str
    setting: str
    fix: str
    why: str

    def text(self) -> str:
        return f"{self.legacy} -> stream {self.stream} {self.setting}: {self.why}; fix: {self.fix}"

    def as_json(self) -> dict[str, str]:
        return {
            "level": self.level.value,
            "route": self.route,
            "stream": self.stream,
            "legacy": self.legacy,
            "setting": self.setting,
            "fix": self.fix,
            "message": self.text(),
        }


def _names(sources: Sequence[LegacySource], limit: int = 3) -> str:
    shown = "; ".join(source.describe() for source in sources[:limit])
    return shown + (f"; and {len(sources) - limit} more" if len(sources) > limit else "")


def assess(route: str, legacy: LegacyView, stream: StreamPosture) -> list[Advice]:
    """Where `stream` keeps less than the legacy side of `route` promised.

    Warnings: a durable (or unknown) legacy source on memory storage; a replicated one (quorum
    queue, RabbitMQ stream, Kafka replication factor >= 2, mirrored classic queue) on R1;
    a fsync-before-confirm one (quorum queue, Kafka flush.messages=1) on a server known to sync
    on an interval. Notes: the same last case with sync_interval unknown, and a classic durable
    queue (fsync, one node) on an interval: the stream is one disk as the queue was, but a power
    failure now loses what was acknowledged since the last flush.
    """
    advice: list[Advice] = []
    durable = [source for source in legacy.sources if source.durable]
    if stream.storage == "memory" and (durable or legacy.unknown is not None):
        what = _names(durable) if durable else f"legacy side unknown ({legacy.unknown})"
        advice.append(
            Advice(
                Level.WARNING,
                route,
                stream.stream,
                what,
                "storage memory",
                "`storage: file` (a new stream: JetStream cannot change storage in place)",
                "a memory stream loses every message when its server restarts",
            )
        )
        return advice  # sync and replicas do not matter for what a restart wipes
    replicated = [source for source in legacy.sources if source.replicated]
    if replicated and stream.replicas == 1:
        advice.append(
            Advice(
                Level.WARNING,
                route,
                stream.stream,
                _names(replicated),
                "replicas 1",
                "`replicas: 3` on a 3-node cluster, its servers in separate failure domains (placement tags)",
                "one copy: a lost server or disk loses acknowledged messages, which the legacy side keeps on "
                "several nodes",
            )
        )
    fsyncing = [source for source in legacy.sources if source.fsyncs and source.kind is not LegacyKind.CLASSIC]
    classic = [source for source in legacy.sources if source.fsyncs and source.kind is LegacyKind.CLASSIC]
    sync = stream.sync
    interval = format_duration(sync.interval or DEFAULT_SYNC_INTERVAL)
    fix_sync = "`sync_interval: always` in the jetstream block of every server holding the stream"
    if fsyncing and sync.known and not sync.always:
        advice.append(
            Advice(
                Level.WARNING,
                route,
                stream.stream,
                _names(fsyncing),
                f"on servers with sync_interval {sync.text()}",
                fix_sync,
                f"JetStream acknowledges before fsync: a power failure or OS crash (of every replica, for R3) "
                f"loses what was acknowledged in the last {interval}",
            )
        )
    elif fsyncing and not sync.known:
        advice.append(
            Advice(
                Level.NOTE,
                route,
                stream.stream,
                _names(fsyncing),
                f"sync_interval {sync.text()}",
                f"{fix_sync}; list the servers' monitoring endpoints in nats.monitor_urls to have it checked",
                "the default flushes to disk every 2m and acknowledges before that; a quorum queue confirms "
                "after fsync",
            )
        )
    if classic and not sync.always:
        advice.append(
            Advice(
                Level.NOTE,
                route,
                stream.stream,
                _names(classic),
                f"sync_interval {sync.text()}",
                fix_sync + " to keep confirm-after-fsync (its cost: MIGRATION.md)",
                "JetStream acknowledges before fsync, so an OS crash or power failure loses what was acknowledged "
                f"in the last {interval if sync.known else '2m (by default)'}",
            )
        )
    return advice


@dataclass(slots=True)
class DurabilityReport:
    """Every stream's posture, every route's legacy side, the advice, and what could not be read."""

    streams: dict[str, StreamPosture] = field(default_factory=dict)
    routes: dict[str, tuple[LegacyView, list[str]]] = field(default_factory=dict)  # route -> (legacy, streams)
    advice: list[Advice] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # a monitoring endpoint or API that did not answer

    @property
    def warnings(self) -> list[Advice]:
        return [item for item in self.advice if item.level is Level.WARNING]

    def for_routes(self, routes: Iterable[str]) -> DurabilityReport:
        """The part about these routes (status shows it per service)."""
        wanted = set(routes)
        kept = {route: value for route, value in self.routes.items() if route in wanted}
        names = {stream for _, streams in kept.values() for stream in streams}
        return DurabilityReport(
            {name: posture for name, posture in self.streams.items() if name in names},
            kept,
            [item for item in self.advice if item.route in wanted],
            list(self.problems),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "streams": [posture.as_json() for posture in self.streams.values()],
            "routes": [
                {"route": route, "streams": streams, "legacy": legacy.as_json(), "legacy_text": legacy.describe()}
                for route, (legacy, streams) in self.routes.items()
            ],
            "warnings": [item.as_json() for item in self.advice if item.level is Level.WARNING],
            "notes": [item.as_json() for item in self.advice if item.level is Level.NOTE],
            "problems": list(self.problems),
        }


def build_report(
    streams: Mapping[str, StreamPosture],
    routes: Mapping[str, tuple[LegacyView, Sequence[str]]],
    problems: Sequence[str] = (),
) -> DurabilityReport:
    """The report for routes landing on streams: postures of the streams they use, advice for each
    pair (a stream without a posture — neither on the server nor in the file — is skipped)."""
    report = DurabilityReport(problems=list(problems))
    for route, (legacy, names) in routes.items():
        known = [name for name in names if name in streams]
        report.routes[route] = (legacy, known)
        for name in known:
            report.streams.setdefault(name, streams[name])
            report.advice += assess(route, legacy, streams[name])
    return report
