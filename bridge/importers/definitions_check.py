"""Whether a document is a definitions export the importer can read: one `key.path: problem` line
per problem (bounded), before anything is mapped, so a hostile or mangled export is refused with
reasons rather than a traceback."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from bridge.config.durations import MAX_DURATION
from bridge.config.limits import INT64_MAX

# What each section's items must look like: required text, optional text, optional booleans.
_REQUIRED_TEXT = {"exchanges": ("name",), "queues": ("name",), "bindings": ("destination",)}


_OPTIONAL_TEXT = {
    "exchanges": ("vhost", "type"),
    "queues": ("vhost",),
    "bindings": ("vhost", "source", "destination_type", "routing_key"),
}


_FLAGS = {
    "exchanges": ("internal", "durable", "auto_delete"),
    "queues": ("durable", "auto_delete", "exclusive"),
    "bindings": (),
}


# Queue arguments that become stream limits: whole numbers, and in range once converted.
_LIMIT_ARGUMENTS = {
    "x-message-ttl": MAX_DURATION // timedelta(milliseconds=1),  # ms -> max_age (int64 ns)
    "x-max-length": INT64_MAX,
    "x-max-length-bytes": INT64_MAX,
}


_MAX_PROBLEMS = 20


def check_definitions(definitions: Any) -> list[str]:
    """Why `definitions` is not an export the importer can read, one `key.path: problem` each
    (at most 20); empty when it is. Only what the importer reads is checked."""
    if not isinstance(definitions, Mapping):
        return ["the document must be a JSON object (a definitions export)"]
    problems: list[str] = []
    for section in ("exchanges", "queues", "bindings"):
        if section not in definitions:
            continue
        items = definitions[section]
        if not isinstance(items, list):
            problems.append(f"{section}: must be a list of objects, not {_json_kind(items)}")
            continue
        for index, item in enumerate(items):
            problems.extend(_check_item(section, f"{section}[{index}]", item))
            if len(problems) >= _MAX_PROBLEMS:
                return problems[:_MAX_PROBLEMS]
    for section in ("policies", "operator_policies"):
        items = definitions.get(section)
        if items is None:
            continue
        if not isinstance(items, list):
            problems.append(f"{section}: must be a list of objects, not {_json_kind(items)}")
            continue
        for index, item in enumerate(items):
            problems.extend(_check_policy(f"{section}[{index}]", item))
            if len(problems) >= _MAX_PROBLEMS:
                return problems[:_MAX_PROBLEMS]
    return problems


def _check_policy(where: str, item: Any) -> list[str]:
    if not isinstance(item, Mapping):
        return [f"{where}: must be an object, not {_json_kind(item)}"]
    problems = [f"{where}.{key}: missing (text)" for key in ("pattern",) if key not in item]
    for key in ("name", "vhost", "pattern", "apply-to"):
        if key in item and not isinstance(item[key], str):
            problems.append(f"{where}.{key}: must be text, not {_json_kind(item[key])}")
    priority = item.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        problems.append(f"{where}.priority: must be a whole number, not {_json_kind(priority)}")
    definition = item.get("definition")
    if not isinstance(definition, Mapping):
        problems.append(f"{where}.definition: must be an object, not {_json_kind(definition)}")
    else:
        limits = {f"x-{key}": value for key, value in definition.items() if f"x-{key}" in _LIMIT_ARGUMENTS}
        problems.extend(_check_limits(f"{where}.definition", limits))
    return problems


def _check_item(section: str, where: str, item: Any) -> list[str]:
    if not isinstance(item, Mapping):
        return [f"{where}: must be an object, not {_json_kind(item)}"]
    problems = [f"{where}.{key}: missing (text)" for key in _REQUIRED_TEXT[section] if key not in item]
    for key in (*_REQUIRED_TEXT[section], *_OPTIONAL_TEXT[section]):
        if key in item and not isinstance(item[key], str):
            problems.append(f"{where}.{key}: must be text, not {_json_kind(item[key])}")
    for key in _FLAGS[section]:
        if item.get(key) is not None and not isinstance(item[key], bool):
            problems.append(f"{where}.{key}: must be true or false, not {_json_kind(item[key])}")
    kind = item.get("destination_type", "queue")
    if section == "bindings" and isinstance(kind, str) and kind not in ("queue", "exchange"):
        problems.append(f"{where}.destination_type: must be 'queue' or 'exchange'")
    arguments = item.get("arguments")
    if arguments is not None and not isinstance(arguments, Mapping):
        problems.append(f"{where}.arguments: must be an object, not {_json_kind(arguments)}")
    elif section == "queues" and arguments:
        problems.extend(_check_limits(f"{where}.arguments", arguments))
    return problems


def _check_limits(where: str, arguments: Mapping[str, Any]) -> list[str]:
    problems = []
    for name, largest in _LIMIT_ARGUMENTS.items():
        value = arguments.get(name)
        if value is None:
            continue
        whole = isinstance(value, int) and not isinstance(value, bool)
        if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 20:
            whole, value = True, int(value)
        if not whole:
            problems.append(f"{where}.{name}: must be a whole number, not {_json_kind(value)}")
        elif not 0 <= value <= largest:
            problems.append(f"{where}.{name}: {value} is out of range (0 to {largest})")
    age = arguments.get("x-max-age")
    if age is not None:
        match = re.fullmatch(r"(\d{1,20})([YMDhms])", str(age))
        if match is not None and parse_age(str(age)) is None:
            problems.append(f"{where}.x-max-age: {age} is longer than JetStream can keep messages (about 292 years)")
    return problems


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}" if len(str(value)) <= 30 else "a number"
    if isinstance(value, str):
        return "text"
    return "a list" if isinstance(value, list) else "an object"


def parse_age(text: Any) -> timedelta | None:
    """A stream queue's `x-max-age` (`7D`, `12h`, `30m`, `1Y`, `10s`) as a timedelta."""
    match = re.fullmatch(r"(\d{1,20})([YMDhms])", str(text))
    if match is None:
        return None
    seconds = {"Y": 365 * 86400, "M": 30 * 86400, "D": 86400, "h": 3600, "m": 60, "s": 1}[match.group(2)]
    total = int(match.group(1)) * seconds
    if total > MAX_DURATION.total_seconds():  # beyond JetStream's int64 nanoseconds (and timedelta)
        return None
    return timedelta(seconds=total)
