"""What a legacy queue or topic promises about an acknowledged message, as its broker describes
it (pure): the brokers read it (brokers/rabbitmq/legacy.py, brokers/kafka/legacy.py), the
durability posture (bridge.durability) weighs it against what a stream keeps."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class LegacyKind(StrEnum):
    CLASSIC = "classic queue"
    QUORUM = "quorum queue"
    STREAM = "RabbitMQ stream"
    KAFKA = "Kafka topic"


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
