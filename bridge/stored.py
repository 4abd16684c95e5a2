"""What is known to be stored: a lane's checkpoint, and the index of stored positions.

Value types shared by the pipeline (which settles by them) and the JetStream checkpoints (which
write and read them), kept below both so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bridge.sources.base import Lane


@dataclass(slots=True)
class StoredIndex:
    """Positions per lane already known to be stored, so a restart does not store them twice.

    `through` covers everything at or below a checkpointed position; `positions` holds
    stored positions found after it (a scan of the stream's tail); `scan_from` is where the
    next scan for the lane must start, per stream, until this run checkpoints it anew.
    """

    through: dict[Lane, int] = field(default_factory=dict)
    positions: dict[Lane, set[int]] = field(default_factory=dict)
    scan_from: dict[Lane, dict[str, int]] = field(default_factory=dict)
    ends: dict[Lane, dict[str, int]] = field(default_factory=dict)  # per stream, its last sequence scanned

    def contains(self, lane: Lane, position: int) -> bool:
        through = self.through.get(lane)
        if through is not None and position <= through:
            return True
        found = self.positions.get(lane)
        return found is not None and position in found

    def update(self, other: StoredIndex) -> None:
        self.through.update(other.through)
        self.positions.update(other.positions)
        self.scan_from.update(other.scan_from)
        self.ends.update(other.ends)

    def forget(self, lane: Lane) -> None:
        self.through.pop(lane, None)
        self.positions.pop(lane, None)
        self.scan_from.pop(lane, None)
        self.ends.pop(lane, None)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A lane's watermark, and per stream the sequence a scan for later messages starts at.

    A position of -1 marks a lane that has nothing settled yet; its `scan_from` still says
    where any message of it stored before the first real checkpoint must be.
    """

    position: int
    scan_from: Mapping[str, int]
