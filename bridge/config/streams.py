"""The `streams:` section: the JetStream streams a mapping file declares."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from bridge.config.base import MessageBytes, StreamBytes, Strict
from bridge.config.durations import Duration
from bridge.config.limits import INT64_MAX
from bridge.routing import (
    is_valid_subject_filter,
)


class Retention(StrEnum):
    """JetStream retention policies, named as in the NATS docs."""

    LIMITS = "limits"
    INTEREST = "interest"
    WORKQUEUE = "workqueue"


class Storage(StrEnum):
    FILE = "file"
    MEMORY = "memory"


class Discard(StrEnum):
    OLD = "old"
    NEW = "new"


class StreamConfig(Strict):
    """A JetStream stream the bridge declares (or checks) before publishing into it."""

    name: str = Field(
        pattern=r"^[^\s.*>/\\]+$",
        description="Stream name; no whitespace, '.', '*', '>', '/' or '\\\\' (NATS rules).",
        examples=["ORDERS"],
    )
    subjects: list[str] = Field(
        min_length=1, description="Subject filters the stream captures; '*' and a final '>' allowed."
    )
    description: str | None = Field(None, description="Free text shown in `nats stream info`.")
    retention: Retention = Field(Retention.LIMITS, description="limits | interest | workqueue.")
    storage: Storage = Field(Storage.FILE, description="file (durable) | memory (fast, lost on restart).")
    replicas: int = Field(1, ge=1, le=5, strict=True, description="Copies kept in a cluster (1, 3 or 5 in practice).")
    max_msgs: int | None = Field(
        None, ge=1, le=INT64_MAX, strict=True, description="Most messages kept; absent means unlimited."
    )
    max_bytes: StreamBytes | None = Field(
        None,
        description="Most bytes kept, e.g. `10GiB`; absent means unlimited.",
        json_schema_extra={"type": ["string", "integer"], "examples": ["10GiB", 1073741824]},
    )
    max_age: Duration | None = Field(None, description="Oldest message kept, e.g. `7d`; absent means forever.")
    max_msg_size: MessageBytes | None = Field(
        None,
        description="Largest message accepted; absent means the server's max_payload.",
        json_schema_extra={"type": ["string", "integer"]},
    )
    duplicate_window: Duration = Field(
        timedelta(minutes=2),
        description=(
            "How long JetStream remembers a Nats-Msg-Id to drop redelivered duplicates. Each id "
            "costs server memory (~170 B), so size it as rate x window; must not exceed max_age."
        ),
    )
    discard: Discard = Field(Discard.OLD, description="At a limit: `old` drops the oldest, `new` refuses new messages.")

    @field_validator("subjects")
    @classmethod
    def _subjects_are_filters(cls, subjects: list[str]) -> list[str]:
        for subject in subjects:
            if not is_valid_subject_filter(subject):
                raise ValueError(
                    f"'{subject}' is not a valid NATS subject filter (tokens separated by '.', "
                    "no spaces, '*' for one token, '>' only at the end)"
                )
        return subjects

    @model_validator(mode="after")
    def _window_within_age(self) -> StreamConfig:
        if self.max_age and self.duplicate_window > self.max_age:
            raise ValueError("duplicate_window cannot be longer than max_age (JetStream refuses it)")
        return self
