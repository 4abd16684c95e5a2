"""The pipeline's backpressure decisions, as pure logic: when the source is paused and resumed,
and how a lane backs off after JetStream refuses a publish.

tests/integration/test_backpressure.py proves the end-to-end outcome against real brokers, but
there a pause is only visible indirectly (commits that do not move). Here the source and the
publisher are fakes that record calls, the clock is a fake, and each rule is pinned exactly:
the three pause triggers, the hysteresis that stops a pause/resume flutter at the limit, and a
back-off that doubles to its cap (one retry and one log line per cycle, not per refused message).
"""

from __future__ import annotations

import asyncio
import logging
import textwrap
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

import pytest

import bridge.pipeline.intake
import bridge.pipeline.lanes
import bridge.pipeline.route
import bridge.pipeline.sending
import bridge.pipeline.settling
from bridge.config import load_config_text
from bridge.jetstream.publish_types import InFlight, PublishFailure
from bridge.jetstream.publisher import JetStreamPublisher
from bridge.mapping import CompiledRoute
from bridge.message import KafkaOrigin, SourceMessage
from bridge.pipeline.lanes import LaneState
from bridge.pipeline.route import RoutePipeline
from bridge.pipeline.settings import PipelineSettings
from bridge.sources.base import Lane, LaneOwner, Received

LANE = ("orders", 0)
STREAM_FULL = PublishFailure("error", "maximum messages exceeded", code=503, err_code=10077)
# Every module of the pipeline that reads the clock.
CLOCK_READERS = (
    bridge.pipeline.intake,
    bridge.pipeline.lanes,
    bridge.pipeline.route,
    bridge.pipeline.sending,
    bridge.pipeline.settling,
)

MAPPING = """\
sources:
  k: {type: kafka, bootstrap_servers: ["unused:9092"]}
services:
  svc:
    routes:
      - name: r
        source: k
        from: {topics: [orders]}
        to: "orders.{partition}"
"""


class FakeSource:
    """Records pause/resume calls; the pipeline's reader is not run, so nothing is fetched."""

    name = "fake"
    stable_positions = True
    settle_after: int | None = None
    checkpoint_scope = "fake"
    reconnects = 0
    unread: int | None = None

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def start(self, owner: LaneOwner) -> None:
        return None

    async def fetch(self, max_messages: int, wait: float) -> Sequence[Received]:
        return []

    async def settle(self, watermarks: Mapping[Lane, int]) -> None:
        return None

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")

    async def close(self) -> None:
        return None

    async def backlog(self) -> Mapping[str, int]:
        return {}


class FakePublisher:
    """What the pipeline asks of the publisher, without a connection: sends are only recorded."""

    def __init__(self) -> None:
        self.connected = True
        self.max_payload = 1 << 20
        self.max_control_line = 4096
        self.subject_room = 4029
        self.highest_seq: dict[str, int] = {}
        self.sent: list[InFlight] = []
        self.forgotten = 0

    async def publish(self, entries: Sequence[InFlight], *, abandon: asyncio.Event | None = None) -> list[InFlight]:
        self.sent.extend(entries)
        return []

    def forget(self, entries: Sequence[InFlight]) -> None:
        self.forgotten += len(list(entries))


class FakeClock:
    """Stands in for the `time` module inside bridge.pipeline's modules: `monotonic` only moves when told."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    for module in CLOCK_READERS:
        monkeypatch.setattr(module, "time", fake)
    return fake


def make_pipeline(max_unsettled: int = 100) -> tuple[RoutePipeline, FakeSource, FakePublisher]:
    config = load_config_text(textwrap.dedent(MAPPING), "test.yaml", {})
    service, route = config.routes()[0]
    source, publisher = FakeSource(), FakePublisher()
    settings = PipelineSettings(max_unsettled=max_unsettled, retry_backoff_initial=0.1, retry_backoff_max=5.0)
    pipeline = RoutePipeline(
        CompiledRoute.compile(service, route), source, cast(JetStreamPublisher, publisher), settings
    )
    return pipeline, source, publisher


def receive(pipeline: RoutePipeline, start: int, count: int) -> LaneState:
    """Hand the pipeline `count` records of LANE from offset `start`, as the reader would."""
    batch = [
        Received(LANE, offset, SourceMessage(KafkaOrigin("orders", 0, offset, key=b"k"), b"v"))
        for offset in range(start, start + count)
    ]
    pipeline._intake.accept(batch)
    return pipeline._lanes[LANE]


async def pump(pipeline: RoutePipeline) -> None:
    """One send round, as the sender loop runs it after a wake."""
    await pipeline._sender.pump()


def retry_due(pipeline: RoutePipeline) -> None:
    """Queue again the lanes whose back-off is over, as the sender loop does each round."""
    pipeline._sender.retry_due(pipeline._lanes.values())


def store_oldest(lane: LaneState, count: int) -> None:
    """JetStream acknowledges the lane's `count` oldest unsettled messages."""
    for seq, entry in enumerate([entry for entry in lane.entries if not entry.settled][:count], start=1):
        lane.published(entry, seq, duplicate=False)


async def test_too_much_unsettled_pauses_and_reading_resumes_only_below_half_the_limit() -> None:
    """Hysteresis: resuming at the limit itself would pause and resume on every batch."""
    pipeline, source, _ = make_pipeline(max_unsettled=100)
    lane = receive(pipeline, 0, 99)
    pipeline._apply_backpressure()
    assert not pipeline.paused
    receive(pipeline, 99, 1)
    pipeline._apply_backpressure()
    pipeline._apply_backpressure()
    assert pipeline.paused
    assert source.calls == ["pause"], "one pause, not one per step"

    await pump(pipeline)
    store_oldest(lane, 50)  # 50 unsettled: not below half yet
    pipeline._apply_backpressure()
    assert pipeline.paused
    store_oldest(lane, 1)  # 49
    pipeline._apply_backpressure()
    pipeline._apply_backpressure()
    assert not pipeline.paused
    assert source.calls == ["pause", "resume"]
    assert pipeline.unsettled == 49


async def test_a_refused_publish_pauses_the_source_until_the_lane_resends_and_jetstream_stores(
    clock: FakeClock,
) -> None:
    """A full stream refuses everything: reading on would only grow memory, so the source waits,
    even with far fewer than `max_unsettled` messages in hand, and nothing is settled."""
    pipeline, source, publisher = make_pipeline(max_unsettled=1_000)
    lane = receive(pipeline, 0, 10)
    await pump(pipeline)
    assert len(publisher.sent) == 10
    for entry in list(lane.entries):
        lane.failed(entry, STREAM_FULL)
    pipeline._apply_backpressure()
    assert pipeline.paused
    assert lane.retrying
    assert lane.watermark is None, "nothing refused is settled"

    clock.now += 0.05  # before the back-off is over: no resend, still paused
    retry_due(pipeline)
    pipeline._apply_backpressure()
    assert lane.retrying
    assert pipeline.paused
    assert pipeline.stats.retries == 0

    clock.now += 0.06
    retry_due(pipeline)
    assert pipeline.stats.retries == 1
    await pump(pipeline)
    assert [entry.position for entry in publisher.sent[10:]] == [0], "after a failure the head goes alone"
    store_oldest(lane, 1)
    await pump(pipeline)
    assert [entry.position for entry in publisher.sent[10:]] == list(range(10)), "then the rest, in order"
    store_oldest(lane, 9)
    pipeline._apply_backpressure()
    assert not pipeline.paused
    assert source.calls == ["pause", "resume"]
    assert lane.watermark == 9


async def test_a_disconnected_publisher_pauses_and_no_lane_is_resent_until_it_reconnects(clock: FakeClock) -> None:
    pipeline, source, publisher = make_pipeline()
    lane = receive(pipeline, 0, 5)
    await pump(pipeline)
    publisher.connected = False
    for entry in list(lane.entries):
        lane.failed(entry, PublishFailure("disconnected", "connection to NATS lost"))
    pipeline._apply_backpressure()
    assert pipeline.paused

    clock.now += 60  # long past the back-off: still no resend while there is no connection
    retry_due(pipeline)
    pipeline._apply_backpressure()
    assert lane.retrying
    assert pipeline.paused
    assert pipeline.stats.retries == 0

    publisher.connected = True
    retry_due(pipeline)
    pipeline._apply_backpressure()
    assert not pipeline.paused, "reconnected and resending: reading resumes"
    assert source.calls == ["pause", "resume"]


async def test_back_off_doubles_to_its_cap_with_one_retry_and_one_log_line_per_cycle(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A full stream refuses a whole lane's window at once; the lane must count that as one
    failure cycle (one retry, one warning), wait 0.1, 0.2, ... 5 s between cycles, and start
    again from 0.1 s once a publish succeeds — the 'backs off, not a flood' of the brief."""
    pipeline, _, _ = make_pipeline(max_unsettled=10_000)
    lane = receive(pipeline, 0, 200)
    caplog.set_level(logging.WARNING, logger="bridge.pipeline")
    waits = []
    for _ in range(9):
        await pump(pipeline)
        for entry in [entry for entry in lane.entries if not entry.settled]:
            lane.failed(entry, STREAM_FULL)  # 200 refusals in this cycle
        waits.append(round(lane.retry_at - clock.now, 3))
        clock.now = lane.retry_at
        retry_due(pipeline)
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    assert pipeline.stats.retries == 9
    assert pipeline.stats.failures == 9 * 200
    warnings = [record for record in caplog.records if "publish failed" in record.getMessage()]
    assert len(warnings) == 9, "one line per retry cycle, not per refused message"
    assert "err_code 10077" in warnings[0].getMessage()

    # Room again: the first publish that succeeds resets the back-off.
    await pump(pipeline)
    store_oldest(lane, 1)
    for entry in [entry for entry in lane.entries if not entry.settled]:
        lane.failed(entry, STREAM_FULL)
    assert round(lane.retry_at - clock.now, 3) == 0.1


async def test_a_message_whose_fate_is_being_decided_is_never_sent_as_a_placeholder(clock: FakeClock) -> None:
    """A rewind or a late queueing can put a message in the send queue while its dead letter is
    still being built: the pump must pass over its empty placeholder until it is decided."""
    pipeline, _, publisher = make_pipeline()
    lane = receive(pipeline, 0, 3)
    await pump(pipeline)
    first, *others = list(lane.entries)
    lane.failed(first, PublishFailure("refused", "MaxPayloadError", permanent=True))
    assert first.outbound.subject == ""  # the placeholder while its fate is decided
    for entry in others:
        lane.failed(entry, STREAM_FULL)
    clock.now += 1.0
    retry_due(pipeline)
    lane.unsent.appendleft(first)
    pipeline.lane_has_work(lane)
    await pump(pipeline)
    resent = publisher.sent[3:]
    assert first not in resent
    assert [entry.position for entry in resent] == [1]
