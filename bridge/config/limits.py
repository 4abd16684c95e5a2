"""Bounds on what the bridge reads from files: size, nesting, alias expansion, JSON values.

Every input the bridge parses — a mapping file, a RabbitMQ definitions export, a line of a
`dry-run --input` recording — may come from anywhere: a YAML file of nested aliases 600 bytes
long expands to gigabytes, JSON nested a few thousand levels deep exhausts Python's stack,
`/dev/zero` never ends. Each reader checks these bounds before (or while) it parses, so a
hostile or broken input is one clear error naming the file, line or key, within a second,
instead of a traceback, a hang or an out-of-memory kill.

The size limits are generous for real inputs and can be raised with one environment variable,
`NATS_BRIDGE_MAX_INPUT_BYTES` (bytes, or a size such as `256MiB`), which then applies to every
kind of input. Nesting and alias limits are fixed: no real mapping file or export comes near them.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from typing import IO, Any

from pydantic import ByteSize, TypeAdapter, ValidationError

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1  # JetStream's counts, bytes and nanosecond durations are Go int64

ENV_MAX_INPUT_BYTES = "NATS_BRIDGE_MAX_INPUT_BYTES"
MIB = 1024 * 1024
# Defaults per kind of input. YAML is parsed in pure Python (about 0.3 MB/s), JSON in C.
MAX_MAPPING_FILE_BYTES = 1 * MIB  # a 1,000-route file is about 200 KiB; adversarial YAML parses at ~70 KiB/s
MAX_DEFINITIONS_BYTES = 64 * MIB  # definitions of estates with ~100,000 queues
MAX_INPUT_LINE_BYTES = 8 * MIB  # one recorded message; at least 3 x --max-payload (base64 and headers)

MAX_YAML_DEPTH = 64  # mapping files nest about 8 levels, headers `arguments` a few more
MAX_JSON_DEPTH = 32  # exports nest about 4 levels, recorded AMQP header tables a few more
MAX_ALIAS_NODES = 100_000  # nodes that YAML aliases may add to what is written

_SURROGATE = re.compile("[\ud800-\udfff]")
_BYTE_SIZE: TypeAdapter[ByteSize] = TypeAdapter(ByteSize)


class InputLimitError(ValueError):
    """An input exceeds one of the bounds above; the text says which and how to raise it."""


def size_limit(default: int, env: Mapping[str, str] | None = None) -> int:
    """The size limit for one kind of input: `NATS_BRIDGE_MAX_INPUT_BYTES` when set, else `default`."""
    raw = (os.environ if env is None else env).get(ENV_MAX_INPUT_BYTES, "").strip()
    if not raw:
        return default
    try:
        value = int(_BYTE_SIZE.validate_python(raw))
    except ValidationError:
        raise InputLimitError(f"{ENV_MAX_INPUT_BYTES}={raw!r} is not a size (e.g. 67108864 or 64MiB)") from None
    if value < 1:
        raise InputLimitError(f"{ENV_MAX_INPUT_BYTES} must be at least 1 byte")
    return value


def too_large(what: str, limit: int) -> str:
    """The message for an input over its size limit, naming the way to raise it."""
    return f"{what} is larger than {limit} bytes, the limit; set {ENV_MAX_INPUT_BYTES} to raise it"


def read_bounded(stream: IO[bytes], limit: int, what: str) -> bytes:
    """At most `limit` bytes of `stream`, or InputLimitError: `/dev/zero` or a huge file ends quickly."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise InputLimitError(too_large(what, limit))
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads_json(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads`, bounded: ValueError (with a key path where there is one) for anything that is
    not plain JSON the bridge can handle — NaN/Infinity, numbers of more than 4,300 digits, nesting
    deeper than `max_depth`, lone surrogates (`"\\ud800"`, which no UTF-8 output can carry)."""
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        raise ValueError(f"not JSON the bridge reads: nested deeper than {max_depth} levels") from None
    except ValueError as error:  # NaN/Infinity, an integer beyond Python's digit limit
        raise ValueError(f"not JSON the bridge reads: {error}") from None
    problem = json_problem(document, max_depth)
    if problem is not None:
        raise ValueError(problem)
    return document


def json_problem(document: Any, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why parsed JSON is beyond the bridge's bounds (nesting, lone surrogates), or None.

    Iterative, so a deep document cannot exhaust the stack while it is checked.
    """
    stack: list[tuple[Any, str, int]] = [(document, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth >= max_depth:
                return f"{path or 'the document'}: nested deeper than {max_depth} levels"
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and _SURROGATE.search(key):
                    return f"{path or 'the document'}: a key holds a lone surrogate ({_escaped(key)}), not UTF-8 text"
                stack.append((item, _child(path, key), depth + 1))
        elif isinstance(value, str) and _SURROGATE.search(value):
            return f"{path or 'the document'}: a lone surrogate ({_escaped(value)}) is not UTF-8 text"
        elif isinstance(value, float) and not math.isfinite(value):
            return f"{path or 'the document'}: {value} is not a JSON number"
    return None


def _child(path: str, key: object) -> str:
    """`path.key` or `path[index]`, as the mapping-file errors write key paths."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def has_surrogate(text: str) -> bool:
    """True when `text` holds a lone surrogate (from a `\\ud800` escape): it cannot be written as UTF-8."""
    return _SURROGATE.search(text) is not None


def _escaped(text: str) -> str:
    return json.dumps(text[:40])
