"""Shared fixtures: real brokers for the integration tests, and per-test isolation on them.

Where a broker comes from is decided once per session, for each broker on its first use, so a run
of unit tests starts none:

1. BRIDGE_TEST_DOCKER=1 and `docker info` answers: compose/docker-compose.yml through pytest-docker
   (all three brokers come up together, on the same host ports as the local ones);
2. otherwise the environment: NATS_URL, AMQP_URL (+ RABBITMQ_API_URL, optional), KAFKA_BOOTSTRAP;
3. otherwise the local processes of compose/brokers (`compose/brokers start NAME`, idempotent). They
   are left running after the session, for the next run; BRIDGE_TEST_STOP_BROKERS=1 stops those
   this session started.

A broker that can't be had fails the test (pytest.fail): it is never skipped, so CI can't pass
without it. Tests that use a broker fixture get the nats / rabbitmq / kafka marker automatically,
so `pytest -m "not kafka"` leaves Kafka alone.

Session fixtures (str): nats_url, amqp_url, kafka_bootstrap, rabbitmq_api_url (str | None).
Per-test fixtures: unique_name, nats_client, jetstream, rabbit_vhost_url, kafka_topic.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import brokers_local
import pytest

if TYPE_CHECKING:
    from nats.aio.client import Client as NATSClient
    from nats.js import JetStreamContext

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
READY_TIMEOUT = 120.0  # seconds a broker may take to answer once started

# Bridges the tests start serve /metrics etc. on a free port, not all on the default 9464
# (several run at once); a test that reads the endpoint finds the port in the bridge's log.
os.environ.setdefault("NATS_BRIDGE_HTTP", "127.0.0.1:0")


@dataclass(frozen=True)
class BrokerSpec:
    name: str  # as compose/brokers and the pytest marker call it
    env_var: str  # URL from the environment
    docker_service: str
    docker_port: int  # container port of the client listener
    fixtures: frozenset[str]  # fixtures whose use marks a test with `name`


NATS = BrokerSpec("nats", "NATS_URL", "nats", 4222, frozenset({"nats_url"}))
RABBITMQ = BrokerSpec("rabbitmq", "AMQP_URL", "rabbitmq", 5672, frozenset({"amqp_url"}))
KAFKA = BrokerSpec("kafka", "KAFKA_BOOTSTRAP", "kafka", 9092, frozenset({"kafka_bootstrap"}))
SPECS = (NATS, RABBITMQ, KAFKA)


# --- markers ------------------------------------------------------------------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a broker fixture (directly or through another fixture)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for spec in SPECS:
            if names & spec.fixtures and item.get_closest_marker(spec.name) is None:
                item.add_marker(getattr(pytest.mark, spec.name))


# --- where the brokers come from ----------------------------------------------------------------


def _host_ports(url_or_bootstrap: str, default_port: int) -> list[tuple[str, int]]:
    """host:port pairs of 'nats://a:1,nats://b:2', 'amqp://u:p@h:5672/v' or 'h1:9092,h2:9092'."""
    pairs = []
    for part in url_or_bootstrap.split(","):
        item = part.strip()
        if not item:
            continue
        split = urllib.parse.urlsplit(item if "://" in item else f"tcp://{item}")
        pairs.append((split.hostname or "127.0.0.1", split.port or default_port))
    return pairs


def _reachable(url: str, default_port: int, timeout: float) -> str | None:
    """None when some host:port of url accepts a TCP connection within timeout, else the last error."""
    deadline = time.monotonic() + timeout
    error = "no address"
    while True:
        for host, port in _host_ports(url, default_port):
            try:
                with socket.create_connection((host, port), timeout=2.0):
                    return None
            except OSError as exc:
                error = f"{host}:{port}: {exc}"
        if time.monotonic() >= deadline:
            return error
        time.sleep(0.5)


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    """pytest-docker: our compose file (used only with BRIDGE_TEST_DOCKER=1)."""
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return f"nats-bridge-test-{os.getpid()}"


@pytest.fixture(scope="session")
def _use_docker() -> bool:
    if os.environ.get("BRIDGE_TEST_DOCKER") != "1":
        return False
    try:
        proc = subprocess.run(
            ["docker", "info"], capture_output=True, timeout=30, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


class _Resolver(Protocol):
    def __call__(self, spec: BrokerSpec) -> str: ...


@pytest.fixture(scope="session")
def _broker_url(request: pytest.FixtureRequest, _use_docker: bool) -> _Resolver:
    """Resolve a broker's client URL once per session (see the module docstring for the order)."""
    default_ports = {NATS.name: 4222, RABBITMQ.name: 5672, KAFKA.name: 9092}

    def resolve(spec: BrokerSpec) -> str:
        if _use_docker:
            services = request.getfixturevalue("docker_services")
            port = services.port_for(spec.docker_service, spec.docker_port)
            url = {
                NATS.name: f"nats://127.0.0.1:{port}",
                RABBITMQ.name: f"amqp://guest:guest@127.0.0.1:{port}/",
                KAFKA.name: f"127.0.0.1:{port}",
            }[spec.name]
            source, hint = "docker", f"service {spec.docker_service} of {COMPOSE_FILE}"
        elif os.environ.get(spec.env_var):
            url = os.environ[spec.env_var]
            source, hint = "env", f"{spec.env_var} is set in the environment"
        else:
            try:
                output = brokers_local.brokers("start", spec.name)
            except brokers_local.BrokersError as exc:
                pytest.fail(f"could not start the local {spec.name} broker:\n{exc}", pytrace=False)
            url = brokers_local.broker_env()[spec.env_var]
            source, hint = "local", f"started by compose/brokers (log: compose/brokers logs {spec.name})"
            if "started in" in output and os.environ.get("BRIDGE_TEST_STOP_BROKERS") == "1":
                request.addfinalizer(lambda: brokers_local.brokers("stop", spec.name))
        error = _reachable(url, default_ports[spec.name], READY_TIMEOUT if source != "env" else 10.0)
        if error is not None:
            pytest.fail(
                f"{spec.name} broker at {url} is not reachable ({error}); {hint}."
                + (" If it is the local test broker: `compose/brokers start`." if source == "env" else ""),
                pytrace=False,
            )
        brokers_local.SOURCES[spec.name] = source
        return url

    return resolve


@pytest.fixture(scope="session")
def nats_url(_broker_url: _Resolver) -> str:
    """NATS server with JetStream: 'nats://host:port' (NATS_URL may list several, comma-separated)."""
    return _broker_url(NATS)


@pytest.fixture(scope="session")
def amqp_url(_broker_url: _Resolver) -> str:
    """RabbitMQ: 'amqp://user:password@host:port/vhost' (the default vhost; see rabbit_vhost_url)."""
    return _broker_url(RABBITMQ)


@pytest.fixture(scope="session")
def kafka_bootstrap(_broker_url: _Resolver) -> str:
    """Kafka bootstrap servers: 'host:port[,host:port...]'."""
    return _broker_url(KAFKA)


@pytest.fixture(scope="session")
def rabbitmq_api_url(request: pytest.FixtureRequest, amqp_url: str, _use_docker: bool) -> str | None:
    """RabbitMQ management HTTP API base ('http://user:password@host:port/api'), or None.

    Docker and the local broker have it; with AMQP_URL from the environment it is RABBITMQ_API_URL,
    if set. Without it, rabbit_vhost_url falls back to the vhost of amqp_url.
    """
    if _use_docker:
        port = request.getfixturevalue("docker_services").port_for(RABBITMQ.docker_service, 15672)
        return f"http://guest:guest@127.0.0.1:{port}/api"
    if os.environ.get(RABBITMQ.env_var):
        return os.environ.get("RABBITMQ_API_URL") or None
    return brokers_local.broker_env()["RABBITMQ_API_URL"]


# --- isolation ----------------------------------------------------------------------------------


@pytest.fixture
def unique_name() -> str:
    """A short unique lowercase id for this test ('t' + 8 hex digits): use it in every name a test
    creates on a broker (streams, subjects, queues, exchanges, topics, groups)."""
    return "t" + secrets.token_hex(4)


@pytest.fixture
async def nats_client(nats_url: str) -> AsyncIterator[NATSClient]:
    """A connected nats-py client, closed after the test."""
    import nats

    client = await nats.connect(servers=nats_url.split(","), connect_timeout=5, name="pytest")
    try:
        yield client
    finally:
        if not client.is_closed:
            await client.close()


@pytest.fixture
async def jetstream(nats_client: NATSClient, unique_name: str) -> AsyncIterator[JetStreamContext]:
    """A JetStream context of nats_client. After the test, every stream whose name contains
    unique_name (any case; KV buckets and object stores included) is deleted."""
    import nats.errors

    js = nats_client.jetstream(timeout=10)
    yield js
    if nats_client.is_closed or not nats_client.is_connected:
        return
    with contextlib.suppress(nats.errors.Error, TimeoutError):
        for info in await js.streams_info():
            if unique_name in info.config.name.lower():
                await js.delete_stream(info.config.name)


def _api_call(api_url: str, method: str, path: str, body: dict[str, Any] | None = None) -> None:
    """One call to the RabbitMQ management API (credentials from the URL's user info)."""
    split = urllib.parse.urlsplit(api_url.rstrip("/"))
    netloc = f"{split.hostname}:{split.port}" if split.port else str(split.hostname)
    request = urllib.request.Request(
        split._replace(netloc=netloc, path=split.path + path).geturl(),
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    user = urllib.parse.unquote(split.username or "guest")
    password = urllib.parse.unquote(split.password or "guest")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


@pytest.fixture
def rabbitmq_api(rabbitmq_api_url: str | None) -> Callable[[str, str], None]:
    """`rabbitmq_api(method, path)`: one call to the management API, for tests that change the
    broker under a running bridge (remove a vhost, a permission). Fails without an API."""
    if rabbitmq_api_url is None:
        pytest.fail("this test needs the RabbitMQ management API (RABBITMQ_API_URL)", pytrace=False)
    url = rabbitmq_api_url
    return lambda method, path: _api_call(url, method, path)


@pytest.fixture
def rabbit_vhost_url(amqp_url: str, rabbitmq_api_url: str | None, unique_name: str) -> Iterator[str]:
    """amqp_url pointing at a fresh vhost, deleted (with all its queues and connections) after.

    Made through the management API. With AMQP_URL from the environment and no RABBITMQ_API_URL,
    there is no API to ask: the fixture then returns amqp_url itself (the shared vhost), and tests
    keep apart only by naming everything with unique_name.
    """
    if rabbitmq_api_url is None:
        yield amqp_url
        return
    vhost = f"test-{unique_name}"
    quoted = urllib.parse.quote(vhost, safe="")
    split = urllib.parse.urlsplit(amqp_url)
    user = urllib.parse.unquote(split.username or "guest")
    try:
        _api_call(rabbitmq_api_url, "PUT", f"/vhosts/{quoted}")
        _api_call(
            rabbitmq_api_url,
            "PUT",
            f"/permissions/{quoted}/{urllib.parse.quote(user, safe='')}",
            {"configure": ".*", "write": ".*", "read": ".*"},
        )
    except (OSError, urllib.error.URLError) as exc:
        pytest.fail(f"could not create RabbitMQ vhost {vhost} via {rabbitmq_api_url}: {exc}", pytrace=False)
    try:
        yield split._replace(path=f"/{quoted}").geturl()
    finally:
        with contextlib.suppress(OSError, urllib.error.URLError):
            _api_call(rabbitmq_api_url, "DELETE", f"/vhosts/{quoted}")


TopicFactory = Callable[..., Awaitable[str]]


@pytest.fixture
async def kafka_topic(kafka_bootstrap: str, unique_name: str) -> AsyncIterator[TopicFactory]:
    """Factory: `topic = await kafka_topic(partitions=1, config=None)` creates a fresh topic (named
    unique_name, then unique_name-1, -2...; replication factor 1), waits until every partition has a
    leader and returns its name. The topics are deleted after the test."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=30000)
    await admin.start()
    created: list[str] = []

    async def create(partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = unique_name if not created else f"{unique_name}-{len(created)}"
        response = await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=config or {})])
        for topic, code, *rest in response.topic_errors:
            if code != 0:
                pytest.fail(f"creating Kafka topic {topic} failed: error {code} {rest}", pytrace=False)
        created.append(name)
        deadline = time.monotonic() + 30
        while True:
            (described,) = await admin.describe_topics([name])
            parts = described["partitions"]
            if (
                described["error_code"] == 0
                and len(parts) == partitions
                and all(p["error_code"] == 0 and p["leader"] >= 0 for p in parts)
            ):
                return name
            if time.monotonic() > deadline:
                pytest.fail(f"Kafka topic {name} has no leaders after 30s: {described}", pytrace=False)
            await asyncio.sleep(0.1)

    try:
        yield create
    finally:
        try:
            if created:
                with contextlib.suppress(KafkaError, TimeoutError):
                    await admin.delete_topics(created)
        finally:
            await admin.close()
