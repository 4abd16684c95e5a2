"""Pure pieces of the operations code: log scrubbing, JSON lines, the latency histogram, --http."""

from __future__ import annotations

import json
import logging
import textwrap
from collections.abc import Iterator

import pytest

from bridge.config import load_config_text
from bridge.deadletters import encoded_size, fits
from bridge.errors import HttpAddressError
from bridge.latency import BUCKETS, LatencyHistogram
from bridge.logs import LogFormat, config_secrets, configure_logging
from bridge.message import OutboundMessage
from bridge.operations.http import HttpAddress

SECRET_MAPPING = """\
nats:
  servers: ["nats://bridge:${NATS_PASSWORD}@127.0.0.1:4222"]
sources:
  rabbit:
    type: rabbitmq
    url: "amqp://bridge:${AMQP_PASSWORD}@rabbit:5672/"
  kafka:
    type: kafka
    bootstrap_servers: ["k:9092"]
    security_protocol: SASL_SSL
    sasl_mechanism: PLAIN
    sasl_username: bridge
    sasl_password: ${KAFKA_PASSWORD}
services:
  svc:
    routes:
      - {name: r, source: kafka, from: {topics: [t]}, to: "t.{partition}"}
"""


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging rewires the root logger; later tests must get it back as it was."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


SECRETS = {"NATS_PASSWORD": "n4ts-pass", "AMQP_PASSWORD": "amqp%2Fp%40ss", "KAFKA_PASSWORD": 'k"afka\\pw'}


def test_config_secrets_finds_url_passwords_and_secret_fields() -> None:
    config = load_config_text(SECRET_MAPPING, "m.yaml", SECRETS)
    assert set(config_secrets(config)) >= {"n4ts-pass", "amqp%2Fp%40ss", "amqp/p@ss", 'k"afka\\pw'}


@pytest.mark.parametrize("log_format", [LogFormat.HUMAN, LogFormat.JSON])
def test_every_form_of_a_secret_is_scrubbed_from_log_lines(
    capsys: pytest.CaptureFixture[str], log_format: LogFormat
) -> None:
    config = load_config_text(SECRET_MAPPING, "m.yaml", SECRETS)
    configure_logging("info", log_format, secrets=config_secrets(config))
    log = logging.getLogger("test.secrets")
    log.warning("url amqp://bridge:amqp%2Fp%40ss@rabbit, sent as amqp/p@ss, and n4ts-pass")
    try:
        fail_with('auth failed for k"afka\\pw')
    except RuntimeError:
        log.exception("with a traceback")
    text = capsys.readouterr().err
    assert text.count("***") >= 4
    for secret in ("n4ts-pass", "amqp%2Fp%40ss", "amqp/p@ss", 'k"afka\\pw', 'k\\"afka\\\\pw'):
        assert secret not in text


def fail_with(message: str) -> None:
    raise RuntimeError(message)


def test_json_lines_are_one_object_each_with_the_usual_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", LogFormat.JSON)
    logging.getLogger("test.json").info("hello %s", "world")
    [line] = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert record["message"] == "hello world"
    assert record["level"] == "INFO"
    assert record["logger"] == "test.json"
    assert record["time"]


def test_latency_histogram_is_cumulative_and_finds_quantiles() -> None:
    histogram = LatencyHistogram()
    for seconds in [0.0004] * 90 + [0.02] * 9 + [30.0]:
        histogram.observe(seconds)
    pairs = histogram.cumulative()
    assert pairs[0] == ("0.0005", 90)
    assert pairs[-1] == ("+Inf", 100)
    assert [count for _, count in pairs] == sorted(count for _, count in pairs)
    assert len(pairs) == len(BUCKETS) + 1
    assert histogram.quantile(0.5) == 0.0005
    assert histogram.quantile(0.95) == 0.025
    assert histogram.quantile(1.0) == float("inf")
    assert histogram.sum == pytest.approx(0.0004 * 90 + 0.02 * 9 + 30.0)
    assert LatencyHistogram().quantile(0.99) is None


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [("127.0.0.1:9464", "127.0.0.1", 9464), (":9000", "127.0.0.1", 9000), ("[::1]:80", "::1", 80)],
)
def test_http_address_parses(text: str, host: str, port: int) -> None:
    assert HttpAddress.parse(text) == HttpAddress(host, port)


@pytest.mark.parametrize("text", ["9464", "host:", "host:port", "host:70000"])
def test_http_address_refuses_nonsense(text: str) -> None:
    with pytest.raises(HttpAddressError, match="HOST:PORT"):
        HttpAddress.parse(text)


def test_fits_counts_headers_exactly_near_the_limit() -> None:
    message = OutboundMessage("s", b"x" * 1000, "id", {"Nats-Msg-Id": "id", "Kafka-Topic": "é" * 10})
    size = encoded_size(message)
    assert size == 1000 + 12 + len("Nats-Msg-Id: id\r\n") + len("Kafka-Topic: \r\n") + 20
    assert fits(message, size)
    assert not fits(message, size - 1)
    assert fits(OutboundMessage("s", b"x", "id", {}), 1024)


def test_dead_letters_stream_is_declared_only_when_a_route_dead_letters() -> None:
    text = textwrap.dedent(SECRET_MAPPING)
    dead_lettering = load_config_text(text, "m.yaml", SECRETS)
    assert [s.name for s in dead_lettering.all_streams()] == ["NATS_BRIDGE_DLQ"]
    assert dead_lettering.all_streams()[0].subjects == ["nats-bridge.dlq.>"]
    stopping = load_config_text(
        text.replace('to: "t.{partition}"', 'to: "t.{partition}", on_error: stop'), "m.yaml", SECRETS
    )
    assert stopping.all_streams() == []
