"""Kafka over TLS, mutual TLS and SASL (PLAIN, SCRAM-SHA-256/512) end to end.

The broker is compose/kafka-secure's (a second local KRaft broker that speaks only TLS, with a test
CA, a client certificate and a `bridge` user; the fixture starts it when it is down); NATS is the
usual test server. Every case runs a real `nats-bridge run` whose mapping file takes its secrets as
`${VAR}` references: over each kind of connection a few records must arrive in a stream; a wrong
password, an untrusted broker or unusable TLS files must stop the bridge with one clear line. Each
run's whole log is then checked for the passwords.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka_helpers import ROOT, BridgeProcess, stored_offsets, wait_for_count
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

pytestmark = [pytest.mark.kafka, pytest.mark.nats]

SCRIPT = ROOT / "compose" / "kafka-secure"
RECORDS = 5
WRONG_PASSWORD = "not-the-password-3e9f"


@dataclass(frozen=True)
class SecureKafka:
    """What `compose/kafka-secure env` prints."""

    sasl_bootstrap: str
    ssl_bootstrap: str
    mtls_bootstrap: str
    ca: str
    client_cert: str
    client_key: str
    client_key_password: str
    user: str
    password: str


def _script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _env() -> dict[str, str]:
    proc = _script("env", timeout=60)
    if proc.returncode != 0:
        pytest.fail(f"compose/kafka-secure env exited {proc.returncode}:\n{proc.stderr}", pytrace=False)
    found = {}
    for line in proc.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line.removeprefix("export ").partition("=")
            found[name] = shlex.split(value)[0] if value else ""
    return found


@pytest.fixture(scope="session")
def secure_kafka() -> Iterator[SecureKafka]:
    """compose/kafka-secure's broker, started if it is not running. A broker that can't be started
    fails the tests (in CI and everywhere else): they are never skipped."""
    started = False
    if _script("status", timeout=60).returncode != 0:
        proc = _script("start")
        if proc.returncode != 0:
            pytest.fail(
                f"could not start the secure Kafka broker (compose/kafka-secure start exited "
                f"{proc.returncode}; CI={os.environ.get('CI', '')}):\n{proc.stdout}{proc.stderr}",
                pytrace=False,
            )
        started = True
    env = _env()
    yield SecureKafka(
        sasl_bootstrap=env["KAFKA_SASL_BOOTSTRAP"],
        ssl_bootstrap=env["KAFKA_SSL_BOOTSTRAP"],
        mtls_bootstrap=env["KAFKA_MTLS_BOOTSTRAP"],
        ca=env["KAFKA_SECURE_CA"],
        client_cert=env["KAFKA_SECURE_CLIENT_CERT"],
        client_key=env["KAFKA_SECURE_CLIENT_KEY"],
        client_key_password=env["KAFKA_SECURE_CLIENT_KEY_PASSWORD"],
        user=env["KAFKA_SECURE_USER"],
        password=env["KAFKA_SECURE_PASSWORD"],
    )
    # like the other local brokers: left running for the next run unless asked otherwise
    if started and os.environ.get("BRIDGE_TEST_STOP_BROKERS") == "1":
        _script("stop")


TopicFactory = Callable[[int], Awaitable[str]]


@pytest.fixture
async def secure_topic(secure_kafka: SecureKafka, unique_name: str) -> AsyncIterator[TopicFactory]:
    """Factory: `await secure_topic(n)` makes topic `unique_name` on the secure broker (over one-way
    TLS) with records 0..n-1 in its one partition; the topic is deleted after the test."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError
    from aiokafka.helpers import create_ssl_context

    tls = {
        "bootstrap_servers": secure_kafka.ssl_bootstrap,
        "security_protocol": "SSL",
        "ssl_context": create_ssl_context(cafile=secure_kafka.ca),
    }
    admin = AIOKafkaAdminClient(**tls, request_timeout_ms=30000)
    await admin.start()

    async def create(count: int) -> str:
        response = await admin.create_topics([NewTopic(unique_name, 1, 1)])
        for topic, code, *rest in response.topic_errors:
            if code != 0:
                pytest.fail(f"creating Kafka topic {topic} failed: error {code} {rest}", pytrace=False)
        producer = AIOKafkaProducer(**tls, acks="all")
        await producer.start()
        try:
            for i in range(count):
                await producer.send_and_wait(unique_name, f"record {i}".encode(), key=f"k{i}".encode())
        finally:
            await producer.stop()
        return unique_name

    try:
        yield create
    finally:
        with contextlib.suppress(KafkaError, TimeoutError):
            await admin.delete_topics([unique_name])
        await admin.close()


# --- the bridge -----------------------------------------------------------------------------------


def write_secure_mapping(path: Path, *, nats_url: str, bootstrap: str, topic: str, source: dict[str, str]) -> Path:
    """A one-route mapping file: `topic` on the secure broker -> stream TOPIC (subjects `topic.>`).
    `source` holds the Kafka source's security settings (written as JSON strings, so `${VAR}`
    references stay references)."""
    lines = [
        "nats:",
        f"  servers: {json.dumps(nats_url.split(','))}",
        "streams:",
        f"  - name: {topic.upper()}",
        f'    subjects: ["{topic}.>"]',
        "sources:",
        "  kafka:",
        "    type: kafka",
        f"    bootstrap_servers: [{json.dumps(bootstrap)}]",
        *(f"    {key}: {json.dumps(value)}" for key, value in source.items()),
        "services:",
        "  svc:",
        "    routes:",
        "      - name: copy",
        "        source: kafka",
        f'        from: {{topics: ["{topic}"], group: "{topic}-bridge"}}',
        f'        to: "{topic}.{{partition}}"',
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


BridgeFactory = Callable[[Path], BridgeProcess]


def secrets_of(kafka: SecureKafka) -> list[str]:
    return [kafka.password, kafka.client_key_password, WRONG_PASSWORD]


def assert_no_secret_logged(bridge: BridgeProcess, secrets: list[str]) -> None:
    """Every line the bridge wrote (its stdout and stderr, the whole file) is free of the secrets."""
    text = bridge.log_path.read_text(errors="replace")
    assert text.strip(), "the bridge logged nothing"
    for line in text.splitlines():
        for secret in secrets:
            assert secret not in line, f"a password appears in the bridge's log: {line!r}"


def start_bridge(
    bridge_process: BridgeFactory,
    mapping: Path,
    kafka: SecureKafka,
    *,
    password: str | None = None,
    key_password: str | None = None,
) -> BridgeProcess:
    """`nats-bridge run --log-level debug` with the secrets in its environment, not in the file
    (the right ones unless `password` / `key_password` say otherwise)."""
    bridge = bridge_process(mapping)
    bridge.args = ("--log-level", "debug")
    bridge.env = {
        "KAFKA_PASSWORD": kafka.password if password is None else password,
        "KAFKA_KEY_PASSWORD": kafka.client_key_password if key_password is None else key_password,
    }
    bridge.start()
    return bridge


def settings_for(case: str, kafka: SecureKafka) -> tuple[str, dict[str, str]]:
    """(bootstrap, source settings) of a case: ssl, mtls, or a SASL mechanism over SSL."""
    if case == "ssl":
        return kafka.ssl_bootstrap, {"security_protocol": "SSL", "ssl_ca_file": kafka.ca}
    if case == "mtls":
        return kafka.mtls_bootstrap, {
            "security_protocol": "SSL",
            "ssl_ca_file": kafka.ca,
            "ssl_cert_file": kafka.client_cert,
            "ssl_key_file": kafka.client_key,
            "ssl_key_password": "${KAFKA_KEY_PASSWORD}",
        }
    return kafka.sasl_bootstrap, {
        "security_protocol": "SASL_SSL",
        "ssl_ca_file": kafka.ca,
        "sasl_mechanism": case,
        "sasl_username": kafka.user,
        "sasl_password": "${KAFKA_PASSWORD}",
    }


async def wait_for_exit(bridge: BridgeProcess, timeout: float = 60) -> int:
    """The exit code of a bridge that must stop by itself (a source it cannot use)."""
    assert bridge.process is not None
    deadline = time.monotonic() + timeout
    while (code := bridge.process.poll()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the bridge still runs {timeout:g}s after it was started; it should have stopped with an "
                f"error (a bridge that logged the failure and hangs has lost the TaskGroup's cancel in a "
                f"task that loops, e.g. HealthMonitor.run on Python 3.11):\n{bridge.log()}"
            )
        await asyncio.sleep(0.1)
    return code


# --- records arrive over every kind of secured connection -----------------------------------------


@pytest.mark.parametrize("case", ["ssl", "mtls", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_records_arrive_over_a_secured_connection(
    case: str,
    tmp_path: Path,
    nats_url: str,
    secure_kafka: SecureKafka,
    secure_topic: TopicFactory,
    bridge_process: BridgeFactory,
    nc: NatsClient,
    jetstream: JetStreamContext,
) -> None:
    """The bridge verifies the broker against the test CA (host name included), presents the client
    certificate with its passworded key (mtls), or logs in with SASL PLAIN / SCRAM over TLS; the
    records arrive in the stream once each, in order; the passwords came from the environment and
    appear nowhere in its log; SIGTERM then stops it cleanly."""
    topic = await secure_topic(RECORDS)
    bootstrap, settings = settings_for(case, secure_kafka)
    mapping = write_secure_mapping(
        tmp_path / "mapping.yaml", nats_url=nats_url, bootstrap=bootstrap, topic=topic, source=settings
    )
    text = mapping.read_text()
    assert secure_kafka.password not in text
    assert secure_kafka.client_key_password not in text

    bridge = start_bridge(bridge_process, mapping, secure_kafka)
    await wait_for_count(nc, topic.upper(), RECORDS, timeout=90, bridges=[bridge])
    assert await stored_offsets(nc, topic.upper()) == {0: list(range(RECORDS))}
    assert bridge.terminate() == 0, bridge.log()
    assert "Traceback" not in bridge.log_path.read_text()
    assert_no_secret_logged(bridge, secrets_of(secure_kafka))


async def test_mtls_listener_refuses_a_client_without_certificate(secure_kafka: SecureKafka) -> None:
    """The mtls case above proves the bridge sent its certificate: this listener takes no client
    without one (a client with only the CA cannot even bootstrap)."""
    from aiokafka.client import AIOKafkaClient
    from aiokafka.errors import KafkaConnectionError
    from aiokafka.helpers import create_ssl_context

    client = AIOKafkaClient(
        bootstrap_servers=secure_kafka.mtls_bootstrap,
        security_protocol="SSL",
        ssl_context=create_ssl_context(cafile=secure_kafka.ca),
        request_timeout_ms=5000,
    )
    try:
        with pytest.raises(KafkaConnectionError):
            await asyncio.wait_for(client.bootstrap(), 30)
    finally:
        await client.close()


# --- failures are one clear line, without a traceback or a password -------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_wrong_password_stops_the_bridge_without_traceback(
    mechanism: str,
    tmp_path: Path,
    nats_url: str,
    secure_kafka: SecureKafka,
    secure_topic: TopicFactory,
    bridge_process: BridgeFactory,
    jetstream: JetStreamContext,
) -> None:
    """A refused SASL login ends `nats-bridge run` with a non-zero exit and one `error:` line naming
    Kafka; aiokafka's line before it says the login was refused; no traceback, no password."""
    topic = await secure_topic(1)
    bootstrap, settings = settings_for(mechanism, secure_kafka)
    mapping = write_secure_mapping(
        tmp_path / "mapping.yaml", nats_url=nats_url, bootstrap=bootstrap, topic=topic, source=settings
    )
    bridge = start_bridge(bridge_process, mapping, secure_kafka, password=WRONG_PASSWORD)
    code = await wait_for_exit(bridge)
    output = bridge.log_path.read_text(errors="replace")
    assert code != 0, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert "Kafka" in errors[0], errors[0]
    assert "SaslAuthenticationFailed" in output, output
    assert_no_secret_logged(bridge, secrets_of(secure_kafka))


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
async def test_wrong_password_error_line_names_the_refused_login(
    mechanism: str,
    tmp_path: Path,
    nats_url: str,
    secure_kafka: SecureKafka,
    secure_topic: TopicFactory,
    bridge_process: BridgeFactory,
    jetstream: JetStreamContext,
) -> None:
    """The one `error:` line itself says what to fix: the SASL login (mechanism, user) was refused.
    (Today the mechanism is nowhere for PLAIN, and only in aiokafka's log line for SCRAM.)"""
    topic = await secure_topic(1)
    bootstrap, settings = settings_for(mechanism, secure_kafka)
    mapping = write_secure_mapping(
        tmp_path / "mapping.yaml", nats_url=nats_url, bootstrap=bootstrap, topic=topic, source=settings
    )
    bridge = start_bridge(bridge_process, mapping, secure_kafka, password=WRONG_PASSWORD)
    assert await wait_for_exit(bridge) != 0
    (error,) = [line for line in bridge.log_path.read_text().splitlines() if line.startswith("error:")]
    assert mechanism in error, error
    assert secure_kafka.user in error, error
    assert "Kafka" in error, error
    assert "not reachable" not in error, error


async def test_broker_not_signed_by_the_given_ca_is_refused(
    tmp_path: Path,
    nats_url: str,
    secure_kafka: SecureKafka,
    secure_topic: TopicFactory,
    bridge_process: BridgeFactory,
    jetstream: JetStreamContext,
) -> None:
    """Without the test CA (the system CAs only) the broker's certificate does not verify: the
    bridge refuses the connection and exits non-zero; TLS is verified, not merely switched on."""
    topic = await secure_topic(1)
    mapping = write_secure_mapping(
        tmp_path / "mapping.yaml",
        nats_url=nats_url,
        bootstrap=secure_kafka.ssl_bootstrap,
        topic=topic,
        source={"security_protocol": "SSL"},
    )
    bridge = start_bridge(bridge_process, mapping, secure_kafka)
    code = await wait_for_exit(bridge)
    output = bridge.log_path.read_text(errors="replace")
    assert code != 0, output
    assert "CERTIFICATE_VERIFY_FAILED" in output, output
    assert "Traceback" not in output, output


@pytest.mark.parametrize("case", ["missing CA file", "wrong key password"])
async def test_unusable_tls_files_are_one_error_line(
    case: str,
    tmp_path: Path,
    nats_url: str,
    secure_kafka: SecureKafka,
    bridge_process: BridgeFactory,
    unique_name: str,
    jetstream: JetStreamContext,
) -> None:
    """A CA file that does not exist, or a client key whose password is wrong: one `error:` line
    naming the files, exit non-zero, no traceback, no password."""
    bootstrap, settings = settings_for("mtls", secure_kafka)
    if case == "missing CA file":
        settings["ssl_ca_file"] = str(tmp_path / "no-such-ca.pem")
    mapping = write_secure_mapping(
        tmp_path / "mapping.yaml", nats_url=nats_url, bootstrap=bootstrap, topic=unique_name, source=settings
    )
    key_password = WRONG_PASSWORD if case == "wrong key password" else None
    bridge = start_bridge(bridge_process, mapping, secure_kafka, key_password=key_password)
    code = await wait_for_exit(bridge)
    output = bridge.log_path.read_text(errors="replace")
    assert code != 0, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert "Kafka TLS settings" in errors[0], errors[0]
    assert settings["ssl_ca_file"] in errors[0], errors[0]
    assert settings["ssl_key_file"] in errors[0], errors[0]
    assert_no_secret_logged(bridge, secrets_of(secure_kafka))


# --- every command logs in as the bridge does ------------------------------------------------------


async def test_traffic_command_logs_in_with_the_sources_tls_and_sasl(
    tmp_path: Path, nats_url: str, secure_kafka: SecureKafka, unique_name: str
) -> None:
    """`nats-bridge traffic` built its Kafka clients from the bootstrap servers alone, so on a
    TLS/SASL source it could not connect. It now builds them where the bridge does: the topic is
    created over SASL_SSL (SCRAM-SHA-512) and holds exactly the records sent."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.helpers import create_ssl_context

    bootstrap, settings = settings_for("SCRAM-SHA-512", secure_kafka)
    mapping = write_secure_mapping(
        tmp_path / "mapping.yaml", nats_url=nats_url, bootstrap=bootstrap, topic=unique_name, source=settings
    )
    env = {**os.environ, "KAFKA_PASSWORD": secure_kafka.password}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bridge", "traffic", str(mapping), "--count", "7"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"sent 7 records to Kafka topic '{unique_name}'" in done.stdout
    assert secure_kafka.password not in done.stdout + done.stderr

    consumer = AIOKafkaConsumer(
        bootstrap_servers=secure_kafka.ssl_bootstrap,
        security_protocol="SSL",
        ssl_context=create_ssl_context(cafile=secure_kafka.ca),
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(unique_name, p) for p in consumer.partitions_for_topic(unique_name) or ()]
        if not partitions:
            await consumer._client.force_metadata_update()  # the topic is new to this client
            partitions = [TopicPartition(unique_name, p) for p in consumer.partitions_for_topic(unique_name) or ()]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    assert partitions, f"topic {unique_name} was not created on the secure broker"
    assert sum(ends.values()) == 7
