"""SIGTERM while Kafka is down, frozen or refusing the login: the bridge still exits in time.

The README promises that SIGINT/SIGTERM stops reading, waits up to the drain timeout (10 s) for
in-flight PubAcks, commits what is stored and exits 0; issue 19 asks that this hold whatever
broker is gone. For Kafka that is not free: aiokafka retries a commit, a coordinator lookup and
the wait for the group's first assignment for as long as the broker stays away, and waits up to
its 40 s request timeout for a broker that accepted a request and then answers nothing.

Kafka here is a private single node (tests/private_kafka.py: compose/brokers' own, on ports of
its own), so it can be frozen (SIGSTOP: a hung broker, nothing answered) and killed (SIGKILL:
connections break, new ones are refused) without touching the shared one. NATS is the shared test
server, which stays up: whatever the bridge read, it can store.

- Kafka gone mid-copy: the bridge exits 0 within the drain timeout (+ a margin for closing), logs
  no traceback, committed nothing JetStream does not hold, and a restart copies the rest (0 lost,
  0 stored twice).
- Kafka down when the bridge starts (frozen, or nothing listening): SIGTERM at several moments of
  the start-up ends it within the bound (a chaos run saw one such bridge ignore SIGTERM).
- Kafka refusing the SASL login (compose/kafka-secure): the bridge ends by itself with one
  `error:` line, or SIGTERM ends it first; either way in time and without a traceback.

What these found (all fixed): with Kafka frozen or killed mid-copy the bridge never exited after
SIGTERM: the drain's last settle awaited a commit aiokafka retried for ever, and closing the
consumer waited up to 40 s for the LeaveGroup answer; once those were bounded, closing the consumer
of a killed Kafka ended in a CancelledError (aiokafka's Fetcher.close awaits tasks it cancelled)
that failed the bridge with exit 1 and a traceback; and a bridge started while Kafka was frozen
ignored SIGTERM until aiokafka gave up its bootstrap 40 s later (a route's start, aiokafka's wait
for its bootstrap and first assignment included, did not listen to stop at all).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from kafka_helpers import (
    BridgeProcess,
    contiguous_prefix,
    describe_duplicates,
    fill_topic,
    stored_records,
    stream_count,
    wait_for_count,
    write_mapping,
)
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from private_kafka import PrivateKafka, PrivateKafkaError
from test_kafka_security import (  # noqa: F401  (secure_kafka is a fixture: imported, it is usable here)
    WRONG_PASSWORD,
    SecureKafka,
    TopicFactory,
    secure_kafka,
    secure_topic,
    settings_for,
    write_secure_mapping,
)

from bridge.pipeline.settings import PipelineSettings

pytestmark = [pytest.mark.kafka, pytest.mark.nats, pytest.mark.timeout(300)]

DRAIN_TIMEOUT = PipelineSettings().drain_timeout
MARGIN = 5.0  # closing the consumer and the NATS client, on a loaded 2-core machine
HANG = DRAIN_TIMEOUT + 30  # past this a bridge is killed and the test fails: it hung
PARTITIONS = 3
RECORDS = 60_000  # far more than the bridge copies before Kafka goes: it is mid-copy

BridgeFactory = Callable[[Path], BridgeProcess]


@pytest.fixture(scope="module")
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateKafka]:
    """A Kafka of this module's own (started once, about 13 s), killed after the module."""
    kafka = PrivateKafka(tmp_path_factory.mktemp("private-kafka"))
    try:
        kafka.start()
    except PrivateKafkaError as error:
        kafka.stop()
        pytest.fail(f"could not start a private Kafka: {error}", pytrace=False)
    try:
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture
def kafka(private_kafka: PrivateKafka) -> Iterator[PrivateKafka]:
    """The private Kafka, running and answering when the test starts and when it ends."""
    private_kafka.start()  # a no-op when it runs; thaws a frozen one
    yield private_kafka
    try:
        private_kafka.start()
    except PrivateKafkaError as error:
        pytest.fail(f"the private Kafka did not come back: {error}", pytrace=False)


async def create_topic(bootstrap: str, name: str, partitions: int) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
        deadline = time.monotonic() + 30
        while True:
            (described,) = await admin.describe_topics([name])
            parts = described["partitions"]
            if len(parts) == partitions and all(p["error_code"] == 0 and p["leader"] >= 0 for p in parts):
                return name
            if time.monotonic() > deadline:
                raise AssertionError(f"topic {name} has no leaders after 30s: {described}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets, asked of the coordinator without joining the group (retried
    for up to 60 s: a broker just back may not have its coordinator ready yet)."""
    deadline = time.monotonic() + 60
    while True:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, request_timeout_ms=10_000
        )
        try:
            await consumer.start()
            return {p: await consumer.committed(TopicPartition(topic, p)) or 0 for p in range(partitions)}
        except (KafkaError, AssertionError) as error:  # aiokafka asserts it has a broker to ask
            if time.monotonic() > deadline:
                raise AssertionError(f"Kafka does not tell group {group}'s commits: {error!r}") from None
        finally:
            await consumer.stop()
        await asyncio.sleep(0.5)


async def sigterm(bridge: BridgeProcess) -> tuple[int, float]:
    """SIGTERM the bridge; (exit code, seconds it took). A bridge still running HANG seconds later
    is killed and fails the test: it hung."""
    assert bridge.process is not None
    started = time.monotonic()
    if bridge.process.poll() is None:
        bridge.process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(bridge.process.wait, HANG)
    except Exception:
        bridge.kill()
        raise AssertionError(f"the bridge did not exit within {HANG:g}s of SIGTERM (a hang):\n{bridge.log()}") from None
    took = time.monotonic() - started
    print(f"{bridge.log_path.name}: exit {code} {took:.1f}s after SIGTERM")  # shown with -s, and on failure
    return code, took


def assert_clean_exit(bridge: BridgeProcess, code: int, took: float, *, may_fail: str = "") -> None:
    """Exited within the bound, without a traceback, with 0 (SIGTERM's exit) — or, when `may_fail`
    is given, the bridge may have ended by itself first: exit 2 and one `error:` line containing
    `may_fail`. A bridge already exiting 2 when the SIGTERM came (its error line printed, the event
    loop and its signal handlers gone) ends by the signal itself: -15 counts as that exit 2."""
    text = bridge.log_path.read_text(errors="replace")
    assert took <= DRAIN_TIMEOUT + MARGIN, (
        f"exited {took:.1f}s after SIGTERM; the bound is the drain timeout {DRAIN_TIMEOUT:g}s + {MARGIN:g}s\n"
        f"{bridge.log()}"
    )
    assert "Traceback" not in text, text[-8000:]
    if code == 0:
        return
    assert may_fail, f"exit code {code}, expected 0\n{bridge.log()}"
    assert code in (2, -signal.SIGTERM), f"exit code {code}, expected 0 or 2\n{bridge.log()}"
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"exit code {code} with {len(errors)} error lines, wanted one\n{bridge.log()}"
    assert may_fail in errors[0], f"{may_fail!r} not in {errors[0]!r}"


# --- Kafka gone mid-copy --------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["frozen", "killed"])
async def test_sigterm_while_kafka_is_gone_mid_copy_exits_in_time_committing_only_what_is_stored(
    fault: str,
    tmp_path: Path,
    kafka: PrivateKafka,
    nats_url: str,
    nc: NatsClient,
    jetstream: JetStreamContext,
    unique_name: str,
    bridge_process: BridgeFactory,
) -> None:
    """Kafka freezes (SIGSTOP) or dies (SIGKILL) while the bridge copies a backlog; 2 s later,
    with fetches, commits and heartbeats unanswered or refused, SIGTERM: exit 0 within the drain
    timeout + margin, no traceback. Once Kafka is back, no partition's commit is past what the
    stream holds, and a second bridge copies the rest: every record stored exactly once."""
    topic = await create_topic(kafka.bootstrap, unique_name, PARTITIONS)
    await fill_topic(kafka.bootstrap, topic, RECORDS, PARTITIONS)
    stream, group = unique_name.upper(), f"bridge-{unique_name}"
    mapping = write_mapping(
        tmp_path / "m.yaml", nats_url=nats_url, bootstrap=kafka.bootstrap, stream=stream, topic=topic, group=group
    )
    bridge = bridge_process(mapping)
    bridge.start()
    await wait_for_count(nc, stream, RECORDS // 20, timeout=90, bridges=[bridge])
    if fault == "frozen":
        kafka.freeze()
    else:
        await asyncio.to_thread(kafka.kill)
    await asyncio.sleep(2.0)  # what was fetched is stored; the next fetches and commits hang or fail
    assert bridge.alive(), f"the bridge exited when Kafka went away:\n{bridge.log()}"
    code, took = await sigterm(bridge)
    stored_at_exit = await stream_count(nc, stream)
    assert_clean_exit(bridge, code, took)
    assert stored_at_exit < RECORDS, "everything was copied before Kafka went away: nothing tested"

    await asyncio.to_thread(kafka.start)  # thaws the frozen one; starts the killed one again
    committed = await committed_offsets(kafka.bootstrap, group, topic, PARTITIONS)
    records = await stored_records(nc, stream)
    stored = {p: [o for q, o, _ in records if q == p] for p in range(PARTITIONS)}
    assert sum(committed.values()) > 0, "nothing was committed before Kafka went away"
    for partition, offset in committed.items():
        assert offset <= contiguous_prefix(stored[partition]), (
            f"partition {partition} committed to {offset}, past what JetStream stored "
            f"({contiguous_prefix(stored[partition])} in a row from 0)"
        )

    again = bridge_process(mapping)
    again.start()
    await wait_for_count(nc, stream, RECORDS, timeout=120, bridges=[again])
    await asyncio.sleep(1.0)  # anything stored twice would arrive now
    records = await stored_records(nc, stream)
    per_partition = RECORDS // PARTITIONS
    for partition in range(PARTITIONS):
        offsets = sorted(o for p, o, _ in records if p == partition)
        assert offsets == list(range(per_partition)), (
            f"partition {partition}: {len(offsets)} stored, {len(set(offsets))} distinct, wanted "
            f"0..{per_partition - 1} once each; {describe_duplicates(records)}"
        )
    code, took = await sigterm(again)
    assert_clean_exit(again, code, took)


# --- Kafka down when the bridge starts ------------------------------------------------------------


async def _start_then_sigterm(bridge: BridgeProcess, delay: float) -> tuple[int, float]:
    """Start the bridge; once its routes start (the phase is read), wait `delay` s, SIGTERM it."""
    bridge.start()
    deadline = time.monotonic() + 60
    while "phase shadow" not in bridge.log_path.read_text(errors="replace"):
        if not bridge.alive() or time.monotonic() > deadline:
            break  # it gave up by itself (Kafka refused), or never got that far: SIGTERM now
        await asyncio.sleep(0.05)
    await asyncio.sleep(delay)
    return await sigterm(bridge)


DELAYS = (0.0, 0.5, 1.5, 4.0)  # after the routes start: connecting, bootstrapping, waiting to join


@pytest.mark.parametrize("down", ["frozen", "nothing listening"])
async def test_sigterm_while_kafka_is_down_since_start_exits_in_time(
    down: str,
    tmp_path: Path,
    kafka: PrivateKafka,
    nats_url: str,
    jetstream: JetStreamContext,
    unique_name: str,
    bridge_process: BridgeFactory,
) -> None:
    """Bridges started while Kafka is frozen (TCP connects, nothing answers: aiokafka waits 40 s
    for its first metadata) or while nothing listens on its port (refused at once), SIGTERMed at
    several moments of their start (side by side, one per delay): each exits within the drain
    timeout + margin without a traceback. A refused bootstrap may end the bridge first, by itself:
    then with exit 2 and one `error:` line saying Kafka is not reachable."""
    if down == "frozen":
        bootstrap = kafka.bootstrap
        kafka.freeze()
    else:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            bootstrap = f"127.0.0.1:{sock.getsockname()[1]}"  # nothing listens once it is closed
    bridges = []
    for index, delay in enumerate(DELAYS):
        stream = f"{unique_name.upper()}_{index}"
        mapping = write_mapping(
            tmp_path / f"m{index}.yaml",
            nats_url=nats_url,
            bootstrap=bootstrap,
            stream=stream,
            topic=unique_name,
            group=f"bridge-{unique_name}-{index}",
        )
        bridges.append((bridge_process(mapping), delay))
    results = await asyncio.gather(*(_start_then_sigterm(bridge, delay) for bridge, delay in bridges))
    kafka.thaw()
    for (bridge, delay), (code, took) in zip(bridges, results, strict=True):
        print(f"{bridge.log_path.name}: SIGTERM {delay:g}s after the routes started")
        assert_clean_exit(bridge, code, took, may_fail="" if down == "frozen" else "is not reachable")


# --- Kafka refusing the login ---------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
async def test_sigterm_while_kafka_refuses_the_login_exits_in_time(
    mechanism: str,
    tmp_path: Path,
    nats_url: str,
    secure_kafka: SecureKafka,  # noqa: F811  (the fixture imported above)
    secure_topic: TopicFactory,  # noqa: F811
    jetstream: JetStreamContext,
    bridge_process: BridgeFactory,
) -> None:
    """A bridge whose SASL password Kafka refuses: left alone it ends by itself, exit 2, one
    `error:` line naming the refused login, within the bound; SIGTERMed while it is still
    connecting, it exits 0 (or that same exit 2) within the bound; never a traceback."""
    topic = await secure_topic(1)
    bootstrap, settings = settings_for(mechanism, secure_kafka)
    runs: list[tuple[BridgeProcess, float | None]] = []
    for index, delay in enumerate((None, 0.0, 0.5, 1.5)):
        mapping = write_secure_mapping(
            tmp_path / f"m{index}.yaml", nats_url=nats_url, bootstrap=bootstrap, topic=topic, source=settings
        )
        bridge = bridge_process(mapping)
        bridge.env = {"KAFKA_PASSWORD": WRONG_PASSWORD}
        runs.append((bridge, delay))

    async def one(bridge: BridgeProcess, delay: float | None) -> tuple[int, float]:
        if delay is not None:
            return await _start_then_sigterm(bridge, delay)
        bridge.start()
        started = time.monotonic()
        assert bridge.process is not None
        while bridge.process.poll() is None and time.monotonic() - started < DRAIN_TIMEOUT + MARGIN:
            await asyncio.sleep(0.05)
        if bridge.process.poll() is None:
            raise AssertionError(
                f"a bridge whose login Kafka refuses still runs {DRAIN_TIMEOUT + MARGIN:g}s after its start:\n"
                f"{bridge.log()}"
            )
        return bridge.process.returncode, 0.0

    results = await asyncio.gather(*(one(bridge, delay) for bridge, delay in runs))
    refused = f"refused the SASL {mechanism} login of user '{secure_kafka.user}'"
    for (bridge, delay), (code, took) in zip(runs, results, strict=True):
        text = bridge.log_path.read_text(errors="replace")
        print(f"{bridge.log_path.name}: " + ("left alone" if delay is None else f"SIGTERM {delay:g}s after start"))
        if delay is None:
            assert code == 2, f"left alone, exit code {code}\n{bridge.log()}"
        assert_clean_exit(bridge, code, took, may_fail=refused)
        assert secure_kafka.password not in text
        assert WRONG_PASSWORD not in text
