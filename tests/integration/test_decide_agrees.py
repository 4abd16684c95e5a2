"""The running pipeline and `explain` give every message the same verdict (issue 15, item 1).

Both ask `bridge.decide`, so they cannot disagree; this checks it from the outside. Hypothesis
draws batches of Kafka records — tombstones, records a reverse route wrote, records without the
header their subject needs, subjects no stream captures, payloads over the server's max_payload,
plain ones — and runs each batch through a real pipeline (a memory source, a real nats-server with
a small max_payload) and through `explain`'s `route_outcome`. What the pipeline did is read back
from the streams: stored in ORDERS is "publish", a dead letter is its reason, neither is
"filtered"; explain's fate and problem must say the same for every record.
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError
from pipeline_helpers import Nats, drain
from private_nats import PrivateNatsServer, connect_like_the_bridge

from bridge.config import BridgeConfig, load_config_text
from bridge.explain import route_outcome
from bridge.headers import ORIGIN_HEADER
from bridge.message import KafkaOrigin, SourceMessage
from bridge.plan import compile_plan

pytestmark = [pytest.mark.nats, pytest.mark.timeout(600)]

MAX_PAYLOAD = 4096
TOPIC = "orders"  # partition 0: the lane pipeline_helpers.drain reads
MAPPING = """\
streams:
  - name: ORDERS
    subjects: ["orders.>"]
sources:
  k: {type: kafka, bootstrap_servers: ["unused:9092"]}
services:
  svc:
    routes:
      - name: r
        source: k
        from: {topics: [orders], tombstones: skip}
        to: "{header:area}.{key}"
"""

_KINDS = ("plain", "tombstone", "reverse-written", "no-area", "no-stream", "too-large", "headers-too-large")


def _record(offset: int, kind: str, size: int) -> SourceMessage:
    headers: list[tuple[str, bytes]] = [("area", b"orders")]
    body: bytes | None = b"x" * size
    if kind == "tombstone":
        body = None
    elif kind == "reverse-written":
        headers.append((ORIGIN_HEADER, b"nats"))
    elif kind == "no-area":
        headers = []
    elif kind == "no-stream":
        headers = [("area", b"elsewhere")]
    elif kind == "too-large":
        body = b"x" * (MAX_PAYLOAD + size)
    elif kind == "headers-too-large":
        body = b"x" * (MAX_PAYLOAD - 200)
        headers.append(("note", b"n" * 400))  # the payload alone fits; with its headers it does not
    return SourceMessage(KafkaOrigin(TOPIC, 0, offset, key=f"k{offset}".encode()), body, tuple(headers))


batches = st.lists(st.tuples(st.sampled_from(_KINDS), st.integers(0, 300)), min_size=1, max_size=40)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateNatsServer]:
    workdir = tmp_path_factory.mktemp("decide")
    config = workdir / "nats.conf"
    config.write_text(f"max_payload: {MAX_PAYLOAD}\n")
    server = PrivateNatsServer(workdir / "nats", extra_args=("-c", str(config)))
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)


def _config() -> BridgeConfig:
    return load_config_text(textwrap.dedent(MAPPING), "decide.yaml", {})


async def _what_the_pipeline_did(nc: NatsClient, count: int) -> list[tuple[str, str | None]]:
    """Per offset: ("publish", None), ("dead-letter", reason) or ("filtered", None)."""
    js = nc.jetstream(timeout=10)
    did: dict[int, tuple[str, str | None]] = {}
    for stream in ("ORDERS", "NATS_BRIDGE_DLQ"):
        with_messages = await js.stream_info(stream)
        for seq in range(with_messages.state.first_seq, with_messages.state.last_seq + 1):
            if with_messages.state.messages == 0:
                break
            message = await js.get_msg(stream, seq)
            headers = message.headers or {}
            offset = int(headers["Kafka-Offset"])
            assert offset not in did, f"offset {offset} stored twice"
            did[offset] = ("publish", None) if stream == "ORDERS" else ("dead-letter", headers["Bridge-Dlq-Reason"])
    return [did.get(offset, ("filtered", None)) for offset in range(count)]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=batches)
async def test_the_pipeline_and_explain_give_every_message_the_same_verdict(
    server: PrivateNatsServer, drawn: list[tuple[str, int]]
) -> None:
    config = _config()
    messages = [_record(offset, kind, size) for offset, (kind, size) in enumerate(drawn)]
    nc, events = await connect_like_the_bridge(server.url)
    try:
        await _purge(nc)
        await drain(Nats(nc, events), config, list(messages), timeout=60)
        did = await _what_the_pipeline_did(nc, len(messages))
    finally:
        await nc.close()
    plan = compile_plan(config)
    (route,) = plan.routes
    said = []
    for message in messages:
        outcome = route_outcome(route, message, plan.streams, max_payload=MAX_PAYLOAD)
        said.append((outcome.fate, outcome.problem))
    disagreements = [
        (offset, drawn[offset][0], did[offset], said[offset])
        for offset in range(len(messages))
        if did[offset] != said[offset]
    ]
    assert not disagreements, disagreements
    assert {fate for fate, _ in said} <= {"publish", "filtered", "dead-letter"}


async def _purge(nc: NatsClient) -> None:
    """Each example starts from empty streams (and fresh de-duplication: the ids repeat)."""
    js = nc.jetstream(timeout=10)
    for stream in ("ORDERS", "NATS_BRIDGE_DLQ"):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(stream)
