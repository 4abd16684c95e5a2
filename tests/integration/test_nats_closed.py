"""A NATS client that closes for good is an outage, not a silence.

nats-py 2.16 closes its client for good — no reconnect follows — on any server `-ERR` but a
stale connection or a permissions violation. The simplest real way to get one is the one
operators meet: the bridge's login is revoked (here: its password changed in the server's
config, which a reload applies to connected clients, answered with `-ERR 'Authorization
Violation'`). Every route would stall for ever while the process looks alive; instead the
bridge must exit non-zero promptly with one line saying why, acknowledge at the source only
what JetStream stored, and say it is not alive (/healthz 503) until it is gone.
"""

from __future__ import annotations

import asyncio
import signal
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka_helpers import BridgeProcess, contiguous_prefix, fill_topic, stored_offsets, wait_for_count
from nats.aio.client import Client as NatsClient
from private_nats import PrivateNatsServer
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from bridge.brokers.nats.client import ConnectionEvents, connect_nats, watch_closed
from bridge.config import NatsConfig
from bridge.jetstream.publish_types import InFlight, PublishFailure
from bridge.jetstream.publisher import JetStreamPublisher
from bridge.message import OutboundMessage
from bridge.operations.health import HealthMonitor
from bridge.operations.http import HttpAddress, serve

pytestmark = [pytest.mark.nats, pytest.mark.timeout(300)]

TopicFactory = Callable[..., Awaitable[str]]

BRIDGE_PASSWORD = "bridge-pw-5521"
CHECKER_PASSWORD = "checker-pw-7730"
PARTITIONS = 3
RECORDS = 60_000
# "Promptly": the bridge must be gone this soon after the server closed its connection. Its
# own shutdown takes well under a second; the rest is a loaded 2-core machine's margin.
EXIT_WITHIN = 10.0


def auth_config(path: Path, bridge_password: str) -> Path:
    """A server config with the bridge's user and a checker user the test reads the stream with."""
    path.write_text(
        "authorization { users: [\n"
        f'  {{user: bridge, password: "{bridge_password}"}},\n'
        f'  {{user: checker, password: "{CHECKER_PASSWORD}"}}\n'
        "] }\n"
    )
    return path


def revoke_the_bridges_login(server: PrivateNatsServer, config: Path) -> None:
    """Change the bridge's password and have the server reload: it closes the bridge's connection."""
    auth_config(config, "a-new-password-the-bridge-does-not-know")
    assert server.process is not None
    server.process.send_signal(signal.SIGHUP)


@pytest.fixture
async def auth_server(tmp_path: Path) -> AsyncIterator[tuple[PrivateNatsServer, Path]]:
    config = auth_config(tmp_path / "auth.conf", BRIDGE_PASSWORD)
    server = PrivateNatsServer(tmp_path / "nats", extra_args=("-c", str(config)))
    server.start()
    try:
        yield server, config
    finally:
        server.stop(kill=True)


def healthz(base: str) -> int:
    """/healthz's status code; 0 when nothing answers (the process is gone)."""
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets, asked of the coordinator without joining the group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) or 0 for p in range(PARTITIONS)}
    finally:
        await consumer.stop()


async def test_a_revoked_login_makes_run_exit_1_promptly_and_commit_only_what_is_stored(
    tmp_path: Path,
    auth_server: tuple[PrivateNatsServer, Path],
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    unique_name: str,
) -> None:
    server, config = auth_server
    topic = await kafka_topic(partitions=PARTITIONS)
    await fill_topic(kafka_bootstrap, topic, RECORDS, PARTITIONS)
    stream, group = unique_name.upper(), f"bridge-{unique_name}"
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        textwrap.dedent(f"""\
            nats:
              servers: ["{server.url}"]
              user: bridge
              password: ${{NATS_PASSWORD}}
            streams:
              - name: {stream}
                subjects: ["{unique_name}.>"]
            sources:
              kafka:
                type: kafka
                bootstrap_servers: ["{kafka_bootstrap}"]
            services:
              svc:
                routes:
                  - name: copy
                    source: kafka
                    from: {{topics: ["{topic}"], group: "{group}"}}
                    to: "{unique_name}.{{partition}}"
            """)
    )
    bridge = BridgeProcess(
        mapping, tmp_path / "bridge.log", args=("--http", "127.0.0.1:0"), env={"NATS_PASSWORD": BRIDGE_PASSWORD}
    )
    checker = await nats.connect(server.url, user="checker", password=CHECKER_PASSWORD, connect_timeout=5)
    try:
        bridge.start()
        base = await bridge.http_url()
        await wait_for_count(checker, stream, RECORDS // 10, timeout=120, bridges=[bridge])
        assert await asyncio.to_thread(healthz, base) == 200

        revoke_the_bridges_login(server, config)
        revoked_at = time.monotonic()
        statuses: list[int] = []
        while bridge.alive() and time.monotonic() - revoked_at < EXIT_WITHIN + 20:
            statuses.append(await asyncio.to_thread(healthz, base))
        assert bridge.process is not None
        code = await asyncio.to_thread(bridge.process.wait, 30)
        took = time.monotonic() - revoked_at
        log = bridge.log_path.read_text(errors="replace")

        assert code == 1, f"exit code {code}, wanted 1 (NATS connection lost):\n{bridge.log()}"
        assert took < EXIT_WITHIN, f"the bridge took {took:.1f}s to exit after its login was revoked"
        lines = [line for line in log.splitlines() if "NATS connection closed for good" in line]
        assert len(lines) == 1, f"wanted one line saying why:\n{bridge.log()}"
        assert "refused the bridge's login" in lines[0], lines[0]
        assert BRIDGE_PASSWORD not in log
        assert "Traceback" not in log, bridge.log()
        # Alive (200) until the server closed the connection, then 503 until nothing answered.
        assert 503 in statuses, f"/healthz never said 503 before the bridge exited: {statuses}"
        first_503 = statuses.index(503)
        assert set(statuses[:first_503]) <= {200}, statuses
        assert set(statuses[first_503:]) <= {503, 0}, statuses

        committed = await committed_offsets(kafka_bootstrap, group, topic)
        stored = await stored_offsets(checker, stream)
    finally:
        if bridge.alive():
            bridge.kill()
        await checker.close()
    assert sum(committed.values()) > 0, "nothing was committed before the revocation"
    assert sum(committed.values()) < RECORDS, "the revocation came after everything was done: nothing tested"
    for partition, offset in committed.items():
        assert offset <= contiguous_prefix(stored.get(partition, [])), (
            f"partition {partition} committed to {offset}, past what JetStream stored"
        )


class Outcomes:
    """A PublishOwner that records the outcome of each publish."""

    def __init__(self) -> None:
        self.stored: list[int] = []
        self.failures: list[tuple[int, PublishFailure]] = []

    def sendable(self, entry: InFlight) -> bool:
        return True

    def published(self, entry: InFlight, seq: int, duplicate: bool) -> None:
        self.stored.append(entry.position)

    def failed(self, entry: InFlight, failure: PublishFailure) -> None:
        self.failures.append((entry.position, failure))


async def test_once_the_client_closed_for_good_healthz_and_readyz_say_503_and_nothing_waits_for_it(
    auth_server: tuple[PrivateNatsServer, Path],
) -> None:
    """The same revocation, in process: the health endpoint's answers and the publisher's state
    once the client is closed, without the race of a process that is exiting."""
    server, config = auth_server
    events = ConnectionEvents()
    nc: NatsClient = await connect_nats(
        NatsConfig(servers=[SecretStr(server.url)], user="bridge", password=SecretStr(BRIDGE_PASSWORD)), events
    )
    try:
        await nc.jetstream().add_stream(name="CLOSED", subjects=["closed.>"])
        async with JetStreamPublisher(nc) as publisher:
            events.add(publisher)
            monitor = HealthMonitor(pipelines=[], publisher=publisher, events=events, js=nc.jetstream(), streams=[])
            http = await serve(HttpAddress("127.0.0.1", 0), monitor, CollectorRegistry())
            try:
                base = f"http://127.0.0.1:{http.addresses[0][1]}"
                assert await asyncio.to_thread(healthz, base) == 200

                revoke_the_bridges_login(server, config)
                lost = await asyncio.wait_for(events.wait_lost(), 10)
                assert "refused the bridge's login" in lost
                assert BRIDGE_PASSWORD not in lost

                assert publisher.closed == lost
                assert not publisher.connected
                assert await asyncio.to_thread(healthz, base) == 503
                status, text = await asyncio.to_thread(_get, base + "/healthz")
                assert "connection closed for good" in text
                status, text = await asyncio.to_thread(_get, base + "/readyz")
                assert status == 503
                assert "connection closed for good" in text
                assert "reconnecting" not in text  # it never will

                # A publish can neither be sent nor wait for ever: its owner abandons it and gets
                # back everything, unsent.
                owner = Outcomes()
                entries = [
                    InFlight(OutboundMessage("closed.x", b"p", f"id-{i}", {"Nats-Msg-Id": f"id-{i}"}), owner, i)
                    for i in range(3)
                ]
                abandon = asyncio.Event()
                sending = asyncio.create_task(publisher.publish(entries, abandon=abandon))
                await asyncio.sleep(0.2)
                assert not sending.done(), "the publisher sent to a closed client"
                abandon.set()
                assert await asyncio.wait_for(sending, 5) == entries
                assert owner.stored == []
                assert owner.failures == []
            finally:
                await http.cleanup()
    finally:
        events.closing = True
        if not nc.is_closed:
            await nc.close()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def test_a_client_closed_without_its_closed_callback_is_still_reported_lost(
    auth_server: tuple[PrivateNatsServer, Path],
) -> None:
    """nats-py's `_close` task can die before it calls `closed_cb` (it flushes pending publishes
    into the socket the server just closed, and that write raises). Seen in CI: the bridge kept
    every route waiting for a connection that never came back. The watchdog notices the closed
    client itself. The client here is closed the way the dying task leaves it: CLOSED, with the
    server's error recorded, and no callback."""
    server, _ = auth_server
    events = ConnectionEvents()
    config = NatsConfig(servers=[SecretStr(server.url)], user="bridge", password=SecretStr(BRIDGE_PASSWORD))
    nc: NatsClient = await connect_nats(config, events)
    watchdog = asyncio.create_task(watch_closed(nc, config, events, every=0.1))
    try:
        await asyncio.sleep(0.3)
        assert events.lost is None, "an open client is not lost"
        nc._err = nats.errors.AuthorizationError()
        nc._status = NatsClient.CLOSED  # what `_close` sets first, before the callback it never reached
        lost = await asyncio.wait_for(events.wait_lost(), 5)
        assert "refused the bridge's login" in lost
        assert watchdog.done()
    finally:
        watchdog.cancel()
        events.closing = True
        nc._status = NatsClient.CONNECTED
        await nc.close()
