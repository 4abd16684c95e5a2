"""The handoff's closing check: the durable's pending count against the legacy lag, exact when the
legacy side is at rest, bracketed while legacy producers still publish (the shadow phase)."""

from __future__ import annotations

from bridge.handoff.durable import HandoffResult


def _result(pending: int, lag: int, unstored: int = 0, after: int | None = None) -> HandoffResult:
    return HandoffResult("d", 1, 0, 0, pending, lag, unstored, after)


def test_at_rest_the_counts_must_be_equal() -> None:
    assert _result(106, 106, 0, 106).matches
    assert not _result(105, 106, 0, 106).matches  # a message missing from the durable
    assert not _result(107, 106, 0, 106).matches  # one processed already, delivered again


def test_while_producers_publish_pending_lies_between_the_two_readings() -> None:
    # planned: 106 in the queue, 3 of them not stored yet; afterwards 125 in the queue
    assert _result(121, 106, 3, 125).matches
    assert _result(103, 106, 3, 125).matches
    assert not _result(102, 106, 3, 125).matches
    assert not _result(126, 106, 3, 125).matches
