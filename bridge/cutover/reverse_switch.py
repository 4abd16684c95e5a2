"""A reverse route switched off (or on again) while the bridges run: no restart, no other route paused.

A reverse route runs while its service's phase is one of its `during` phases. An operator can
hold one off within that — when its last legacy consumer has moved to JetStream, or while
`handoff` reads where a legacy consumer stopped — with `nats-bridge reverse SERVICE ROUTE FILE
--to off`. The switch is a record under `reverse.<service>.<route>` in the phase bucket, beside
the service's phase, so every bridge instance follows it within its phase poll, and the bridge's
NATS user needs no write permission for it (deploy/nats-permissions.conf).

Switched off, the route's durable consumer stays: switched on again, it resumes exactly where it
stopped acknowledging. `--to removed` is off for good: the durable (`nats-bridge-reverse-...`)
is deleted, so what it still had pending is never written to the legacy broker.

The record is input like any other: one that does not parse is ignored (the bridges keep what
they followed before and log it), never taken as "off" or "on".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from bridge.cutover.phases import MAX_RECORD_BYTES, Name, StrictDocument, Timestamp, now_text, parse_document
from bridge.cutover.state import Rejection
from bridge.cutover.store import BUCKET, PhaseStore
from bridge.errors import InvalidRecordError

SWITCH = "reverse switch"  # the rejection kind of an ignored switch record


class Switch(StrEnum):
    ON = "on"  # runs during its `during` phases (the default: no record)
    OFF = "off"  # held off; its durable kept
    REMOVED = "removed"  # held off; its durable deleted


class SwitchDocument(StrictDocument):
    """A switch record as stored under `reverse.<service>.<route>`."""

    switch: Annotated[Switch, Field(strict=False)]
    changed_by: Name
    changed_at: Timestamp
    reason: Annotated[str, StringConstraints(max_length=4096)] = ""


@dataclass(frozen=True, slots=True)
class SwitchRecord:
    """The switch of one reverse route, who set it when and why."""

    switch: Switch = Switch.ON
    changed_by: str = ""
    changed_at: str = ""
    reason: str = ""
    revision: int = 0  # of the key; 0: never written

    @property
    def running(self) -> bool:
        return self.switch is Switch.ON

    def to_json(self) -> bytes:
        document = {
            "switch": self.switch.value,
            "changed_by": self.changed_by,
            "changed_at": self.changed_at,
            "reason": self.reason,
        }
        return json.dumps(document, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | None, revision: int) -> SwitchRecord:
        document = parse_document(data, SwitchDocument, MAX_RECORD_BYTES)
        assert isinstance(document, SwitchDocument)
        return cls(document.switch, document.changed_by, document.changed_at, document.reason, revision)

    def as_json(self) -> dict[str, object]:
        return {
            "switch": self.switch.value,
            "changed_by": self.changed_by,
            "changed_at": self.changed_at,
            "reason": self.reason,
        }


def switch_key(service: str, route: str) -> str:
    """Service and route names are [A-Za-z0-9_-] (the mapping file's rule): valid KV key tokens."""
    return f"reverse.{service}.{route}"


async def read_switch(store: PhaseStore, service: str, route: str) -> tuple[SwitchRecord | None, Rejection | None]:
    """The route's switch: (record, None); (None, None) when never written or deleted (on);
    (None, rejection) when the latest revision is not a valid switch record."""
    key = switch_key(service, route)
    entry = await store.latest(key)
    if entry is None or entry.removed:
        return None, None
    try:
        return SwitchRecord.from_json(entry.value, entry.revision), None
    except InvalidRecordError as error:
        return None, Rejection(f"{BUCKET}/{key}", entry.revision, SWITCH, str(error))


async def write_switch(
    store: PhaseStore, service: str, route: str, switch: Switch, *, by: str, reason: str
) -> SwitchRecord:
    """Set the route's switch, over whatever the key held (a compare-and-set on its revision)."""
    entry = await store.latest(switch_key(service, route))
    record = SwitchRecord(switch, by, now_text(), reason)
    SwitchRecord.from_json(record.to_json(), 0)  # what the bridges will read back: refuse it here if invalid
    revision = await store.put_key(switch_key(service, route), record.to_json(), entry.revision if entry else 0)
    return SwitchRecord(switch, by, record.changed_at, reason, revision)


class SwitchFollower:
    """What a running bridge follows of the switches: the last valid record of each route's key.

    A revision that does not parse is logged once (an ERROR naming key and revision) and
    counted, and the route keeps doing what it did: garbage in the bucket neither stops a route
    that feeds legacy consumers nor starts one an operator switched off.
    """

    def __init__(self, store: PhaseStore, rejected: Callable[[str, Rejection], None]) -> None:
        self._store = store
        self._rejected = rejected
        self._known: dict[tuple[str, str], SwitchRecord] = {}
        self._logged: dict[tuple[str, str], int] = {}

    async def running(self, service: str, route: str) -> bool:
        """Whether the route may run (its phase allowing): read afresh, the last valid record kept."""
        record, rejection = await read_switch(self._store, service, route)
        if rejection is not None:
            if self._logged.get((service, route)) != rejection.revision:
                self._logged[(service, route)] = rejection.revision
                self._rejected(service, rejection)
            record = self._known.get((service, route))
        else:
            self._known[(service, route)] = record if record is not None else SwitchRecord()
        return record is None or record.running
