"""aiokafka's "Unable connect to" ERROR, logged for every connection attempt while a broker is
down (seven a second), is let through once a minute with a count of what was dropped; every other
line passes untouched."""

from __future__ import annotations

import logging

import pytest

from bridge.logs import RepeatedLineFilter


def _record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_repeats_are_dropped_within_the_interval_and_counted_on_the_next_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr("bridge.logs.time.monotonic", lambda: now[0])
    limit = RepeatedLineFilter("aiokafka", ("Unable connect to",), interval=60)
    line = ('Unable connect to "%s:%s": %s', "127.0.0.1", 9092, "[Errno 111] Connection refused")
    assert limit.filter(_record("aiokafka.client", *line))
    passed = [limit.filter(_record("aiokafka.client", *line)) for _ in range(7)]
    assert passed == [False] * 7
    other = _record("aiokafka.client", *line[:3], "[Errno 113] No route to host")
    assert limit.filter(other)  # another text is another line
    now[0] += 61
    again = _record("aiokafka.client", *line)
    assert limit.filter(again)
    assert again.getMessage() == (
        'Unable connect to "127.0.0.1:9092": [Errno 111] Connection refused (7 more like it in the last 60s)'
    )


def test_other_lines_and_other_loggers_pass_every_time() -> None:
    limit = RepeatedLineFilter("aiokafka", ("Unable connect to",))
    for _ in range(3):
        assert limit.filter(_record("aiokafka.consumer", "Heartbeat failed: %s", "timeout"))
        assert limit.filter(_record("bridge.sources.kafka", 'Unable connect to "%s"', "x"))
