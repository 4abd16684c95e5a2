"""StreamStall: only RabbitMQ's own repeated INTERNAL_ERROR at one resume point counts as a stall.

A restart (CONNECTION_FORCED), a reset or any other close breaks the run, so a stream route
searches for an undeliverable offset only when the broker keeps giving the same answer.
"""

from __future__ import annotations

import aiormq

from bridge.brokers.rabbitmq.unreadable import StreamStall, describe_close, is_internal_error

INTERNAL = aiormq.exceptions.ConnectionInternalError("INTERNAL_ERROR")


def test_internal_errors_in_a_row_at_one_resume_point_are_counted() -> None:
    stall = StreamStall()
    assert [stall.closed(7, INTERNAL) for _ in range(3)] == [1, 2, 3]
    assert stall.error == "Connection.Close INTERNAL_ERROR (541)"
    assert "stream queue 'events' from offset 7" in stall.describe("route svc/r (source rabbit)", "events")


def test_a_restart_or_a_reset_breaks_the_run() -> None:
    stall = StreamStall()
    stall.closed(7, INTERNAL)
    stall.closed(7, INTERNAL)
    assert stall.closed(7, aiormq.exceptions.ConnectionClosed(320, "CONNECTION_FORCED")) == 0
    assert stall.closed(7, INTERNAL) == 1
    assert stall.closed(7, ConnectionResetError()) == 0
    assert stall.closed(7, None) == 0
    assert stall.count == 0


def test_a_new_resume_point_starts_a_new_run() -> None:
    stall = StreamStall()
    stall.closed(7, INTERNAL)
    stall.closed(7, INTERNAL)
    assert stall.closed(9, INTERNAL) == 1
    assert stall.closed("first", INTERNAL) == 1


def test_only_internal_error_is_internal() -> None:
    assert is_internal_error(INTERNAL)
    assert not is_internal_error(aiormq.exceptions.ConnectionClosed(320, "CONNECTION_FORCED"))
    assert not is_internal_error(None)
    assert describe_close(None) == "closed"
