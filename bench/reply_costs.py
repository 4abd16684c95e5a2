"""What one PubAck costs the bridge from its bytes to the lane's watermark, measured alone (no broker).

    .venv/bin/python bench/reply_costs.py

A GuardedClient that is never connected, a JetStreamPublisher on it and one lane (a LaneState
with a Settler behind it, as a route has) with 20,000 messages in flight; their PubAcks, as
nats-server sends them (`MSG <inbox>.<token> <sid> <size>` and `{"stream":"S","seq":N}`), are fed
to the client's parser in 32 KiB reads, as its read loop would. Each round times the whole
way: the parser, the publisher's reply handler, the PubAck's parse, the lane's settling and the
Settler's bookkeeping. Medians of 5 rounds, µs per PubAck; compare the figures of one run.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from bridge.brokers.nats.guarded import GuardedClient
from bridge.jetstream.publisher import JetStreamPublisher
from bridge.message import OutboundMessage
from bridge.pipeline.entries import LaneEntry
from bridge.pipeline.lanes import LaneState
from bridge.pipeline.settings import PipelineSettings
from bridge.pipeline.settling import Settler
from bridge.pipeline.stats import RouteStats
from bridge.stored import StoredIndex

ROUNDS = 5
REPLIES = 20_000
READ = 32 * 1024


class _Source:
    settle_after: int | None = None
    stable_positions = True
    checkpoint_scope = "bench"


class _Host:
    """The LaneHost calls a PubAck makes, answered as RoutePipeline answers them."""

    def __init__(self, settler: Settler) -> None:
        self.refusing_since: float | None = None
        self.stats = RouteStats()
        self.settings = PipelineSettings()
        self.route: Any = None  # read only when reporting a reorder
        self.lane_progressed = settler.progressed

    def wake(self) -> None: ...

    def lane_has_work(self, lane: LaneState) -> None: ...


async def one_round(publisher: JetStreamPublisher, nc: GuardedClient, sid: int, prefix: str) -> float:
    settler = Settler("bench/r", _Source(), publisher, None, interval=60.0, wake=lambda: None)  # type: ignore[arg-type]
    host = _Host(settler)
    lane = LaneState(("t", 0), host, StoredIndex())  # type: ignore[arg-type]
    outbound = OutboundMessage("s", b"", "id")
    now = time.monotonic()
    replies = []
    for position in range(REPLIES):
        entry = LaneEntry(outbound, lane, position)
        entry.token = token = str(position + 1_000_000)
        entry.sent_at = now
        entry.attempts = 1
        lane.entries.append(entry)
        lane.in_flight += 1
        publisher._window.add(token, entry)
        body = b'{"stream":"S","seq":%d}' % (position + 1)
        replies.append(b"MSG %s%s %d %d\r\n%s\r\n" % (prefix.encode(), token.encode(), sid, len(body), body))
    data = b"".join(replies)
    started = time.perf_counter()
    for start in range(0, len(data), READ):
        await nc._ps.parse(data[start : start + READ])
    elapsed = time.perf_counter() - started
    if lane.watermark != REPLIES - 1 or lane.entries:
        raise SystemExit(f"the lane did not settle: watermark {lane.watermark}, {len(lane.entries)} left")
    return elapsed / REPLIES * 1e6


async def main() -> None:
    nc = GuardedClient()
    nc._flush_queue = asyncio.Queue()  # never connected: the SUB is only queued
    publisher = JetStreamPublisher(nc, window=REPLIES + 1)
    await publisher.start()
    subscription = publisher._subscription
    assert subscription is not None
    rounds = [await one_round(publisher, nc, subscription._id, publisher._prefix) for _ in range(ROUNDS)]
    await publisher.close()
    print(
        f"one PubAck, parser to watermark   {statistics.median(rounds):6.2f} µs   (rounds: "
        + ", ".join(f"{value:.2f}" for value in rounds)
        + ")"
    )
    print("command: .venv/bin/python bench/reply_costs.py")


if __name__ == "__main__":
    asyncio.run(main())
