"""Advice per route, where the stream keeps less than the legacy side promised, and the report (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.brokers.legacy import LegacyKind, LegacySource, LegacyView
from bridge.config.durations import format_duration
from bridge.durability.legacy import DEFAULT_SYNC_INTERVAL, Level
from bridge.durability.sync import StreamPosture


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
