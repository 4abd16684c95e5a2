"""Durations as people write them in mapping files: `500ms`, `2m`, `7d`, `1h30m`.

JetStream and the brokers take durations in different units (nanoseconds, milliseconds,
seconds); the mapping file speaks one human form and the adapters convert at the edge.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
DURATION_PATTERN = r"^(0|(\d+(\.\d+)?(ms|s|m|h|d|w))+)$"
# JetStream keeps durations as Go int64 nanoseconds (about 292 years); nats-py sends seconds x 1e9.
# Every duration of the mapping file and the command line stays within that, so none can
# overflow on the way to the server (or in timedelta, whose own limit is 999,999,999 days).
MAX_DURATION = timedelta(microseconds=(2**63 - 1) // 1000)
_MS = timedelta(milliseconds=1)


def parse_duration(value: object) -> timedelta:
    """Parse `1h30m`-style text (or a number of seconds) into a timedelta.

    Bare numbers are accepted as seconds because YAML turns `0` and `30` into ints, and
    rejecting them would only punish people for a natural spelling.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration is text like '2m' or '7d', not true/false")
    if isinstance(value, int | float):
        if isinstance(value, float) and math.isnan(value):
            raise ValueError("a duration is a number of seconds or text like '2m', not NaN")
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return _bounded(value, str(value))
    if not isinstance(value, str):
        raise ValueError("a duration is text like '500ms', '2m', '7d' or '1h30m'")
    text = value.strip()
    if text == "0":
        return timedelta(0)
    position = 0
    total = 0.0
    for part in _PART.finditer(text):
        if part.start() != position:
            break
        total += float(part.group(1)) * _UNIT_SECONDS[part.group(2)]
        position = part.end()
    if position != len(text) or not text:
        raise ValueError(
            f"'{value}' is not a duration; write a number with a unit: ms, s, m, h, d or w (e.g. '2m', '7d')"
        )
    return _bounded(total, text)


def _bounded(seconds: float, text: str) -> timedelta:
    """`seconds` as a timedelta, or ValueError when JetStream could not hold it (nor timedelta)."""
    if not seconds <= MAX_DURATION.total_seconds():  # also inf
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise ValueError(
            f"'{shown}' is longer than the longest duration JetStream can hold, "
            f"{format_duration(MAX_DURATION // _MS * _MS)} (int64 nanoseconds, about 292 years)"
        )
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Render a timedelta back in the mapping file's own notation (largest units first)."""
    remaining_ms = round(value.total_seconds() * 1000)
    if remaining_ms == 0:
        return "0"
    parts: list[str] = []
    for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        unit_ms = seconds * 1000
        count, remaining_ms = divmod(remaining_ms, unit_ms)
        if count:
            parts.append(f"{count}{unit}")
    if remaining_ms:
        parts.append(f"{remaining_ms}ms")
    return "".join(parts)


def _serialize(value: timedelta, _info: Any) -> str:
    return format_duration(value)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(_serialize, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "examples": ["500ms", "2m", "7d", "1h30m"],
        }
    ),
]
