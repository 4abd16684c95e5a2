"""RabbitMQ over TLS: `nats-bridge run` against a node that speaks only amqps.

The node is compose/rabbitmq-secure (a second local node beside the one of compose/brokers):
verify_peer against a test CA, PLAIN for users with a password, EXTERNAL for client
certificates (the certificate's CN is the user). Each case runs the real CLI as an operator
does, with the password only in the process environment (`${VAR}` in the mapping file), and
reads what it copied back from JetStream. The failures must be one clear line naming RabbitMQ,
the URL with `***` for the password, and the cause; and no line the bridge writes may hold the
password.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import pytest
from kafka_helpers import ROOT, BridgeProcess, wait_for_count
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js import api as js_api
from yarl import URL

pytestmark = [pytest.mark.rabbitmq, pytest.mark.nats]

SCRIPT = ROOT / "compose" / "rabbitmq-secure"
ADMIN_CONNECTION = "pytest-admin"  # the tests' own connection, told apart from the bridge's
PASSWORD_VAR = "SECURE_RABBIT_PASSWORD"
MESSAGES = 50


@dataclass(frozen=True)
class SecureRabbit:
    """What `compose/rabbitmq-secure env` prints."""

    url: str
    user: str
    password: str
    external_user: str
    ca_file: str
    cert_file: str
    key_file: str
    log: str

    @property
    def ca_key_file(self) -> str:
        return str(Path(self.ca_file).with_name("ca.key"))


def _script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="session")
def secure_rabbit() -> Iterator[SecureRabbit]:
    """The amqps node, started if it is not running. It is left running for the next session
    (BRIDGE_TEST_STOP_BROKERS=1 stops it if this session started it). A node that cannot start
    fails the tests, as every missing broker does (tests/conftest.py): never skipped."""
    was_up = _script("status", timeout=30).returncode == 0
    try:
        started = _script("start", timeout=300)
        failure = None if started.returncode == 0 else f"exited {started.returncode}:\n{started.stdout}{started.stderr}"
    except subprocess.TimeoutExpired:
        failure = "did not finish within 300s"
    if failure is not None:
        pytest.fail(f"compose/rabbitmq-secure start {failure}".rstrip(), pytrace=False)
    printed = _script("env", timeout=60)
    assert printed.returncode == 0, printed.stderr
    values: dict[str, str] = {}
    for line in printed.stdout.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export":
            name, _, value = words[1].partition("=")
            values[name.removeprefix("RABBITMQ_SECURE_").lower()] = value
    yield SecureRabbit(**{field: values[field] for field in SecureRabbit.__dataclass_fields__})
    if not was_up and os.environ.get("BRIDGE_TEST_STOP_BROKERS") == "1":
        _script("stop", timeout=120)


# --- helpers ------------------------------------------------------------------------------------


async def admin_connection(secure: SecureRabbit) -> aio_pika.abc.AbstractConnection:
    """The tests' own connection: password over TLS, no client certificate (the node allows it)."""
    url = URL(secure.url)
    context = ssl.create_default_context(cafile=secure.ca_file)
    return await aio_pika.connect(
        URL.build(scheme="amqps", host=url.host or "", port=url.port, user=secure.user, password=secure.password),
        ssl_context=context,
        client_properties={"connection_name": ADMIN_CONNECTION},
    )


def write_mapping(path: Path, nats_url: str, name: str, source: str) -> Path:
    """Service NAME copies exchange NAME (shadow route `r`) into stream NAME.upper()."""
    path.write_text(
        textwrap.dedent(f"""\
            nats: {{servers: ["{nats_url}"]}}
            streams:
              - name: {name.upper()}
                subjects: ["{name}.>"]
            sources:
              secure:
                type: rabbitmq
            """)
        + textwrap.indent(textwrap.dedent(source), "    ")
        + textwrap.dedent(f"""\
            services:
              {name}:
                routes:
                  - {{name: r, source: secure, from: {{exchange: {name}, bindings: ["#"]}}, to: "{name}.{{rk}}"}}
            """)
    )
    return path


def password_source(secure: SecureRabbit, *, client_cert: bool = True) -> str:
    lines = [
        f'url: "{secure.url}"',
        f"username: {secure.user}",
        f'password: "${{{PASSWORD_VAR}}}"',
        f"tls_ca_file: {secure.ca_file}",
    ]
    if client_cert:
        lines += [f"tls_cert_file: {secure.cert_file}", f"tls_key_file: {secure.key_file}"]
    return "\n".join(lines) + "\n"


def external_source(secure: SecureRabbit, cert_file: str, key_file: str) -> str:
    return textwrap.dedent(f"""\
        url: "{secure.url}"
        auth_mechanism: EXTERNAL
        tls_ca_file: {secure.ca_file}
        tls_cert_file: {cert_file}
        tls_key_file: {key_file}
        """)


def bridge_connections(secure: SecureRabbit) -> list[dict[str, Any]]:
    """The node's client connections other than the tests' own, as rabbitmqctl reports them."""
    items = ["user", "auth_mechanism", "ssl", "ssl_protocol", "peer_cert_subject", "client_properties"]
    listed = _script("rabbitmqctl", "list_connections", "-q", "--formatter", "json", *items, timeout=60)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    connections = json.loads(listed.stdout or "[]")
    return [c for c in connections if ["connection_name", "longstr", ADMIN_CONNECTION] not in c["client_properties"]]


def assert_password_absent(output: str, *passwords: str) -> None:
    """No line holds a password, as written, percent-encoded (as in a URL) or JSON-escaped."""
    for password in passwords:
        forms = {password, quote(password, safe=""), json.dumps(password)[1:-1]}
        for number, line in enumerate(output.splitlines(), 1):
            leaked = [form for form in forms if form in line]
            assert not leaked, f"line {number} of the bridge's output holds the password: {line!r}"


async def consumed(connection: aio_pika.abc.AbstractConnection, queue: str) -> bool:
    """True once the bridge consumes its shadow queue (then a published message is routed to it)."""
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
    except aio_pika.exceptions.ChannelClosed:
        return False
    finally:
        if not channel.is_closed:
            await channel.close()
    return (declared.declaration_result.consumer_count or 0) >= 1


async def stored_ids(nc: NatsClient, stream: str) -> list[str]:
    js = nc.jetstream(timeout=20)
    total = (await js.stream_info(stream)).state.messages
    subscription = await js.pull_subscribe("", stream=stream, config=js_api.ConsumerConfig(ack_policy="none"))
    ids: list[str] = []
    while len(ids) < total:
        for message in await subscription.fetch(min(500, total - len(ids)), timeout=20):
            ids.append((message.headers or {}).get("Nats-Msg-Id", ""))
    await subscription.unsubscribe()
    return ids


def run_until_exit(mapping: Path, env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    """`nats-bridge run` that is expected to give up by itself: (exit status, everything it wrote)."""
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "run", str(mapping), "--log-level", "debug"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
    )
    return done.returncode, done.stdout + done.stderr


def error_line(output: str) -> str:
    """The one `error:` line of a failed run; no traceback anywhere."""
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


@pytest.fixture
async def cleanup(secure_rabbit: SecureRabbit, unique_name: str) -> AsyncIterator[None]:
    """Deletes the test's shadow queue and exchange on the node afterwards."""
    yield
    connection = await admin_connection(secure_rabbit)
    try:
        channel = await connection.channel()
        await channel.queue_delete(f"nats-bridge.{unique_name}.r")
        await channel.exchange_delete(unique_name)
    finally:
        await connection.close()


async def start_consuming(bridge: BridgeProcess, secure: SecureRabbit, name: str) -> None:
    """Declare exchange NAME, start the bridge and wait until it consumes its shadow queue."""
    connection = await admin_connection(secure)
    try:
        channel = await connection.channel()
        await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
        bridge.start()
        deadline = time.monotonic() + 60
        while not await consumed(connection, f"nats-bridge.{name}.r"):
            assert bridge.alive(), f"the bridge exited:\n{bridge.log()}"
            assert time.monotonic() < deadline, f"the bridge did not consume within 60s:\n{bridge.log()}"
            await asyncio.sleep(0.2)
    finally:
        await connection.close()


async def publish(secure: SecureRabbit, name: str, numbers: range) -> None:
    """Messages `m-<n>` to exchange NAME, confirmed and routed (mandatory)."""
    connection = await admin_connection(secure)
    try:
        exchange = await (await connection.channel()).get_exchange(name)
        for n in numbers:
            message = aio_pika.Message(str(n).encode(), message_id=f"m-{n}")
            await exchange.publish(message, routing_key=f"order.{n}", mandatory=True)
    finally:
        await connection.close()


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


async def copy_through_bridge(
    bridge: BridgeProcess, secure: SecureRabbit, nc: NatsClient, name: str
) -> list[dict[str, Any]]:
    """Start the bridge, publish MESSAGES, wait until the stream has them all; return the
    bridge's connections to the node as seen while it runs; stop it (exit 0)."""
    await start_consuming(bridge, secure, name)
    await publish(secure, name, range(MESSAGES))
    await wait_for_count(nc, name.upper(), MESSAGES, timeout=60, bridges=[bridge])
    seen = await asyncio.to_thread(bridge_connections, secure)
    for _ in range(50):  # a node just started still lists compose/rabbitmq-secure's own check logins
        if len(seen) <= 1:
            break
        await asyncio.sleep(0.2)
        seen = await asyncio.to_thread(bridge_connections, secure)
    assert bridge.terminate() == 0, bridge.log()
    assert sorted(await stored_ids(nc, name.upper())) == sorted(f"{name}/r/m-{i}" for i in range(MESSAGES))
    return seen


# --- the cases ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("cleanup")
@pytest.mark.parametrize("client_cert", [True, False], ids=["with-client-cert", "ca-only"])
async def test_amqps_with_password_copies_an_exchange(
    tmp_path: Path,
    secure_rabbit: SecureRabbit,
    nats_url: str,
    nc: NatsClient,
    jetstream: JetStreamContext,
    unique_name: str,
    client_cert: bool,
) -> None:
    """PLAIN over TLS, the password from the environment: verify_peer with or without a client
    certificate (fail_if_no_peer_cert = false), and the copy is complete."""
    mapping = write_mapping(
        tmp_path / "m.yaml", nats_url, unique_name, password_source(secure_rabbit, client_cert=client_cert)
    )
    bridge = BridgeProcess(
        mapping, tmp_path / "bridge.log", ["--log-level", "debug"], env={PASSWORD_VAR: secure_rabbit.password}
    )
    try:
        seen = await copy_through_bridge(bridge, secure_rabbit, nc, unique_name)
    finally:
        if bridge.alive():
            bridge.kill()
    (mine,) = seen
    assert mine["user"] == secure_rabbit.user
    assert mine["auth_mechanism"] == "PLAIN"
    assert mine["ssl"] is True
    assert mine["ssl_protocol"] in ("tlsv1.3", "tlsv1.2")
    if client_cert:
        assert f"CN={secure_rabbit.external_user}" in mine["peer_cert_subject"]
    else:
        assert mine["peer_cert_subject"] == ""
    output = bridge.log_path.read_text()
    assert "Traceback" not in output
    assert "bridge stopped" in output
    assert_password_absent(output, secure_rabbit.password)


@pytest.mark.usefixtures("cleanup")
async def test_amqps_external_the_client_certificate_is_the_user(
    tmp_path: Path,
    secure_rabbit: SecureRabbit,
    nats_url: str,
    nc: NatsClient,
    jetstream: JetStreamContext,
    unique_name: str,
) -> None:
    """EXTERNAL: no user or password anywhere; RabbitMQ takes the user from the certificate's CN."""
    source = external_source(secure_rabbit, secure_rabbit.cert_file, secure_rabbit.key_file)
    mapping = write_mapping(tmp_path / "m.yaml", nats_url, unique_name, source)
    bridge = BridgeProcess(mapping, tmp_path / "bridge.log", ["--log-level", "debug"])
    try:
        seen = await copy_through_bridge(bridge, secure_rabbit, nc, unique_name)
    finally:
        if bridge.alive():
            bridge.kill()
    (mine,) = seen
    assert mine["user"] == secure_rabbit.external_user
    assert mine["auth_mechanism"] == "EXTERNAL"
    assert mine["ssl"] is True
    assert f"CN={secure_rabbit.external_user}" in mine["peer_cert_subject"]
    output = bridge.log_path.read_text()
    assert "Traceback" not in output
    assert_password_absent(output, secure_rabbit.password)


async def test_wrong_password_fails_in_one_clear_line(
    tmp_path: Path, secure_rabbit: SecureRabbit, nats_url: str, jetstream: JetStreamContext, unique_name: str
) -> None:
    """One `error:` line naming RabbitMQ, the URL with *** for the password and the mechanism;
    a non-zero exit; neither the wrong password nor the right one anywhere in the output."""
    wrong = f"wrong:{unique_name}@/%"
    mapping = write_mapping(tmp_path / "m.yaml", nats_url, unique_name, password_source(secure_rabbit))
    code, output = await asyncio.to_thread(run_until_exit, mapping, {PASSWORD_VAR: wrong})
    assert code != 0, output
    line = error_line(output)
    assert "RabbitMQ" in line, line
    assert f"amqps://{secure_rabbit.user}:***@{URL(secure_rabbit.url).host}:{URL(secure_rabbit.url).port}/" in line
    assert "ACCESS_REFUSED" in line, line
    assert "PLAIN" in line, line
    assert_password_absent(output, wrong, secure_rabbit.password)


def _write_leaf(cert: Any, directory: Path, name: str) -> tuple[str, str]:
    """A trustme LeafCert as (certificate file, key file)."""
    cert_file, key_file = directory / f"{name}.pem", directory / f"{name}.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return str(cert_file), str(key_file)


def _issue_with_node_ca(secure: SecureRabbit, common_name: str, directory: Path) -> tuple[str, str]:
    """A client certificate for COMMON_NAME signed by the node's own test CA."""
    import trustme

    ca = trustme.CA.from_pem(Path(secure.ca_file).read_bytes(), Path(secure.ca_key_file).read_bytes())
    return _write_leaf(ca.issue_cert("client.invalid", common_name=common_name), directory, "issued")


@pytest.mark.parametrize("auth", ["EXTERNAL", "PLAIN"])
async def test_client_certificate_the_node_does_not_trust_fails_clearly(
    tmp_path: Path,
    secure_rabbit: SecureRabbit,
    nats_url: str,
    jetstream: JetStreamContext,
    unique_name: str,
    auth: str,
) -> None:
    """A certificate from another CA, with the right CN: the TLS handshake fails (the node
    verifies every certificate it is shown, also for password logins), in one line."""
    import trustme

    rogue = trustme.CA().issue_cert("client.invalid", common_name=secure_rabbit.external_user)
    cert_file, key_file = _write_leaf(rogue, tmp_path, "rogue")
    if auth == "EXTERNAL":
        source = external_source(secure_rabbit, cert_file, key_file)
    else:
        source = password_source(secure_rabbit, client_cert=False)
        source += f"tls_cert_file: {cert_file}\ntls_key_file: {key_file}\n"
    mapping = write_mapping(tmp_path / "m.yaml", nats_url, unique_name, source)
    code, output = await asyncio.to_thread(run_until_exit, mapping, {PASSWORD_VAR: secure_rabbit.password})
    assert code != 0, output
    line = error_line(output)
    assert "RabbitMQ at amqps://" in line, line
    assert "UNKNOWN_CA" in line, line
    assert_password_absent(output, secure_rabbit.password)


async def test_trusted_certificate_of_no_user_is_refused_with_external(
    tmp_path: Path, secure_rabbit: SecureRabbit, nats_url: str, jetstream: JetStreamContext, unique_name: str
) -> None:
    """A certificate of the node's own CA whose CN is no user: TLS passes, EXTERNAL login fails.
    So it is the CN that logs in, not any trusted certificate."""
    cert_file, key_file = _issue_with_node_ca(secure_rabbit, f"stranger-{unique_name}", tmp_path)
    mapping = write_mapping(
        tmp_path / "m.yaml", nats_url, unique_name, external_source(secure_rabbit, cert_file, key_file)
    )
    code, output = await asyncio.to_thread(run_until_exit, mapping, {})
    assert code != 0, output
    line = error_line(output)
    assert "RabbitMQ at amqps://127.0.0.1" in line, line
    assert "auth=external" in line, line
    assert "ACCESS_REFUSED" in line, line
    assert "EXTERNAL" in line, line


async def test_a_bridge_that_does_not_trust_the_node_refuses_it(
    tmp_path: Path, secure_rabbit: SecureRabbit, nats_url: str, jetstream: JetStreamContext, unique_name: str
) -> None:
    """Without tls_ca_file the system CAs apply and the node's test CA is not among them:
    certificate verification is on, the connection fails before any password is sent."""
    source = password_source(secure_rabbit).replace(f"tls_ca_file: {secure_rabbit.ca_file}\n", "")
    mapping = write_mapping(tmp_path / "m.yaml", nats_url, unique_name, source)
    code, output = await asyncio.to_thread(run_until_exit, mapping, {PASSWORD_VAR: secure_rabbit.password})
    assert code != 0, output
    line = error_line(output)
    assert "RabbitMQ at amqps://" in line, line
    assert "CERTIFICATE_VERIFY_FAILED" in line, line
    assert_password_absent(output, secure_rabbit.password)


@pytest.mark.usefixtures("cleanup")
async def test_node_restart_the_bridge_logs_in_again_and_never_shows_the_password(
    tmp_path: Path,
    secure_rabbit: SecureRabbit,
    nats_url: str,
    nc: NatsClient,
    jetstream: JetStreamContext,
    unique_name: str,
) -> None:
    """The node stops under a running bridge (password login, client certificate): every retry
    logs the URL, /status carries the last error; once the node is back the bridge logs in again
    over TLS and copies on, nothing lost. No log line, /status or /metrics body holds the password.

    A graceful stop, not SIGKILL: RabbitMQ 3.10 can lose a quorum queue declared a moment before
    a SIGKILL (its Ra registration is not yet on disk), which is not what this test is about."""
    stream = unique_name.upper()
    mapping = write_mapping(tmp_path / "m.yaml", nats_url, unique_name, password_source(secure_rabbit))
    bridge = BridgeProcess(mapping, tmp_path / "bridge.log", env={PASSWORD_VAR: secure_rabbit.password})
    bodies: list[str] = []
    try:
        await start_consuming(bridge, secure_rabbit, unique_name)
        await publish(secure_rabbit, unique_name, range(MESSAGES))
        await wait_for_count(nc, stream, MESSAGES, timeout=60, bridges=[bridge])
        base = await bridge.http_url()
        stopped = await asyncio.to_thread(_script, "stop", timeout=120)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        await bridge.wait_for_log("retrying in", timeout=60)
        bodies.append(await asyncio.to_thread(http_get, f"{base}/status"))
        started = await asyncio.to_thread(_script, "start", timeout=300)
        assert started.returncode == 0, started.stdout + started.stderr
        await bridge.wait_for_log("reconnected to RabbitMQ", timeout=120)
        await publish(secure_rabbit, unique_name, range(MESSAGES, 2 * MESSAGES))
        await wait_for_count(nc, stream, 2 * MESSAGES, timeout=60, bridges=[bridge])
        bodies += [await asyncio.to_thread(http_get, f"{base}/{path}") for path in ("status", "metrics")]
        assert bridge.terminate() == 0, bridge.log()
    finally:
        if bridge.alive():
            bridge.kill()
    expected = sorted(f"{unique_name}/r/m-{i}" for i in range(2 * MESSAGES))
    assert sorted(await stored_ids(nc, stream)) == expected
    output = bridge.log_path.read_text()
    retries = [line for line in output.splitlines() if "retrying in" in line]
    assert retries, output
    assert all(f"amqps://{secure_rabbit.user}:***@" in line for line in retries), retries
    assert_password_absent("\n".join([output, *bodies]), secure_rabbit.password)
