"""What a JetStream stream keeps of an acknowledged message: replicas, storage, sync interval (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bridge.config.durations import format_duration
from bridge.durability.legacy import DEFAULT_SYNC_INTERVAL, NOT_REVEALED


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
