"""aiokafka's "Unable connect to" ERROR, logged for every connection attempt while a broker is
down (seven a second), is let through once a minute with a count of what was dropped; every other
line passes untouched."""

from __future__ import annotations

import logging

import pytest
from aiokafka.errors import CoordinatorNotAvailableError, InvalidGroupIdError

from bridge.logs import RepeatedLineFilter, RetriedByTheClientFilter, configure_logging


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


def test_an_error_aiokafka_retries_by_itself_is_a_warning_and_others_stay_errors() -> None:
    """A brand-new Kafka has no group coordinator for a moment: aiokafka logs an ERROR and asks
    again. The bridge's log says WARNING for that; a fatal group error stays an ERROR."""
    retried = RetriedByTheClientFilter()
    waiting = _record("aiokafka.consumer.group_coordinator", "Group Coordinator Request failed: %s",
                      CoordinatorNotAvailableError())  # fmt: skip
    assert retried.filter(waiting)
    assert (waiting.levelno, waiting.levelname) == (logging.WARNING, "WARNING")
    fatal = _record("aiokafka.consumer.group_coordinator", "Attempt to join group failed: %s", InvalidGroupIdError())
    assert retried.filter(fatal)
    assert (fatal.levelno, fatal.levelname) == (logging.ERROR, "ERROR")
    ours = _record("bridge.sources", "failed: %s", CoordinatorNotAvailableError())
    assert retried.filter(ours)
    assert ours.levelno == logging.ERROR  # only aiokafka's own lines change
    plain = _record("aiokafka.client", "Unable connect to %s", "x")
    assert retried.filter(plain)
    assert plain.levelno == logging.ERROR


def test_configured_logging_writes_a_retried_coordinator_lookup_as_a_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("info")
        logging.getLogger("aiokafka.consumer.group_coordinator").error(
            "Group Coordinator Request failed: %s", CoordinatorNotAvailableError()
        )
    finally:
        root.handlers[:], root.level = handlers, level
    err = capsys.readouterr().err
    assert "WARNING" in err, err
    assert "Group Coordinator Request failed" in err, err
    assert "ERROR" not in err, err
