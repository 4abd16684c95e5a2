"""The words the durability posture shares (pure): how much an advice matters, and what is
assumed of a server that does not reveal its sync interval. What a legacy queue or topic
promised is the brokers' description of it: bridge.brokers.legacy."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

DEFAULT_SYNC_INTERVAL = timedelta(minutes=2)  # nats-server's default flush to disk (filestore)
NOT_REVEALED = "not revealed to clients"


class Level(StrEnum):
    WARNING = "warning"  # the stream keeps less than the legacy side promised
    NOTE = "note"  # worth knowing; changes no exit code
