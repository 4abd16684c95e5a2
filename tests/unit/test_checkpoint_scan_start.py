"""Where a lane's next checkpoint scan starts, per stream, as pure logic.

A lane's checkpoint says, per stream, the lowest sequence at which a message of the lane past
its watermark could be stored; a new owner scans from there. Streams the lane leaves no trace
in (the dead-letter stream, a stream it stopped publishing to) must move on too, or every
rebalance rescans them from where the lane was first seen.
"""

from __future__ import annotations

from test_backpressure_logic import LANE, make_pipeline, receive

from bridge.pipeline.settling import checkpoint as lane_checkpoint
from bridge.stored import StoredIndex


def _assigned(pipeline_index: StoredIndex) -> None:
    """The lane was assigned with a marker checkpoint: orders stream at 100, dead letters at 40."""
    pipeline_index.scan_from[LANE] = {"ORDERS": 101, "DLQ": 41}
    pipeline_index.ends[LANE] = {"ORDERS": 100, "DLQ": 40}


def test_a_stream_the_lane_never_published_to_moves_to_its_last_known_sequence() -> None:
    pipeline, _, publisher = make_pipeline()
    _assigned(pipeline.stored_index)
    lane = receive(pipeline, 0, 3)
    for seq, entry in enumerate(list(lane.entries), start=101):
        entry.attempts = 1
        entry.stream = "ORDERS"
        lane.published(entry, seq, duplicate=False)
    publisher.highest_seq.update({"ORDERS": 103, "DLQ": 57})  # another route dead-lettered meanwhile
    checkpoint = lane_checkpoint(lane, publisher.highest_seq)
    assert checkpoint is not None
    assert checkpoint.position == 2
    assert checkpoint.scan_from == {"ORDERS": 103, "DLQ": 58}


def test_without_any_publish_seen_the_scan_end_of_the_assignment_is_the_floor() -> None:
    pipeline, _, publisher = make_pipeline()
    _assigned(pipeline.stored_index)
    lane = receive(pipeline, 0, 1)
    (entry,) = lane.entries
    lane.settle_now(entry)  # filtered: nothing published at all
    checkpoint = lane_checkpoint(lane, publisher.highest_seq)
    assert checkpoint is not None
    assert checkpoint.scan_from == {"ORDERS": 101, "DLQ": 41}


def test_a_message_sent_and_not_yet_acknowledged_holds_every_stream_back() -> None:
    pipeline, _, publisher = make_pipeline()
    _assigned(pipeline.stored_index)
    lane = receive(pipeline, 0, 2)
    first, second = lane.entries
    first.attempts = second.attempts = 1
    first.stream = "ORDERS"
    lane.published(first, 101, duplicate=False)
    publisher.highest_seq.update({"ORDERS": 150, "DLQ": 57})
    # The second may already be stored anywhere its subject leads (or be a dead letter in DLQ).
    checkpoint = lane_checkpoint(lane, publisher.highest_seq)
    assert checkpoint is not None
    assert checkpoint.scan_from["DLQ"] == 41


def test_positions_the_group_committed_and_no_stream_holds_are_named_for_copying_again() -> None:
    pipeline, _, _ = make_pipeline()
    index = pipeline.stored_index
    index.through[LANE] = 99  # the checkpoint, rolled back with a restored NATS store
    index.positions[LANE] = {100, 101, 105, 300}  # what the scan still found after it
    assert pipeline.missing_before(LANE, 200) == [(102, 104), (106, 199)]
    assert pipeline.stats.recopied == 3 + 94
    assert pipeline.missing_before(LANE, 102) == []  # resuming right after what is there
    assert pipeline.missing_before(("other", 0), 500) == []  # no checkpoint: nothing to judge
