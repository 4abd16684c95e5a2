"""Which declared stream captures a subject — the question behind every publish.

JetStream stores a message only if exactly one stream's subjects capture its subject;
`explain`, `validate` and dry-runs answer it offline with NATS's own wildcard rules
(`*` is one token, `>` one or more tokens at the end).
"""

from __future__ import annotations

from collections.abc import Iterable

from bridge.config.streams import StreamConfig


def subject_matches_filter(subject_filter: str, subject: str) -> bool:
    """True when the literal `subject` falls under `subject_filter` by NATS rules."""
    filter_tokens = subject_filter.split(".")
    subject_tokens = subject.split(".")
    for index, token in enumerate(filter_tokens):
        if token == ">":
            return len(subject_tokens) > index
        if index >= len(subject_tokens):
            return False
        if token not in ("*", subject_tokens[index]):
            return False
    return len(filter_tokens) == len(subject_tokens)


def streams_capturing(subject: str, streams: Iterable[StreamConfig]) -> list[StreamConfig]:
    """The declared streams whose subject filters capture `subject` (normally one)."""
    return [
        stream
        for stream in streams
        if any(subject_matches_filter(subject_filter, subject) for subject_filter in stream.subjects)
    ]
