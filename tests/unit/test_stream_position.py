"""Where a stream route attaches, first and after a reconnect (bridge.brokers.rabbitmq.stream_position)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from bridge.brokers.rabbitmq.stream_position import CLOCK_MARGIN, StreamPosition
from bridge.config.routes import FromRabbitMQ
from bridge.config.routes import stream_start as configured_start

NOW = datetime(2026, 12, 6, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("word", ["next", "last"])
def test_next_and_last_are_pinned_at_the_first_attach_until_a_message_arrives(word: str) -> None:
    position = StreamPosition(configured_start(word))
    assert position.start == word
    position.attached(NOW)
    assert position.start == NOW - CLOCK_MARGIN
    position.attached(datetime(2026, 12, 7, tzinfo=UTC))  # a later attach keeps the first pin
    assert position.start == NOW - CLOCK_MARGIN
    position.next_offset = 42  # a delivery: its offset + 1 from then on
    assert position.start == 42


@pytest.mark.parametrize(
    ("value", "start"),
    [("first", "first"), (7, 7), ("7", 7), ("2026-12-01T00:00:00+00:00", datetime(2026, 12, 1, tzinfo=UTC))],
)
def test_a_start_that_names_its_place_is_asked_for_again_as_it_is(value: int | str, start: object) -> None:
    position = StreamPosition(configured_start(value))
    position.attached(NOW)
    assert position.start == start


def test_a_checkpoint_wins_over_the_configured_start() -> None:
    position = StreamPosition("next", next_offset=100)
    position.attached(NOW)
    assert (position.start, position.pinned) == (100, None)


@pytest.mark.parametrize("value", ["frist", "latest", "-1", "2026-13-01", ""])
def test_a_stream_offset_that_is_no_start_is_refused_in_the_file(value: str) -> None:
    with pytest.raises(ValidationError, match="none of first, last, next"):
        FromRabbitMQ(queue="events", mode="stream", stream_offset=value)


def test_a_negative_offset_is_refused() -> None:
    with pytest.raises(ValidationError, match="0 or more"):
        FromRabbitMQ(queue="events", mode="stream", stream_offset=-1)
