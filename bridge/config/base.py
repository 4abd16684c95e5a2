"""What every mapping-file model shares: strictness, plain names, and byte sizes JetStream can hold."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
)

from bridge.config.limits import INT32_MAX, INT64_MAX

# Names that become parts of queue names, consumer groups and subjects: keep them plain.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
HEADER_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")

# Validation context flag: the loader locates cross-section problems itself, line by line.
LOCATE_REFERENCES_LATER = "locate_references_later"


class Strict(BaseModel):
    """Base for every mapping-file model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def not_a_bool(value: Any) -> Any:
    """YAML's `true` is no number: left to pydantic, `max_msgs: true` would be a one-message stream."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    return value


def _int64_bytes(value: ByteSize) -> ByteSize:
    if value > INT64_MAX:
        raise ValueError(f"{int(value)} bytes is more than JetStream can count (int64: at most {INT64_MAX})")
    return value


def _int32_bytes(value: ByteSize) -> ByteSize:
    if value > INT32_MAX:
        raise ValueError(f"{int(value)} bytes is more than a JetStream message can have (int32: at most {INT32_MAX})")
    return value


# Byte sizes as JetStream holds them: max_bytes an int64, max_msg_size an int32 (nats-server's
# StreamConfig); validated here so that `validate` refuses what the server would refuse at start.
StreamBytes = Annotated[ByteSize, BeforeValidator(not_a_bool), AfterValidator(_int64_bytes)]
MessageBytes = Annotated[ByteSize, BeforeValidator(not_a_bool), AfterValidator(_int32_bytes)]
