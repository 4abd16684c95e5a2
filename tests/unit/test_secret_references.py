"""Secrets by reference only: `${VAR}` or `${file:PATH}`, never a literal; and the security
settings that must go together."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import load_config
from bridge.errors import ConfigError
from bridge.logs import config_secrets

HEAD = """
nats:
  servers: ["nats://127.0.0.1:4222"]
%(nats)s
sources:
%(sources)s
services:
  s:
    routes:
      - {name: a, source: k, from: {topics: [t]}, to: "t.{partition}"}
"""
KAFKA = '  k: {type: kafka, bootstrap_servers: ["k:9092"]}'


def write(tmp_path: Path, nats: str = "", sources: str = KAFKA) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(HEAD % {"nats": nats, "sources": sources})
    return path


def errors(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(path, env=env or {})
    return "\n".join(str(issue) for issue in raised.value.issues)


def test_a_file_reference_is_read_relative_to_the_mapping_file_without_its_line_break(tmp_path: Path) -> None:
    (tmp_path / "token.txt").write_text("s3cr3t-token\n")
    config = load_config(write(tmp_path, nats="  token: ${file:token.txt}"), env={})
    assert config.nats.token is not None
    assert config.nats.token.get_secret_value() == "s3cr3t-token"
    assert "s3cr3t-token" in config_secrets(config)


def test_a_missing_secret_file_is_an_error_naming_the_path_and_line(tmp_path: Path) -> None:
    text = errors(write(tmp_path, nats="  token: ${file:/nonexistent/token}"))
    assert "m.yaml:4:" in text
    assert "cannot read secret file '/nonexistent/token'" in text


def test_a_literal_secret_is_refused_with_both_ways_to_reference_it(tmp_path: Path) -> None:
    text = errors(write(tmp_path, nats="  user: bridge\n  password: hunter2"))
    assert "a secret must not be written in the file" in text
    assert "${PASSWORD}" in text
    assert "${file:" in text
    assert "hunter2" not in text


def test_kafka_key_password_is_a_secret_too(tmp_path: Path) -> None:
    (tmp_path / "kp").write_text("key-pass")
    source = (
        '  k: {type: kafka, bootstrap_servers: ["k:9093"], security_protocol: SSL, ssl_ca_file: ca.pem,'
        " ssl_cert_file: c.pem, ssl_key_file: k.pem, ssl_key_password: '${file:kp}'}"
    )
    config = load_config(write(tmp_path, sources=source), env={})
    assert "key-pass" in config_secrets(config)
    literal = source.replace("'${file:kp}'", "plain")
    assert "a secret must not be written" in errors(write(tmp_path, sources=literal))


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        (
            '  k: {type: kafka, bootstrap_servers: ["k:9093"], security_protocol: SASL_SSL, sasl_mechanism: PLAIN}',
            "SASL_SSL needs 'sasl_mechanism', 'sasl_username' and 'sasl_password'",
        ),
        (
            '  k: {type: kafka, bootstrap_servers: ["k:9093"], ssl_ca_file: ca.pem}',
            "ssl_* settings need security_protocol SSL or SASL_SSL, not PLAINTEXT",
        ),
        (
            KAFKA + '\n  r: {type: rabbitmq, url: "amqp://r/", tls_ca_file: ca.pem}',
            "TLS files need an amqps:// URL",
        ),
        (
            KAFKA + '\n  r: {type: rabbitmq, url: "amqps://r/", auth_mechanism: EXTERNAL}',
            "auth_mechanism EXTERNAL needs an amqps:// URL and a client certificate",
        ),
    ],
)
def test_security_settings_that_cannot_work_are_refused(tmp_path: Path, sources: str, message: str) -> None:
    assert message in errors(write(tmp_path, sources=sources))


def test_nats_client_certificate_needs_its_key(tmp_path: Path) -> None:
    assert "'tls_cert_file' and 'tls_key_file' go together" in errors(write(tmp_path, nats="  tls_cert_file: c.pem"))


def test_certificate_and_key_files_are_relative_to_the_mapping_file(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, nats="  tls_ca_file: certs/ca.pem\n  tls_cert_file: /abs/c.pem\n  tls_key_file: k.pem"), env={}
    )
    assert config.nats.tls_ca_file == str(tmp_path / "certs/ca.pem")
    assert config.nats.tls_cert_file == "/abs/c.pem"
    assert config.nats.tls_key_file == str(tmp_path / "k.pem")
