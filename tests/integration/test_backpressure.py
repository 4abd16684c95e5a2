"""Backpressure and memory, end to end: real Kafka, real JetStream, real `nats-bridge run` processes.

The bridge's promise under pressure is the same as in normal operation — a Kafka record is
committed only after JetStream stored it — plus two more: when JetStream cannot take more
(a full `discard: new` stream, an unreachable server) the bridge neither gives up nor spins,
it backs off and resumes by itself; and a backlog of any length costs bounded memory, because
reading is paused, not buffered, while publishing lags behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path

import nats
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka_helpers import (
    BridgeProcess,
    contiguous_prefix,
    fill_topic,
    stored_offsets,
    stream_count,
    wait_for_count,
    write_mapping,
)
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js import api as js_api
from private_nats import PrivateNatsServer

pytestmark = [pytest.mark.kafka, pytest.mark.nats]

BridgeFactory = Callable[[Path], BridgeProcess]
TopicFactory = Callable[..., Awaitable[str]]
CommittedReader = Callable[[], Awaitable[dict[int, int]]]

# The bridge backs a lane off 0.1 s after its first refused publish, doubling up to
# PipelineSettings.retry_backoff_max (5 s): it reaches the cap about 6.3 s after the first
# refusal. From STEADY_AFTER on, a lane may retry at most once per 5 s.
BACKOFF_MAX = 5.0
STEADY_AFTER = 8.0
COUNT_WINDOW = 10.0

# Peak RSS bound for draining 1,000,000 x 100 B. Measured here: 67.1 MiB in bench/README.md's
# quiet run; 75.3 and 92.1 MiB in this test beside other heavy tests (NATS slower to answer means
# more unsettled in hand, up to max_unsettled). 200 MiB leaves twice the worst of those for a
# loaded CI machine, and is still a fraction of what a bridge that buffered the backlog would
# take (1M records are ~100 MiB of payload alone, several times that as Python objects). The
# benchmark keeps the tighter 150 MiB target (bench/common.py TARGET_RSS_MIB) on a quiet machine.
PEAK_RSS_BOUND_MIB = 200
MILLION = 1_000_000

_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
_RETRY_LINE = re.compile(r" lane (?P<lane>\S+): publish failed \((?P<reason>.*)\); resending from position")


# --------------------------------------------------------------------------------------- helpers


@pytest.fixture
async def nc(nats_client: NatsClient, jetstream: JetStreamContext) -> NatsClient:
    """The shared server's client; requesting `jetstream` deletes this test's streams afterwards."""
    return nats_client


@contextlib.asynccontextmanager
async def group_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> AsyncIterator[CommittedReader]:
    """A reader of the bridge group's committed offsets (0 where nothing is committed).

    The consumer never subscribes, so it never joins the group: it only asks the coordinator.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()

    async def read() -> dict[int, int]:
        return {p: await consumer.committed(TopicPartition(topic, p)) or 0 for p in range(partitions)}

    try:
        yield read
    finally:
        await consumer.stop()


def produced_per_partition(total: int, partitions: int) -> dict[int, int]:
    """Records per partition written by a round-robin fill of `total` records."""
    return {p: total // partitions + (1 if p < total % partitions else 0) for p in range(partitions)}


def add_stream_fields(mapping: Path, *fields: str) -> Path:
    """Add fields (`max_msgs: 1000`) to the one stream that `write_mapping` declared."""
    text = mapping.read_text()
    anchor = "    duplicate_window:"
    assert text.count(anchor) == 1, text
    mapping.write_text(text.replace(anchor, "".join(f"    {field}\n" for field in fields) + anchor))
    return mapping


def retry_lines(log_path: Path) -> list[tuple[float, str, str]]:
    """(time, lane, reason) of every 'publish failed ... resending' line in a bridge log."""
    found = []
    for line in log_path.read_text(errors="replace").splitlines():
        stamp, retry = _LOG_TIME.match(line), _RETRY_LINE.search(line)
        if stamp and retry:
            when = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()  # local time, as logged
            found.append((when, retry.group("lane"), retry.group("reason")))
    return found


def first_refusals(log_path: Path, reason: str) -> dict[str, float]:
    """lane -> when (log time) the bridge first logged a retry of it for `reason`."""
    firsts: dict[str, float] = {}
    for when, lane, why in retry_lines(log_path):
        if reason in why:
            firsts.setdefault(lane, when)
    return firsts


async def wait_for_retry(bridge: BridgeProcess, reason: str, timeout: float = 120) -> float:
    """Wait until the bridge logs a retry for `reason`; return when (log time) the first one was."""
    deadline = time.monotonic() + timeout
    while True:
        matching = [when for when, _, why in retry_lines(bridge.log_path) if reason in why]
        if matching:
            return matching[0]
        if not bridge.alive():
            raise AssertionError(f"bridge exited before retrying on {reason!r}:\n{bridge.log()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"bridge did not retry on {reason!r} within {timeout}s:\n{bridge.log()}")
        await asyncio.sleep(0.1)


async def wait_until_committed(
    read: CommittedReader, wanted: dict[int, int], bridge: BridgeProcess, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while (now := await read()) != wanted:
        assert bridge.alive(), f"bridge exited:\n{bridge.log()}"
        assert all(now[p] <= wanted[p] for p in wanted), f"committed {now} past the end {wanted}"
        if time.monotonic() > deadline:
            raise AssertionError(f"committed offsets {now}, wanted {wanted} within {timeout}s")
        await asyncio.sleep(0.2)


async def stored_with_times(nc: NatsClient, stream: str) -> list[tuple[int, int, float]]:
    """(partition, offset, stored at as epoch seconds) of every message in the stream, in stream order."""
    js = nc.jetstream(timeout=20)
    remaining = (await js.stream_info(stream)).state.messages
    config = js_api.ConsumerConfig(ack_policy=js_api.AckPolicy.NONE, headers_only=True)
    subscription = await js.pull_subscribe("", stream=stream, config=config)
    found = []
    while remaining > 0:
        batch = await subscription.fetch(min(remaining, 2000), timeout=20)
        for message in batch:
            headers = message.headers or {}
            found.append(
                (int(headers["Kafka-Partition"]), int(headers["Kafka-Offset"]), message.metadata.timestamp.timestamp())
            )
        remaining -= len(batch)
    await subscription.unsubscribe()
    return found


async def fill_topic_fast(bootstrap: str, topic: str, count: int, partitions: int, size: int) -> None:
    """`count` keyed records of `size` bytes, round-robin: bench/kafka_to_jetstream.py's fast fill
    (big batches, leader acks only; bench/ is not an importable package)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20, max_request_size=4 << 20, acks=1
    )
    await producer.start()
    body = b"v" * size
    try:
        pending = []
        for i in range(count):
            pending.append(await producer.send(topic, body, key=b"k%d" % i, partition=i % partitions))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def peak_rss_mib(pid: int) -> float:
    """VmHWM (the kernel's own peak resident set) of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


# ------------------------------------------------------------------------ 1. stream full (discard new)

# 750 records per partition: a 1,000-message limit cannot end on a partition boundary, so at
# least one partition is stored only in part (its commits must stop mid-partition).
FULL_PARTITIONS, FULL_TOTAL = 4, 3_000


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("limit", "raised", "refusal"),
    [
        (("max_msgs", "1000"), ("max_msgs", 10_000), "maximum messages exceeded (code 503, err_code 10077)"),
        (("max_bytes", "256KiB"), ("max_bytes", 64 << 20), "maximum bytes exceeded (code 503, err_code 10077)"),
    ],
    ids=["max_msgs", "max_bytes"],
)
async def test_full_discard_new_stream_holds_commits_backs_off_and_resumes_when_the_limit_is_raised(
    tmp_path: Path,
    bridge_process: BridgeFactory,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    unique_name: str,
    nc: NatsClient,
    limit: tuple[str, str],
    raised: tuple[str, int],
    refusal: str,
) -> None:
    """A `discard: new` stream at its limit refuses every further publish (JetStream err 10077).
    That refusal is transient from the bridge's side — an operator can raise the limit or make
    room — so the bridge must hold (commit nothing unstored), retry gently (not flood the log,
    not hammer the server), and carry on by itself once there is room, storing each record once.
    """
    topic = await kafka_topic(partitions=FULL_PARTITIONS)
    await fill_topic(kafka_bootstrap, topic, FULL_TOTAL, FULL_PARTITIONS)
    stream, group = unique_name.upper(), f"bridge-{unique_name}"
    mapping = write_mapping(
        tmp_path / "m.yaml", nats_url=nats_url, bootstrap=kafka_bootstrap, stream=stream, topic=topic, group=group
    )
    limit_field, limit_value = limit
    add_stream_fields(mapping, f"{limit_field}: {limit_value}", "discard: new")
    bridge = bridge_process(mapping)
    bridge.start()
    async with group_offsets(kafka_bootstrap, group, topic, FULL_PARTITIONS) as committed:
        await wait_for_retry(bridge, refusal)
        produced = produced_per_partition(FULL_TOTAL, FULL_PARTITIONS)

        # Watch the stalled bridge until every refused lane's back-off is in steady state and
        # through a count window. A lane's window starts STEADY_AFTER its own first refusal: a
        # partition the bridge had not read when the source was paused may be read (and refused)
        # later, and starts its back-off from the beginning then.
        samples: list[tuple[dict[int, int], dict[int, int]]] = []  # (committed, stored prefix)
        while True:
            firsts = first_refusals(bridge.log_path, refusal)
            watched_until = time.time()
            if watched_until >= max(firsts.values()) + STEADY_AFTER + COUNT_WINDOW + 1:
                break
            assert bridge.alive(), f"the bridge gave up on a full stream:\n{bridge.log()}"
            # Committed first, stored after: a commit must be stored already when it is read.
            now_committed = await committed()
            stored = await stored_offsets(nc, stream)
            for partition, offsets in stored.items():
                assert offsets == list(range(len(offsets))), f"partition {partition}: stored set is not a prefix"
            samples.append((now_committed, {p: len(stored.get(p, [])) for p in range(FULL_PARTITIONS)}))
            await asyncio.sleep(0.5)
        for sample, prefix in samples:
            assert all(sample[p] <= prefix[p] for p in prefix), f"committed {sample} past what is stored {prefix}"
        final_committed, prefix = samples[-1]
        assert final_committed == prefix, "everything stored is committed, nothing more"
        full = sum(prefix.values())
        assert 0 < full < FULL_TOTAL
        if limit_field == "max_msgs":
            assert [snapshot for _, snapshot in samples] == [prefix] * len(samples), "nothing stored while full"
            assert full == int(limit_value)
            assert any(0 < prefix[p] < produced[p] for p in prefix), f"a partition stored in part: {prefix}"

        # Every refused lane retries, gently; a lane with everything stored has nothing to retry.
        # (Which lanes filled the stream depends on fetch order: often one partition took it all.)
        complete = {f"{topic}/{p}" for p in range(FULL_PARTITIONS) if prefix[p] == produced[p]}
        assert not complete & set(firsts), f"lanes with everything stored retried: {complete & set(firsts)}"
        retries = [(when, lane) for when, lane, why in retry_lines(bridge.log_path) if refusal in why]
        most = int(COUNT_WINDOW // BACKOFF_MAX) + 1
        per_lane = {}
        for lane, first in firsts.items():
            if first + STEADY_AFTER + COUNT_WINDOW <= watched_until:
                window_start = first + STEADY_AFTER
                per_lane[lane] = sum(
                    1 for when, retried in retries if retried == lane and 0 <= when - window_start < COUNT_WINDOW
                )
        assert per_lane, "some refused lane watched through its window"
        assert all(1 <= count <= most for count in per_lane.values()), (
            f"over {COUNT_WINDOW:g}s of a full stream a refused lane retries, at most once per {BACKOFF_MAX:g}s: "
            f"{per_lane}"
        )

        # Raise the limit, keeping the rest of the stream's config (update_stream resets what it is not given).
        js = nc.jetstream(timeout=10)
        config = (await js.stream_info(stream)).config
        raised_field, raised_value = raised
        if raised_field == "max_msgs":
            await js.update_stream(dataclasses.replace(config, max_msgs=raised_value))
        else:
            await js.update_stream(dataclasses.replace(config, max_bytes=raised_value))
        updated = (await js.stream_info(stream)).config
        assert getattr(updated, raised_field) == raised_value
        assert updated.discard == js_api.DiscardPolicy.NEW
        assert updated.duplicate_window == config.duplicate_window
        assert updated.subjects == config.subjects

        # The bridge resumes by itself: everything stored once, everything committed.
        await wait_for_count(nc, stream, FULL_TOTAL, timeout=60, bridges=[bridge])
        await wait_until_committed(committed, produced, bridge)
    assert await stream_count(nc, stream) == FULL_TOTAL
    stored = await stored_offsets(nc, stream)
    # Exactly once, not necessarily in order: a publish refused while the next one of its lane
    # was stored (the limit raised between them) is stored after it (README, "Order").
    assert {p: sorted(offsets) for p, offsets in stored.items()} == {p: list(range(n)) for p, n in produced.items()}
    assert bridge.terminate() == 0, bridge.log()


# ----------------------------------------------------------------------------- 2. NATS unreachable

OUTAGE_PARTITIONS, OUTAGE_PER_PARTITION = 3, 30_000
# A settle already under way when NATS went may still commit what was stored before the
# outage: its checkpoint write, if sent just before, waits out the JetStream API timeout (5 s,
# nats-py's default, which the bridge keeps) before the commit follows. After that, nothing moves.
COMMIT_GRACE = 6.0
OUTAGE_SECONDS = COMMIT_GRACE + 4.0


@pytest.mark.timeout(300)
async def test_nats_down_for_seconds_commits_nothing_new_and_the_bridge_finishes_exactly_once(
    tmp_path: Path,
    bridge_process: BridgeFactory,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    unique_name: str,
) -> None:
    """NATS stopped mid-flow for several seconds under a running `nats-bridge run`.

    test_kafka_bridge.py restarts NATS at once (kill + start) under an in-process Bridge and
    checks only the final stream; this keeps it down long enough to watch the Kafka group while
    nothing can be stored: no commit may go past what JetStream stored before the outage, and
    commits stand still until it is back. Then the bridge must reconnect by itself and finish:
    each record once, each partition in order (README promises order across reconnects).
    """
    total = OUTAGE_PARTITIONS * OUTAGE_PER_PARTITION
    topic = await kafka_topic(partitions=OUTAGE_PARTITIONS)
    await fill_topic(kafka_bootstrap, topic, total, OUTAGE_PARTITIONS)
    server = PrivateNatsServer(tmp_path / "nats")
    server.start()
    stream, group = unique_name.upper(), f"bridge-{unique_name}"
    mapping = write_mapping(
        tmp_path / "m.yaml", nats_url=server.url, bootstrap=kafka_bootstrap, stream=stream, topic=topic, group=group
    )
    client = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    bridge = bridge_process(mapping)
    try:
        async with group_offsets(kafka_bootstrap, group, topic, OUTAGE_PARTITIONS) as committed:
            bridge.start()
            await wait_for_count(client, stream, total // 6, timeout=120, bridges=[bridge])
            await asyncio.to_thread(server.stop)  # SIGTERM: the store is flushed, the stream survives
            stopped_at = time.monotonic()
            samples: list[tuple[float, dict[int, int]]] = []
            while (elapsed := time.monotonic() - stopped_at) < OUTAGE_SECONDS:
                assert bridge.alive(), f"the bridge gave up while NATS was down:\n{bridge.log()}"
                samples.append((elapsed, await committed()))
                await asyncio.sleep(0.25)
            restarted_at = time.time()
            await asyncio.to_thread(server.start)

            await _wait_for_stream(client, stream)
            await wait_for_count(client, stream, total, timeout=180, bridges=[bridge])
            produced = dict.fromkeys(range(OUTAGE_PARTITIONS), OUTAGE_PER_PARTITION)
            await wait_until_committed(committed, produced, bridge)
        assert "disconnected from NATS" in bridge.log_path.read_text(), "the outage reached the bridge"
        assert bridge.terminate() == 0, bridge.log()
        records = await stored_with_times(client, stream)
    finally:
        await client.close()
        server.stop(kill=True)

    # Nothing can be stored while the server is down: what is stored before the restart is
    # what was stored before the outage, and no commit during it may pass that.
    before: dict[int, list[int]] = {p: [] for p in range(OUTAGE_PARTITIONS)}
    for partition, offset, stored_at in records:
        if stored_at < restarted_at:
            before[partition].append(offset)
    stored_before = {p: contiguous_prefix(offsets) for p, offsets in before.items()}
    for elapsed, sample in samples:
        assert all(sample[p] <= stored_before[p] for p in sample), (
            f"{elapsed:.2f}s into the outage the group committed {sample}, past what was stored {stored_before}"
        )
    settled = [sample for elapsed, sample in samples if elapsed >= COMMIT_GRACE]
    assert settled, "samples after the grace period"
    assert all(sample == settled[0] for sample in settled), f"commits moved while NATS was down: {settled}"
    assert sum(settled[-1].values()) < total, "the outage came mid-flow, before everything was committed"

    stored: dict[int, list[int]] = {}
    for partition, offset, _ in records:
        stored.setdefault(partition, []).append(offset)
    assert stored == {p: list(range(OUTAGE_PER_PARTITION)) for p in range(OUTAGE_PARTITIONS)}, (
        "each record stored once, each partition in offset order"
    )


async def _wait_for_stream(client: NatsClient, stream: str, timeout: float = 60) -> None:
    """Wait until the restarted server answers for the stream (the client reconnects by itself)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.jetstream(timeout=2).stream_info(stream)
        except (nats.errors.Error, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
        else:
            return


# ---------------------------------------------------------------------------------------- 3. memory


@pytest.mark.timeout(900)
async def test_draining_a_million_record_backlog_keeps_peak_rss_under_the_bound(
    tmp_path: Path,
    bridge_process: BridgeFactory,
    nats_url: str,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    unique_name: str,
    nc: NatsClient,
) -> None:
    """A backlog of 1,000,000 x 100 B drained by `nats-bridge run` peaks under PEAK_RSS_BOUND_MIB
    (200 MiB, VmHWM of the bridge process). The bridge reads only as fast as JetStream stores
    (`max_unsettled`, the fetch sizes), so its memory must not grow with the backlog; and the
    whole backlog is stored, exactly 1,000,000 messages, with the group committed to the end.
    """
    partitions = 6
    topic = await kafka_topic(partitions=partitions)
    await fill_topic_fast(kafka_bootstrap, topic, MILLION, partitions, size=100)
    stream, group = unique_name.upper(), f"bridge-{unique_name}"
    mapping = write_mapping(
        tmp_path / "m.yaml",
        nats_url=nats_url,
        bootstrap=kafka_bootstrap,
        stream=stream,
        topic=topic,
        group=group,
        # The shared server keeps ~170 B per Msg-Id for the window: keep 1M ids there briefly.
        duplicate_window="30s",
    )
    bridge = bridge_process(mapping)
    started = time.monotonic()
    bridge.start()
    await wait_for_count(nc, stream, MILLION, timeout=600, bridges=[bridge])
    drained = time.monotonic() - started
    produced = produced_per_partition(MILLION, partitions)
    async with group_offsets(kafka_bootstrap, group, topic, partitions) as committed:
        await wait_until_committed(committed, produced, bridge)
    assert bridge.process is not None
    peak = peak_rss_mib(bridge.process.pid)
    print(f"\npeak RSS (VmHWM) draining {MILLION:,} x 100 B: {peak:.1f} MiB; drained in {drained:.1f}s")
    info = await nc.jetstream(timeout=30).stream_info(stream, subjects_filter=">")
    assert info.state.messages == MILLION
    subject = stream.lower()
    assert info.state.subjects == {f"{subject}.{p}": n for p, n in produced.items()}
    assert bridge.terminate() == 0, bridge.log()
    assert peak < PEAK_RSS_BOUND_MIB, f"peak RSS {peak:.1f} MiB >= {PEAK_RSS_BOUND_MIB} MiB"
