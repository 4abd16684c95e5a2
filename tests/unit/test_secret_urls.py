"""Issue 14, secrets: a password inside a URL, or in the default of a `${VAR:-default}`, is a
secret written in the file like `password: hunter2`, and `validate` refuses it the same way:
at its line, naming the fix, never repeating the secret. What comes from the environment or a
secret file is not in the file, and passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import load_config
from bridge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

MAPPING = """version: 1
nats:
  servers: [NATS]
NATS_EXTRA
sources:
  r: {type: rabbitmq, url: AMQP}
  k: {type: kafka, bootstrap_servers: ["k:9092"]KAFKA_EXTRA}
services:
  s:
    routes:
      - {name: a, source: k, from: {topics: [t]}, to: "t.{partition}"}
"""


def mapping(
    tmp_path: Path,
    *,
    nats: str = '"nats://127.0.0.1:4222"',
    amqp: str = '"amqp://rabbit/"',
    nats_extra: str = "",
    kafka_extra: str = "",
) -> Path:
    path = tmp_path / "m.yaml"
    text = MAPPING.replace("NATS_EXTRA", nats_extra).replace("KAFKA_EXTRA", kafka_extra)
    path.write_text(text.replace("NATS", nats, 1).replace("AMQP", amqp))
    return path


def errors(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(path, env=env or {})
    return "\n".join(str(issue) for issue in raised.value.issues)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"amqp": '"amqp://bridge:hunter2@rabbit:5672/"'}, "m.yaml:6:23: sources.r.url: a password"),
        ({"amqp": '"amqps://bridge:hunter2@rabbit:5671/orders"'}, "sources.r.url: a password"),
        ({"amqp": '"${AMQP_URL:-amqp://bridge:hunter2@rabbit/}"'}, "sources.r.url: a password"),
        ({"amqp": '"amqp://bridge:${AMQP_PASSWORD:-hunter2}@rabbit/"'}, "sources.r.url: a password"),
        ({"amqp": '"amqp://guest:guest@rabbit.prod/"'}, "sources.r.url: a password"),
        ({"nats": '"nats://bridge:hunter2@nats-1:4222"'}, "m.yaml:3:13: nats.servers[0]: a password"),
        ({"nats": '"tls://hunter2@nats-1:4222"'}, "nats.servers[0]: a token must not be written in a URL"),
    ],
)
def test_a_password_in_a_url_is_refused_with_the_fix(tmp_path: Path, where: dict[str, str], expected: str) -> None:
    text = errors(mapping(tmp_path, **where))
    assert expected in text
    assert "hunter2" not in text
    assert "${" in text  # the hint names the reference to write instead


def test_the_hint_names_the_reference_for_the_url_kind(tmp_path: Path) -> None:
    amqp = errors(mapping(tmp_path, amqp='"amqp://bridge:hunter2@rabbit/"'))
    assert "amqp://USER:${AMQP_PASSWORD}@HOST/, or the whole URL as ${AMQP_URL}" in amqp
    assert "username and password: ${AMQP_PASSWORD}" in amqp
    nats = errors(mapping(tmp_path, nats='"nats://bridge:hunter2@n:4222"'))
    assert "nats://USER:${NATS_PASSWORD}@HOST/, or the whole URL as ${NATS_URL}" in nats
    token = errors(mapping(tmp_path, nats='"nats://hunter2@n:4222"'))
    assert "write token: ${NATS_TOKEN} beside a URL without it" in token


@pytest.mark.parametrize(
    ("nats_extra", "kafka_extra", "expected"),
    [
        ('  user: bridge\n  password: "${NATS_PASSWORD:-hunter2}"', "", "m.yaml:5:3: nats.password"),
        ('  token: "${NATS_TOKEN:-hunter2}"', "", "nats.token"),
        (
            "",
            ", security_protocol: SASL_SSL, sasl_mechanism: PLAIN, sasl_username: u, "
            'sasl_password: "${KAFKA_PASSWORD:-hunter2}"',
            "sources.k.sasl_password",
        ),
    ],
)
def test_a_default_of_a_secret_field_is_a_literal(
    tmp_path: Path, nats_extra: str, kafka_extra: str, expected: str
) -> None:
    text = errors(mapping(tmp_path, nats_extra=nats_extra, kafka_extra=kafka_extra))
    assert expected in text
    assert "not even as the default of ${VAR:-default}" in text
    assert "drop the default" in text
    assert "hunter2" not in text


@pytest.mark.parametrize(
    "where",
    [
        {"amqp": '"${AMQP_URL}"'},
        {"amqp": '"amqp://bridge:${AMQP_PASSWORD}@rabbit/"'},
        {"amqp": '"amqp://bridge:${file:amqp_password}@rabbit/"'},
        {"amqp": '"amqp://bridge@rabbit/"'},
        {"amqp": '"${AMQP_URL:-amqp://bridge@rabbit/}"'},
        {"amqp": '"${AMQP_URL:-amqp://guest:guest@127.0.0.1:15673/}"'},  # RabbitMQ's loopback-only account
        {"amqp": '"amqp://guest:guest@localhost/"'},
        {"nats": '"nats://bridge:${NATS_PASSWORD}@nats-1:4222"'},
        {"nats": '"${NATS_URL:-nats://127.0.0.1:4222}"'},
        {"nats": '"nats://${NATS_TOKEN}@nats-1:4222"'},
        {"nats_extra": '  user: bridge\n  password: "${NATS_PASSWORD:-}"'},
    ],
)
def test_references_and_urls_without_a_password_pass(tmp_path: Path, where: dict[str, str]) -> None:
    (tmp_path / "amqp_password").write_text("from-a-file\n")
    env = {"AMQP_URL": "amqp://bridge:from-env@rabbit/", "AMQP_PASSWORD": "p", "NATS_PASSWORD": "p", "NATS_TOKEN": "t"}
    load_config(mapping(tmp_path, **where), env=env)


@pytest.mark.parametrize("example", sorted((ROOT / "mappings").glob("*.yaml")), ids=lambda path: path.name)
def test_the_examples_still_validate(example: Path) -> None:
    load_config(example, env={})
