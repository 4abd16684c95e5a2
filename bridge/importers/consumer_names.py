"""Durable consumer names for what an importer takes over from (a queue, a consumer group): both
importers name consumers the same way, so a queue and a group of one name read alike."""

from __future__ import annotations

import re

MAX_NAME = 240  # nats-server allows 255 bytes; room for a `-2` suffix


def consumer_name(legacy: str, taken: set[str]) -> str:
    """`legacy` as a durable name (no whitespace, '.', '*', '>', '/', '\\'), not in `taken` (the
    names already on its stream, which it joins)."""
    base = re.sub(r"[\s.*>/\\]+", "-", legacy).strip("-")[:MAX_NAME] or "consumer"
    candidate, count = base, 1
    while candidate in taken:
        count += 1
        candidate = f"{base}-{count}"
    taken.add(candidate)
    return candidate
