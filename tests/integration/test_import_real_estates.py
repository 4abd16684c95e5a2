"""Proof against the real broker (issue 14, item 5): real-world-shaped definitions exports are loaded
into RabbitMQ, imported with `nats-bridge import rabbitmq` and run with `nats-bridge run`; what the
generated routes copy is, message for message, what reached the legacy queues.

Each test takes one export of tests/data/definitions/ and
1. prefixes every exchange, queue and policy name (and the policies' patterns and dead-letter
   exchanges) with the test's unique name, and loads it into a fresh vhost with
   `POST /api/definitions/<vhost>` (operator policies, which a per-vhost import leaves out, with
   `PUT /api/operator-policies/...`); the vhost is deleted afterwards;
2. runs the CLI import on that export (`--prefix <unique name>`, so the subjects are the test's own)
   and starts the bridge on the generated file as written: only ${AMQP_URL} and ${NATS_URL} come
   from the environment, the vhost from the file;
3. waits until the bridge consumes every shadow queue (declared and bound), then publishes a
   spread of messages at the protocol level: every legacy queue is hit, some messages match no
   binding, every body is unique, and every other message has no message_id (so both Msg-Id
   strategies, message_id and content hash, are exercised);
4. plays the legacy consumers (basic.get on each legacy queue) and reads every stream back.

Common to all three: each message a legacy queue received, through a route the mapping says copies
it, is in that route's stream exactly once (with its routing key, message_id and the route's name);
the stream holds nothing else, except where the generated file's comments say the stream takes a
superset; every message published last is one the legacy side receives, so once it is stored the
bridge has handled everything published before it (the shadow queue is FIFO).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import brokers_local
import pytest
from amqp_helpers import publish_without_message_id
from kafka_helpers import BridgeProcess
from nats.js import JetStreamContext
from nats.js import api as js_api
from pamqp import commands as spec

from bridge.config import FromRabbitMQ, load_config
from bridge.config.model import BridgeConfig
from bridge.routing import headers_match, topic_matches

pytestmark = [pytest.mark.nats, pytest.mark.rabbitmq]

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "definitions"
BridgeFactory = Callable[[Path], BridgeProcess]
COPY_TIMEOUT = 60.0  # seconds for the bridge to copy what was published
RETRY_TTL_MS = 2000  # the retry queue's delay in the test (the export's 120000 would take 2 minutes)
CONSISTENT_HASH_PLUGIN = "rabbitmq_consistent_hash_exchange"

# What `rabbitmq-plugins enable --online` does, run on the node with `rabbitmqctl eval` through
# compose/brokers (which knows the node's name, cookie and epmd port; rabbitmq-plugins would need all
# of them again): add the plugin to the node's enabled_plugins file, then rabbit_plugins:ensure/1
# starts what the file lists. compose/brokers rewrites that file on every start, so each run enables
# the plugin again.
ENABLE_CONSISTENT_HASH = (
    "{ok, File} = application:get_env(rabbit, enabled_plugins_file), "
    "Enabled = case file:consult(File) of {ok, [Listed]} -> Listed; _ -> [] end, "
    f"Wanted = lists:usort([{CONSISTENT_HASH_PLUGIN} | Enabled]), "
    'ok = file:write_file(File, io_lib:format("~w.~n", [Wanted])), '
    "rabbit_plugins:ensure(File)."
)


# --- the management API -------------------------------------------------------------------------


def api(api_url: str, method: str, path: str, body: Any = None) -> Any:
    """One management API call (credentials from the URL's user info); the answer's JSON or None."""
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
    request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            data = response.read()
    except urllib.error.HTTPError as error:
        raise AssertionError(f"{method} {path}: HTTP {error.code} {error.read().decode(errors='replace')}") from None
    return json.loads(data) if data else None


def exchange_types(api_url: str) -> set[str]:
    return {kind["name"] for kind in api(api_url, "GET", "/overview")["exchange_types"]}


@pytest.fixture
def management_api(rabbitmq_api_url: str | None) -> str:
    if rabbitmq_api_url is None:
        pytest.fail("these tests load definitions through the RabbitMQ management API: set RABBITMQ_API_URL")
    return rabbitmq_api_url


@pytest.fixture
def consistent_hash_exchange(management_api: str, request: pytest.FixtureRequest) -> None:
    """The x-consistent-hash exchange type on the test broker: enabled here if it is not (never skipped)."""
    if "x-consistent-hash" in exchange_types(management_api):
        return
    how = "compose/brokers rabbitmqctl eval <what rabbitmq-plugins enable --online does>"
    try:
        if brokers_local.SOURCES.get("rabbitmq") == "docker":
            project = request.getfixturevalue("docker_compose_project_name")
            command = ["docker", "compose", "-f", str(ROOT / "compose" / "docker-compose.yml"), "-p", project]
            command += ["exec", "-T", "rabbitmq", "rabbitmq-plugins", "enable", "--online", CONSISTENT_HASH_PLUGIN]
            how = " ".join(command)
            done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
            output = done.stdout + done.stderr
        else:
            output = brokers_local.rabbitmqctl("eval", ENABLE_CONSISTENT_HASH, timeout=120)
    except (brokers_local.BrokersError, OSError, subprocess.TimeoutExpired) as error:
        output = str(error)
    deadline = time.monotonic() + 20
    while "x-consistent-hash" not in exchange_types(management_api):
        if time.monotonic() > deadline:
            pytest.fail(
                f"the test RabbitMQ has no x-consistent-hash exchange type and enabling {CONSISTENT_HASH_PLUGIN} "
                f"failed ({how}):\n{output.strip()}\nEnable it on the broker the tests use "
                f"(rabbitmq-plugins enable --online {CONSISTENT_HASH_PLUGIN}) and run again.",
                pytrace=False,
            )
        time.sleep(0.5)


# --- the export ---------------------------------------------------------------------------------


@dataclass
class Estate:
    """An export loaded into the test's vhost, its generated mapping, and the bridge running it."""

    u: str  # the test's unique name: every broker-side name starts with `<u>-`
    vhost: str
    mapping: Path
    config: BridgeConfig
    text: str  # the generated mapping file, comments included
    bridge: BridgeProcess | None = None

    def name(self, legacy: str) -> str:
        return f"{self.u}-{legacy}"

    def route(self, exchange: str) -> tuple[str, str, str]:
        """(service, route, stream) of the one route shadowing legacy `exchange`."""
        (found,) = [
            (service, route)
            for service, route in self.config.routes()
            if isinstance(route.from_, FromRabbitMQ) and route.from_.exchange == self.name(exchange)
        ]
        service, route = found
        (stream,) = [
            s.name for s in self.config.streams if f"exchange '{self.name(exchange)}'" in (s.description or "")
        ]
        return service, route.name, stream


def unique_export(file: str, u: str, vhost: str, ttl_ms: int | None = None) -> dict[str, Any]:
    """The export with every exchange, queue and policy name prefixed `<u>-`, in `vhost`; policy
    patterns anchored at the start follow the names (`^order-` -> `^<u>-order-`), `.*` stays; with
    `ttl_ms`, policies' message-ttl is that."""
    document: dict[str, Any] = json.loads((DATA / file).read_text())

    def renamed(name: str) -> str:
        return f"{u}-{name}" if name else name  # "" is the default exchange

    document.pop("vhosts", None)
    for item in document.get("exchanges", []) + document.get("queues", []):
        item["name"], item["vhost"] = renamed(item["name"]), vhost
    for item in document.get("bindings", []):
        item["source"], item["destination"], item["vhost"] = (
            renamed(item["source"]),
            renamed(item["destination"]),
            vhost,
        )
    for item in document.get("policies", []) + document.get("operator_policies", []):
        pattern = item["pattern"]
        assert pattern == ".*" or pattern.startswith("^"), f"rewrite this pattern for the prefix: {pattern}"
        item["name"], item["vhost"] = renamed(item["name"]), vhost
        item["pattern"] = pattern if pattern == ".*" else "^" + re.escape(f"{u}-") + pattern[1:]
        definition = item["definition"]
        for key in ("dead-letter-exchange", "alternate-exchange"):
            if key in definition:
                definition[key] = renamed(definition[key])
        if ttl_ms is not None and "message-ttl" in definition:
            definition["message-ttl"] = ttl_ms
    return document


def load_definitions(api_url: str, vhost: str, document: Mapping[str, Any]) -> None:
    quoted = urllib.parse.quote(vhost, safe="")
    api(api_url, "POST", f"/definitions/{quoted}", {k: v for k, v in document.items() if k != "operator_policies"})
    for policy in document.get("operator_policies", []):
        body = {key: policy[key] for key in ("pattern", "apply-to", "priority", "definition") if key in policy}
        api(api_url, "PUT", f"/operator-policies/{quoted}/{urllib.parse.quote(policy['name'], safe='')}", body)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )


async def set_up(
    file: str,
    *,
    u: str,
    vhost_url: str,
    api_url: str,
    amqp_url: str,
    nats_url: str,
    tmp_path: Path,
    bridge_process: BridgeFactory,
    ttl_ms: int | None = None,
) -> Estate:
    """Load, import, run: returns once the bridge consumes every route's shadow queue."""
    vhost = urllib.parse.unquote(urllib.parse.urlsplit(vhost_url).path.lstrip("/"))
    document = unique_export(file, u, vhost, ttl_ms)
    load_definitions(api_url, vhost, document)
    exported = tmp_path / "definitions.json"
    exported.write_text(json.dumps(document, indent=1))
    mapping = tmp_path / "mapping.yaml"
    result = cli("import", "rabbitmq", str(exported), "--vhost", vhost, "--prefix", u, "--output", str(mapping))
    assert result.returncode == 0, result.stderr
    config = load_config(mapping, env={})
    assert {source.vhost for source in config.sources.values()} == {vhost}  # type: ignore[union-attr]
    estate = Estate(u, vhost, mapping, config, mapping.read_text())
    bridge = bridge_process(mapping)
    bridge.env.update({"NATS_URL": nats_url, "AMQP_URL": amqp_url})  # the vhost comes from the file
    bridge.start()
    estate.bridge = bridge
    for service, route in config.routes():
        await bridge.wait_for_log(f"consuming queue 'nats-bridge.{service}.{route.name}'", timeout=60)
    return estate


# --- publishing, consuming, reading back --------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One message as published; its body is unique in the test."""

    body: str
    exchange: str
    key: str
    headers: tuple[tuple[str, str], ...] = ()
    with_id: bool = True

    @property
    def message_id(self) -> str | None:
        return f"id-{self.body}" if self.with_id else None


async def publish(connection: aio_pika.abc.AbstractConnection, messages: Iterable[Sent]) -> None:
    """Each message, in order, routed by the broker before the next is sent: with a message_id on a
    confirming channel, without one written frame by frame (aiormq would add a message_id)."""
    confirmed = await connection.channel()
    raw = await connection.channel(publisher_confirms=False)
    try:
        for message in messages:
            headers = dict(message.headers) or None
            if message.with_id:
                exchange = await confirmed.get_exchange(message.exchange, ensure=False)
                await exchange.publish(
                    aio_pika.Message(
                        message.body.encode(),
                        message_id=message.message_id,
                        headers=headers,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=message.key,
                )
            else:
                properties = spec.Basic.Properties(delivery_mode=2, headers=headers)
                await publish_without_message_id(
                    raw, message.exchange, message.key, [message.body.encode()], properties
                )
    finally:
        await confirmed.close()
        await raw.close()


@dataclass
class Received:
    body: str
    headers: dict[str, Any] = field(default_factory=dict)

    def deaths(self) -> list[tuple[str, str]]:
        """(queue, reason) of each x-death entry: where RabbitMQ dead-lettered it from, and why."""
        entries = self.headers.get("x-death") or []
        return [(_text(entry["queue"]), _text(entry["reason"])) for entry in entries]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def drain(
    channel: aio_pika.abc.AbstractChannel, queue: str, reject: Callable[[Received], bool] = lambda _: False
) -> list[Received]:
    """What the legacy consumer of `queue` gets now: every ready message, acked (or rejected without
    requeue when `reject` says so: the consumer failed it)."""
    found = await channel.get_queue(queue, ensure=False)
    got: list[Received] = []
    while (message := await found.get(no_ack=False, fail=False)) is not None:
        received = Received(message.body.decode(), dict(message.headers or {}))
        got.append(received)
        if reject(received):
            await message.reject(requeue=False)
        else:
            await message.ack()
    return got


@dataclass(frozen=True)
class Stored:
    body: str
    route: str
    routing_key: str
    message_id: str | None


async def stored(js: JetStreamContext, stream: str) -> list[Stored]:
    """Every message of `stream`, in order."""
    total = (await js.stream_info(stream)).state.messages
    found: list[Stored] = []
    if total == 0:
        return found
    config = js_api.ConsumerConfig(ack_policy=js_api.AckPolicy.NONE)
    subscription = await js.pull_subscribe("", stream=stream, config=config)
    try:
        while len(found) < total:
            for message in await subscription.fetch(total - len(found), timeout=20):
                headers = message.headers or {}
                found.append(
                    Stored(
                        message.data.decode(),
                        headers["Bridge-Route"],
                        headers["Amqp-Routing-Key"],
                        headers.get("Amqp-Message-Id"),
                    )
                )
    finally:
        await subscription.unsubscribe()
    return found


async def wait_stored(js: JetStreamContext, stream: str, bodies: Iterable[str], estate: Estate) -> list[Stored]:
    """The stream's messages once every one of `bodies` is among them (fails after COPY_TIMEOUT)."""
    wanted = set(bodies)
    deadline = time.monotonic() + COPY_TIMEOUT
    while True:
        found = await stored(js, stream)
        missing = wanted - {message.body for message in found}
        if not missing:
            return found
        assert estate.bridge is not None
        if not estate.bridge.alive() or time.monotonic() > deadline:
            raise AssertionError(
                f"stream {stream} lacks {len(missing)} message(s) the legacy queues got, e.g. "
                f"{sorted(missing)[:5]}\n{estate.bridge.log()}"
            )
        await asyncio.sleep(0.2)


async def metric(estate: Estate, name: str, service: str, route: str, awaited: float = 0) -> float:
    """A route's counter from the bridge's /metrics (0 before it is first counted); read again for
    up to 10 s while it is below `awaited` (the bridge counts a PubAck after JetStream stored it)."""
    assert estate.bridge is not None
    url = await estate.bridge.http_url()
    labels = (f'service="{service}"', f'route="{route}"')
    deadline = time.monotonic() + 10
    while True:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
            text = await response.text()
        value = 0.0
        for line in text.splitlines():
            if line.startswith(f"nats_bridge_{name}{{") and all(label in line for label in labels):
                value = float(line.rsplit(" ", 1)[1])
        if value >= awaited or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.2)


def assert_once_each(found: list[Stored], sent: Mapping[str, Sent], route: str) -> None:
    """Each stored message is stored once, by `route`, as it was published."""
    doubled = sorted(body for body, count in Counter(m.body for m in found).items() if count > 1)
    assert not doubled, f"stored more than once: {doubled}"
    for message in found:
        original = sent[message.body]
        assert (message.route, message.routing_key, message.message_id) == (route, original.key, original.message_id)


# --- the estates --------------------------------------------------------------------------------


async def test_policies_driven_retry_loop_copies_each_message_once(
    tmp_path: Path,
    unique_name: str,
    rabbit_vhost_url: str,
    management_api: str,
    amqp_url: str,
    nats_url: str,
    jetstream: JetStreamContext,
    bridge_process: BridgeFactory,
) -> None:
    """estate-retry-policies.json: policies (and an operator policy) give `order-work` a dead-letter
    exchange `orders.retry`, whose queue `order-retry` holds each failed message for a TTL and then
    dead-letters it back into `orders`, where `order-work` (and `order-log`, which binds `order.#`)
    receive it again. The TTL is 2 s here instead of the export's 2 minutes.

    What "reached" means for the retry loop, and what a user expects: a message that comes back from
    `order-retry` is the same message a second time (RabbitMQ adds x-death, nothing else), not a
    new one. The legacy consumers see it twice (that is how a retry works on RabbitMQ); a JetStream
    consumer retries by nak/redelivery, so the stream `orders` is copied into holds each published
    message ONCE: its first copy, never the retry. The bridge does receive the retry on its shadow
    queue, and JetStream refuses it as a duplicate (same Msg-Id: the message_id, or the content hash,
    which leaves out what dead-lettering adds) — which the bridge counts — so the duplicate window
    of that stream must cover the retry delay (the importer widens it; asserted below). The retry
    exchange's own stream holds each message that reached `order-retry` (each failed message) once.
    Also checked against the broker: each queue's policy, as RabbitMQ picked it, is the one the
    importer applied.
    """
    u = unique_name
    estate = await set_up(
        "estate-retry-policies.json",
        u=u,
        vhost_url=rabbit_vhost_url,
        api_url=management_api,
        amqp_url=amqp_url,
        nats_url=nats_url,
        tmp_path=tmp_path,
        bridge_process=bridge_process,
        ttl_ms=RETRY_TTL_MS,
    )
    work, log_q, retry_q = estate.name("order-work"), estate.name("order-log"), estate.name("order-retry")
    orders_service, orders_route, orders_stream = estate.route("orders")
    retry_service, retry_route, retry_stream = estate.route("orders.retry")

    (orders_config,) = [s for s in estate.config.streams if s.name == orders_stream]
    assert orders_config.max_msgs == 50000  # every bound queue is capped at 50000 (the operator policy)
    assert orders_config.max_age is None
    assert orders_config.duplicate_window.total_seconds() * 1000 >= RETRY_TTL_MS + 120_000

    keys = [
        "order.eu.created",  # order-work and order-log
        "order.us.created",  # order-work and order-log
        "order.eu.shipped",  # order-log
        "order",  # order-log: `#` matches no word too
        "order.eu.created.late",  # order-log only: `*` is exactly one word
        "invoice.eu.created",  # no queue
        "ordering.eu.created",  # no queue
        "",  # no queue
    ]
    exchange = estate.name("orders")
    spread = [Sent(f"{u}:{n}", exchange, keys[n % len(keys)], with_id=n % 2 == 0) for n in range(32)]
    spread.append(Sent(f"{u}:marker-1", exchange, "order.marker"))
    # The legacy worker fails some order-work messages (with and without message_id): rejected, retried.
    failing = {m.body for n, m in enumerate(spread) if m.key in ("order.eu.created", "order.us.created") and n % 3 == 0}
    assert len(failing) == 3
    assert {spread_by(spread)[body].with_id for body in failing} == {True, False}

    connection = await aio_pika.connect(rabbit_vhost_url)
    try:
        await publish(connection, spread)
        channel = await connection.channel()
        first_work = await drain(channel, work, reject=lambda m: m.body in failing)
        first_log = await drain(channel, log_q)
        assert {m.body for m in first_work} >= failing

        # The retries: back in order-work (and order-log) after the TTL, carrying x-death.
        retried: list[Received] = []
        deadline = time.monotonic() + 30
        while len(retried) < len(failing):
            assert time.monotonic() < deadline, f"{len(retried)} of {len(failing)} failed messages came back"
            retried += await drain(channel, work)
            await asyncio.sleep(0.2)
        second_log = await drain(channel, log_q)
        marker = Sent(f"{u}:marker-2", exchange, "order.marker")  # routed after every retry
        await publish(connection, [marker])
        spread.append(marker)
        second_log += await drain(channel, log_q)
        assert (await channel.declare_queue(retry_q, passive=True)).declaration_result.message_count == 0
    finally:
        await connection.close()

    sent = spread_by(spread)
    assert {m.body for m in retried} == failing
    reached_retry = {m.body for m in retried if (retry_q, "expired") in m.deaths()}
    assert reached_retry == failing  # what reached order-retry, as RabbitMQ recorded it
    assert all((work, "rejected") in m.deaths() for m in retried)
    assert Counter(m.body for m in second_log) == Counter(m.body for m in retried) + Counter([marker.body])
    reached_orders = {m.body for m in first_work + first_log + retried + second_log}
    unreached = {m.body for m in spread} - reached_orders
    assert {sent[b].key for b in unreached} == {"invoice.eu.created", "ordering.eu.created", ""}

    # marker-2 follows the retries on the shadow queue: once it is stored, the bridge has sent them too.
    orders_found = await wait_stored(jetstream, orders_stream, reached_orders, estate)
    retry_found = await wait_stored(jetstream, retry_stream, reached_retry, estate)
    assert_once_each(orders_found, sent, f"{orders_service}/{orders_route}")
    assert {m.body for m in orders_found} == reached_orders  # once each, retries included; nothing else
    assert_once_each(retry_found, sent, f"{retry_service}/{retry_route}")
    assert {m.body for m in retry_found} == reached_retry
    # The retries did reach the bridge, and JetStream refused them as duplicates of their first copies.
    duplicates = await metric(estate, "messages_duplicate_total", orders_service, orders_route, len(failing))
    assert duplicates == len(failing)
    assert await metric(estate, "messages_duplicate_total", retry_service, retry_route) == 0

    # RabbitMQ picked the policies the importer picked (the winner of each queue; the test broker
    # collects no statistics, so the API shows no effective definitions: the retry loop above is
    # the proof of the dead-letter exchange and the TTL they set).
    quoted = urllib.parse.quote(estate.vhost, safe="")
    policies = {q["name"]: q.get("policy") for q in api(management_api, "GET", f"/queues/{quoted}")}
    assert [policies[q] for q in (work, log_q, retry_q)] == [
        estate.name("work-dlx"),
        estate.name("cap-everything"),
        estate.name("retry-delay"),
    ]
    dlx, work_dlx = estate.name("orders.retry"), estate.name("work-dlx")
    assert f"dead-letter-exchange '{dlx}' from policy '{work_dlx}'" in estate.text
    assert "message-ttl 2000 from policy '" + estate.name("retry-delay") in estate.text
    operator = api(management_api, "GET", f"/operator-policies/{quoted}")
    assert [policy["name"] for policy in operator] == [estate.name("ops-cap")]
    assert "max-length 50000 from operator policy '" + estate.name("ops-cap") in estate.text


def spread_by(messages: Iterable[Sent]) -> dict[str, Sent]:
    return {message.body: message for message in messages}


async def test_three_deep_chain_of_topic_headers_and_direct_exchanges_copies_what_the_queues_get(
    tmp_path: Path,
    unique_name: str,
    rabbit_vhost_url: str,
    management_api: str,
    amqp_url: str,
    nats_url: str,
    jetstream: JetStreamContext,
    bridge_process: BridgeFactory,
) -> None:
    """estate-exchange-chain.json: producers publish to the topic exchange `ingress`; `audit` is bound
    there, everything `eu.#` goes on to the internal topic exchange `regions`, which feeds `eu-orders`
    (`*.orders.#`), the internal headers exchange `eu-billing` (`eu.billing.*`, then format=pdf into
    `eu-invoices-pdf`) and the internal direct exchange `eu-ops` (`eu.ops.alert` into `eu-alerts`).

    The import shadows `ingress` alone, bound with the keys composed through the chain. Expected:
    each message any of the four queues received is in the stream once; the only others are the
    superset the file's comments declare: a topic binding cannot test headers, so messages that pass
    `eu.billing.*` but not format=pdf are copied though no queue gets them. Nothing else: not `eu.#`
    traffic that no queue behind `regions` takes, nor what `ingress` drops (`us.*`, unbound keys).
    """
    u = unique_name
    estate = await set_up(
        "estate-exchange-chain.json",
        u=u,
        vhost_url=rabbit_vhost_url,
        api_url=management_api,
        amqp_url=amqp_url,
        nats_url=nats_url,
        tmp_path=tmp_path,
        bridge_process=bridge_process,
    )
    assert [route.from_.exchange for _, route in estate.config.routes()] == [estate.name("ingress")]  # type: ignore[union-attr]
    service, route, stream = estate.route("ingress")
    assert "headers) selects by arguments" in estate.text  # the superset is declared

    pdf, csv = (("format", "pdf"),), (("format", "csv"),)
    shapes: list[tuple[str, tuple[tuple[str, str], ...]]] = [
        ("audit.login", ()),  # audit
        ("audit", ()),  # audit
        ("audit.eu.orders.x", ()),  # audit
        ("eu.orders", ()),  # eu-orders
        ("eu.orders.new", ()),  # eu-orders
        ("eu.orders.new.priority", pdf),  # eu-orders
        ("eu.billing.invoice", pdf),  # eu-invoices-pdf
        ("eu.billing.invoice", csv),  # no queue: superset (headers)
        ("eu.billing.refund", ()),  # no queue: superset (headers)
        ("eu.billing.invoice.v2", pdf),  # no queue: eu.billing.* is three words
        ("eu.ops.alert", ()),  # eu-alerts
        ("eu.ops.warning", ()),  # no queue
        ("eu.misc", ()),  # no queue
        ("eu", ()),  # no queue
        ("us.orders.new", ()),  # no queue: ingress passes only eu.# on
        ("", ()),  # no queue
        ("other.thing", pdf),  # no queue
    ]
    exchange = estate.name("ingress")
    spread = [
        Sent(f"{u}:{n}", exchange, key, headers, with_id=(n // len(shapes) + n) % 2 == 0)
        for n, (key, headers) in enumerate(shapes * 2)
    ]
    spread.append(Sent(f"{u}:marker", exchange, "audit.marker"))
    sent = spread_by(spread)
    legacy = ["audit", "eu-orders", "eu-invoices-pdf", "eu-alerts"]

    connection = await aio_pika.connect(rabbit_vhost_url)
    try:
        await publish(connection, spread)
        channel = await connection.channel()
        received = {queue: await drain(channel, estate.name(queue)) for queue in legacy}
    finally:
        await connection.close()

    for queue, got in received.items():
        assert got, f"legacy queue {queue} received nothing: the spread must hit every queue"
        assert len({m.body for m in got}) == len(got)
    reached = {m.body for got in received.values() for m in got}
    assert {m.body for m in received["eu-invoices-pdf"]} == {
        m.body for m in spread if m.key == "eu.billing.invoice" and m.headers == pdf
    }

    found = await wait_stored(jetstream, stream, reached, estate)
    assert_once_each(found, sent, f"{service}/{route}")
    extra = {m.body for m in found} - reached
    declared_superset = {
        m.body
        for m in spread
        if topic_matches("eu.billing.*", m.key)
        and not headers_match({"x-match": "all", "format": "pdf"}, dict(m.headers))
    }
    assert extra == declared_superset, (
        f"copied, but no legacy queue got them: {sorted(sent[b].key for b in extra - declared_superset)}"
    )


async def test_fanout_into_consistent_hash_copies_every_shard_once(
    tmp_path: Path,
    unique_name: str,
    rabbit_vhost_url: str,
    management_api: str,
    consistent_hash_exchange: None,
    amqp_url: str,
    nats_url: str,
    jetstream: JetStreamContext,
    bridge_process: BridgeFactory,
) -> None:
    """estate-consistent-hash.json: producers publish to the fanout `events`, which feeds the
    x-consistent-hash exchange `events-sharded`, which gives each message to ONE of three shard
    queues by a hash of its routing key (the rabbitmq_consistent_hash_exchange plugin, enabled by
    the fixture). The import copies at `events` (a shadow queue bound to the hash exchange would
    take a share of the messages away from the shards instead of copying them).

    Expected: every message published to `events` reaches exactly one shard, each shard gets some,
    and the stream holds each of them once, whichever shard it went to. Messages published to
    `events-sharded` directly reach a shard but are not copied, as the generated file's header
    says ("Messages published to 'events-sharded' directly are not copied").
    """
    u = unique_name
    estate = await set_up(
        "estate-consistent-hash.json",
        u=u,
        vhost_url=rabbit_vhost_url,
        api_url=management_api,
        amqp_url=amqp_url,
        nats_url=nats_url,
        tmp_path=tmp_path,
        bridge_process=bridge_process,
    )
    service, route, stream = estate.route("events")
    assert f"Messages published to '{estate.name('events-sharded')}' directly are not copied" in estate.text
    events, sharded = estate.name("events"), estate.name("events-sharded")
    spread = [Sent(f"{u}:{n}", events, f"user.{n}", with_id=n % 2 == 0) for n in range(60)]
    direct = [Sent(f"{u}:direct-{n}", sharded, f"user.direct.{n}", with_id=n % 2 == 0) for n in range(4)]
    marker = Sent(f"{u}:marker", events, "user.marker")
    sent = spread_by([*spread, *direct, marker])
    shards = [estate.name(f"events-shard-{i}") for i in range(3)]

    connection = await aio_pika.connect(rabbit_vhost_url)
    try:
        await publish(connection, [*spread[:30], *direct, *spread[30:], marker])
        channel = await connection.channel()
        received = {queue: await drain(channel, queue) for queue in shards}
    finally:
        await connection.close()

    for queue, got in received.items():
        assert got, f"shard {queue} received nothing"
    per_message = Counter(m.body for got in received.values() for m in got)
    assert set(per_message.values()) == {1}  # a hash exchange gives each message to ONE shard
    assert set(per_message) == set(sent)  # ... and every message to one
    through_events = {b for b in per_message if sent[b].exchange == events}

    found = await wait_stored(jetstream, stream, through_events, estate)
    assert_once_each(found, sent, f"{service}/{route}")
    assert {m.body for m in found} == through_events  # the direct ones reached a shard, as documented not copied
