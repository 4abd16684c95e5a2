"""`nats-bridge streams plan|apply`: make the server's streams match the mapping file, visibly.

`run` only creates missing streams and logs drift (bridge.jetstream.declare): it never
rewrites an operator's stream behind their back. These commands are the deliberate way to
change one. `plan` shows, per stream the file names, one of:

    create      the stream does not exist; apply creates it exactly as the file says
    update      it exists and differs in fields JetStream can change in place; each listed
                as field, server value, file value
    unchanged   it matches
    refused     it differs in a way JetStream cannot change in place (storage type, ...);
                apply will not touch it, and the reason says why

Streams on the server that the file does not name are never touched, never deleted, and
not even listed. Apply never deletes anything.

What "the file's settings" are: the fields a mapping-file stream has — subjects, retention,
storage, replicas, max_msgs, max_bytes, max_age, max_msg_size, duplicate_window, discard —
with an absent limit meaning unlimited, as the schema documents (the same comparison
`config_drift` makes when `run` warns about drift). `description` is compared only when the
file gives one. Everything else on the server (allow_direct, compression,
max_msgs_per_subject, metadata, sources, placement, ...) is the operator's, and is kept.

Why an update starts from the server's config: nats-py's `update_stream` sends a whole
config, and JetStream resets every field left out to its default. So the update sent is the
server's current config (`stream_info().config`) with only the differing fields replaced;
nothing is ever sent partially.

The planner (`plan_streams`) is pure: the wanted streams and the server's configs in, a
`Plan` out. bridge.jetstream.apply reads the server and applies a plan: the only I/O.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum, StrEnum
from typing import Any

from nats.js import api as js_api

from bridge.config.durations import format_duration
from bridge.config.streams import StreamConfig
from bridge.jetstream.declare import config_drift, to_nats_config


class Action(StrEnum):
    """What apply does to one stream of the file."""

    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field that differs: its value on the server and in the file (JSON-ready, durations in seconds)."""

    field: str  # as the mapping file spells it (`replicas`, not `num_replicas`)
    server: object
    file: object


@dataclass(frozen=True, slots=True)
class Refusal:
    """A change JetStream cannot make in place, and why (in words a person can act on)."""

    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """The plan for one stream of the file.

    `target` is the complete config apply sends (add_stream for create, update_stream for
    update); None when there is nothing to send (unchanged) or nothing may be sent (refused).
    For create, `changes` lists the file's settings with `server` None.
    """

    name: str
    action: Action
    changes: tuple[FieldChange, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    target: js_api.StreamConfig | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "stream": self.name,
            "action": self.action.value,
            "changes": [{"field": c.field, "server": c.server, "file": c.file} for c in self.changes],
            "refusals": [{"field": r.field, "reason": r.reason} for r in self.refusals],
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """Every stream the file names, in file order (the dead-letter stream last, when used)."""

    streams: tuple[StreamPlan, ...]

    @property
    def refused(self) -> bool:
        return any(s.action is Action.REFUSED for s in self.streams)

    @property
    def pending(self) -> bool:
        """True when apply would create or update something."""
        return any(s.action in (Action.CREATE, Action.UPDATE) for s in self.streams)

    def count(self, action: Action) -> int:
        return sum(1 for s in self.streams if s.action is action)

    def as_json(self) -> dict[str, object]:
        return {
            "streams": [s.as_json() for s in self.streams],
            "summary": {action.value: self.count(action) for action in Action},
        }


# --------------------------------------------------------------------------- the planner (pure)

# nats-py field -> the mapping file's name for it, in the order plans list them.
_FILE_NAMES = {
    "subjects": "subjects",
    "description": "description",
    "retention": "retention",
    "storage": "storage",
    "num_replicas": "replicas",
    "max_msgs": "max_msgs",
    "max_bytes": "max_bytes",
    "max_age": "max_age",
    "max_msg_size": "max_msg_size",
    "duplicate_window": "duplicate_window",
    "discard": "discard",
}

# What JetStream refuses to change in place. Source: nats-server, server/stream.go,
# `(*jsAccount).configUpdateCheck` (nats-io/nats-server @ df8835d2d0d9, and the same checks in
# 2.14/2.15): "stream configuration update can not change storage type"; "... can not change
# retention policy to/from workqueue" (limits <-> interest is allowed); "... can not unseal a
# sealed stream" and the values sealing forces (max_age 0, discard new); a mirror's config "can
# not be updated" (10055) and a mirror "can not contain subjects" (10034, checkStreamCfg);
# "discard new per subject requires discard new policy to be set". Subjects overlapping another
# stream are refused on create and update alike (10065, `subjectsOverlap`). Checked against
# nats-server 2.15.1 (err_code 10052 for storage and workqueue, 10065 for overlap). Replicas > 1
# on a server without clustering is refused too (10074), but a config cannot tell: apply reports
# the server's answer.
_WORKQUEUE = js_api.RetentionPolicy.WORK_QUEUE.value


def plan_streams(wanted: Sequence[StreamConfig], server: Mapping[str, js_api.StreamConfig | None]) -> Plan:
    """The plan that makes `server` match `wanted`.

    `server` maps stream names to the server's configs (None or absent: no such stream). Pass
    every stream the server has, not only the file's: the others are never touched, but their
    subjects decide whether a created or changed stream would overlap one of them.
    """
    existing = {name: config for name, config in server.items() if config is not None}
    wanted_names = {stream.name for stream in wanted}
    # Subjects each other stream holds once apply is done: the file's for its own streams,
    # the server's for the rest.
    claims: dict[str, list[str]] = {
        name: list(config.subjects or []) for name, config in existing.items() if name not in wanted_names
    }
    claims.update({stream.name: list(stream.subjects) for stream in wanted})
    return Plan(tuple(_plan_one(stream, existing.get(stream.name), claims) for stream in wanted))


def _plan_one(stream: StreamConfig, actual: js_api.StreamConfig | None, claims: Mapping[str, list[str]]) -> StreamPlan:
    wanted = to_nats_config(stream)
    if actual is None:
        changes = tuple(
            FieldChange(_FILE_NAMES[field], None, _plain(getattr(wanted, field)))
            for field in _FILE_NAMES
            if getattr(wanted, field) is not None
        )
        overlaps = _overlaps(stream.name, stream.subjects, claims)
        if overlaps:
            return StreamPlan(stream.name, Action.REFUSED, changes, overlaps)
        return StreamPlan(stream.name, Action.CREATE, changes, target=wanted)

    # config_drift compares subjects sorted; the values taken here are the file's as written.
    differing: dict[str, Any] = {field: getattr(wanted, field) for field in config_drift(wanted, actual)}
    if stream.description is not None and stream.description != (actual.description or None):
        differing["description"] = stream.description
    if not differing:
        return StreamPlan(stream.name, Action.UNCHANGED)

    changes = tuple(
        FieldChange(_FILE_NAMES[field], _plain(getattr(actual, field)), _plain(differing[field]))
        for field in _FILE_NAMES
        if field in differing
    )
    refusals = _refusals(wanted, actual, differing)
    if "subjects" in differing:
        refusals += _overlaps(stream.name, stream.subjects, claims)
    if refusals:
        return StreamPlan(stream.name, Action.REFUSED, changes, refusals)
    # The server's whole config, with only the differing fields replaced (see the module docstring).
    target = dataclasses.replace(copy.deepcopy(actual), **differing)
    return StreamPlan(stream.name, Action.UPDATE, changes, target=target)


def _refusals(
    wanted: js_api.StreamConfig, actual: js_api.StreamConfig, differing: Mapping[str, object]
) -> tuple[Refusal, ...]:
    """The differences JetStream would refuse (see the sources above `_WORKQUEUE`)."""
    refusals: list[Refusal] = []
    if actual.mirror is not None:
        refusals.append(
            Refusal(
                "subjects",
                f"the stream on the server is a mirror of '{actual.mirror.name}': JetStream does not let a mirror "
                "have subjects or change what it mirrors; nats-bridge will not rewrite it",
            )
        )
    if actual.sealed:
        refusals.append(
            Refusal(
                "sealed",
                "the stream on the server is sealed: a seal cannot be undone and JetStream would force "
                "max_age 0 and discard new on any update; nats-bridge will not change it",
            )
        )
    if "storage" in differing:
        refusals.append(
            Refusal(
                "storage",
                f"JetStream cannot change a stream's storage type in place ({_plain(actual.storage)} -> "
                f"{_plain(wanted.storage)}); write `storage: {_plain(actual.storage)}` in the mapping file, or create "
                "a new stream and move the messages",
            )
        )
    if "retention" in differing and _WORKQUEUE in (_plain(actual.retention), _plain(wanted.retention)):
        refusals.append(
            Refusal(
                "retention",
                f"JetStream can switch retention between limits and interest in place, but never to or from "
                f"workqueue ({_plain(actual.retention)} -> {_plain(wanted.retention)})",
            )
        )
    if actual.discard_new_per_subject and _plain(wanted.discard) != js_api.DiscardPolicy.NEW.value:
        refusals.append(
            Refusal(
                "discard",
                "the stream on the server has discard_new_per_subject, which JetStream allows only with discard: new",
            )
        )
    return tuple(refusals)


def _overlaps(name: str, subjects: Iterable[str], claims: Mapping[str, list[str]]) -> tuple[Refusal, ...]:
    """Refusals for subjects that would overlap another stream's (JetStream refuses both)."""
    refusals = []
    for other, held in sorted(claims.items()):
        if other == name:
            continue
        for mine in subjects:
            clash = next((theirs for theirs in held if subjects_collide(mine, theirs)), None)
            if clash is not None:
                refusals.append(
                    Refusal(
                        "subjects",
                        f"'{mine}' overlaps '{clash}' of stream '{other}': JetStream lets no two streams "
                        "capture the same subject",
                    )
                )
    return tuple(refusals)


def subjects_collide(first: str, second: str) -> bool:
    """True when some subject matches both filters (`*` one token, `>` one or more at the end)."""
    a, b = first.split("."), second.split(".")
    for left, right in zip(a, b, strict=False):
        if ">" in (left, right):
            return True
        if left != right and "*" not in (left, right):
            return False
    return len(a) == len(b)


def _plain(value: object) -> object:
    """A config value as JSON has it (enums as their strings; durations stay seconds)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list):
        return list(value)
    return value


# --------------------------------------------------------------------------- output

_DURATIONS = {"max_age", "duplicate_window"}
_LIMITS = {"max_msgs", "max_bytes", "max_msg_size"}
_BYTES = {"max_bytes", "max_msg_size"}
_REASONS = {
    Action.CREATE: "missing on the server",
    Action.UPDATE: "JetStream can change these in place",
    Action.UNCHANGED: "matches the file",
}


def show_value(field: str, value: object) -> str:
    """A value as the mapping file would write it: `7d`, `1GiB`, `unlimited`."""
    if value is None:
        return "-"
    if field in _DURATIONS and isinstance(value, int | float):
        if value == 0:
            return "forever" if field == "max_age" else "0"
        return format_duration(timedelta(seconds=value))
    if field in _LIMITS and isinstance(value, int) and value < 0:
        return "unlimited"
    if field in _BYTES and isinstance(value, int):
        for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if value >= size and value % size == 0:
                return f"{value // size}{unit}"
        return str(value)
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


def format_plan(plan: Plan) -> str:
    """The plan as a table for people, with a summary line."""
    lines = [f"{'stream':<24} {'action':<10} {'field':<17} {'server':<18} file"]
    for stream in plan.streams:
        head = f"{stream.name:<24} {stream.action.value:<10} "
        if stream.action is Action.UNCHANGED or not stream.changes:
            lines.append(head + _REASONS.get(stream.action, ""))
        for index, change in enumerate(stream.changes):
            prefix = head if index == 0 else " " * len(head)
            server = show_value(change.field, change.server)
            lines.append(f"{prefix}{change.field:<17} {server:<18} {show_value(change.field, change.file)}")
        for refusal in stream.refusals:
            lines.append(f"{'':<36}refused: {refusal.field}: {refusal.reason}")
    summary = ", ".join(f"{plan.count(action)} to {action.value}" for action in (Action.CREATE, Action.UPDATE))
    lines.append("")
    lines.append(
        f"{summary}, {plan.count(Action.UNCHANGED)} unchanged, {plan.count(Action.REFUSED)} refused. "
        "Streams the file does not name are left alone; nothing is ever deleted."
    )
    return "\n".join(lines) + "\n"
