"""Declaring the mapping file's streams in JetStream before anything is published.

A stream that does not exist is created. A stream that exists is left as it is — the
bridge never rewrites an operator's stream behind their back — but every field that
differs from the mapping file is logged, so the drift is visible (dry-run shows it as a
table). nats-py's `update_stream` would reset every field the file does not mention.
"""

from __future__ import annotations

import logging
from typing import Any

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from bridge.config.streams import StreamConfig
from bridge.errors import AtomicBatchesUnsupportedError

log = logging.getLogger(__name__)

_RETENTION = {
    "limits": js_api.RetentionPolicy.LIMITS,
    "interest": js_api.RetentionPolicy.INTEREST,
    "workqueue": js_api.RetentionPolicy.WORK_QUEUE,
}
_STORAGE = {"file": js_api.StorageType.FILE, "memory": js_api.StorageType.MEMORY}
_DISCARD = {"old": js_api.DiscardPolicy.OLD, "new": js_api.DiscardPolicy.NEW}


def to_nats_config(stream: StreamConfig, *, atomic: bool = False) -> js_api.StreamConfig:
    """The nats-py stream config for a mapping file's stream (durations in seconds);
    `atomic`: it takes atomic batch publishes (a route with `ordering: batched`)."""
    return js_api.StreamConfig(
        allow_atomic=True if atomic else None,
        name=stream.name,
        description=stream.description,
        subjects=list(stream.subjects),
        retention=_RETENTION[stream.retention.value],
        storage=_STORAGE[stream.storage.value],
        num_replicas=stream.replicas,
        max_msgs=stream.max_msgs if stream.max_msgs is not None else -1,
        max_bytes=int(stream.max_bytes) if stream.max_bytes is not None else -1,
        max_age=stream.max_age.total_seconds() if stream.max_age else 0,
        max_msg_size=int(stream.max_msg_size) if stream.max_msg_size is not None else -1,
        duplicate_window=stream.duplicate_window.total_seconds(),
        discard=_DISCARD[stream.discard.value],
    )


_COMPARED = (
    "subjects",
    "retention",
    "storage",
    "num_replicas",
    "max_msgs",
    "max_bytes",
    "max_age",
    "max_msg_size",
    "duplicate_window",
    "discard",
)


def config_drift(wanted: js_api.StreamConfig, actual: js_api.StreamConfig) -> dict[str, tuple[Any, Any]]:
    """Fields whose value in the server differs from the mapping file: {field: (file, server)}."""
    drift: dict[str, tuple[Any, Any]] = {}
    for field in _COMPARED:
        want, have = getattr(wanted, field), getattr(actual, field)
        if field == "subjects":
            want, have = sorted(want or []), sorted(have or [])
        if isinstance(want, float) or isinstance(have, float):
            same = abs(float(want or 0) - float(have or 0)) < 1e-6
        else:
            same = want == have
        if not same:
            drift[field] = (want, have)
    return drift


async def declare_streams(js: JetStreamContext, streams: list[StreamConfig], *, atomic: bool = False) -> None:
    """Create the streams that are missing; report drift on those that exist. `atomic`: every
    stream takes atomic batch publishes, and one that exists without is updated to (the only
    change made to an existing stream: without it a batched route could store nothing)."""
    for stream in streams:
        wanted = to_nats_config(stream, atomic=atomic)
        try:
            info = await js.stream_info(stream.name)
        except NotFoundError:
            created = await js.add_stream(wanted)
            log.info("created stream %s (%s)", stream.name, ", ".join(stream.subjects))
            if atomic:
                _require_atomic(created.config)
            continue
        if atomic and not info.config.allow_atomic:
            info.config.allow_atomic = True
            _require_atomic((await js.update_stream(info.config)).config)
            log.info("stream %s: atomic batch publishes allowed (a route has ordering: batched)", stream.name)
        drift = config_drift(wanted, info.config)
        for field, (want, have) in drift.items():
            log.warning(
                "stream %s exists with %s=%r; the mapping file says %r (left unchanged)", stream.name, field, have, want
            )


def _require_atomic(config: js_api.StreamConfig) -> None:
    """A server older than 2.12 drops the setting it does not know, and would store a batch's
    messages one by one: say so instead of pretending the order is kept."""
    if not config.allow_atomic:
        raise AtomicBatchesUnsupportedError(
            f"stream {config.name}: the NATS server does not keep allow_atomic (atomic batch publishes need "
            "nats-server 2.12 or later); give the routes `ordering: strict` or `pipelined`"
        )
