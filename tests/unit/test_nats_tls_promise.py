"""Issue 19: which NATS settings make TLS a promise, and what nats-py is told.

A mapping asks for TLS with a tls:// (or wss://) URL or any TLS setting; then the client refuses
to send CONNECT outside TLS (tests/integration/test_tls_no_fallback.py proves it on the wire).
`tls_handshake_first` reaches nats-py's connect option of that name and implies TLS."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from pydantic import SecretStr

from bridge.brokers.nats.client import TlsNotEstablishedError, client_options, connect_error_text, wants_tls
from bridge.config import NatsConfig


def nats(url: str = "nats://127.0.0.1:4222", **settings: Any) -> NatsConfig:
    return NatsConfig(servers=[SecretStr(url)], **settings)


@pytest.mark.parametrize(
    ("url", "settings", "expected"),
    [
        ("nats://127.0.0.1:4222", {}, False),
        ("tls://nats:4222", {}, True),
        ("wss://nats:443", {}, True),
        ("nats://nats:4222", {"tls_ca_file": "ca.pem"}, True),
        ("nats://nats:4222", {"tls_cert_file": "client.pem", "tls_key_file": "client.key"}, True),
        ("nats://nats:4222", {"tls_handshake_first": True}, True),
    ],
    ids=["plain", "tls-url", "wss-url", "ca-file", "client-cert", "handshake-first"],
)
def test_tls_is_wanted_for_a_tls_url_or_any_tls_setting(
    url: str, settings: dict[str, Any], expected: bool, tmp_path: Path
) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client = ca.issue_cert("bridge-client")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    files = {key: str(tmp_path / value) if key.endswith("_file") else value for key, value in settings.items()}
    config = nats(url, **files)
    assert wants_tls(config) is expected
    assert isinstance(client_options(config).get("tls"), ssl.SSLContext) is expected


def test_tls_handshake_first_reaches_nats_py_and_is_off_by_default() -> None:
    assert "tls_handshake_first" not in client_options(nats("tls://nats:4222"))
    options = client_options(nats("tls://nats:4222", tls_handshake_first=True))
    assert options["tls_handshake_first"] is True


def test_the_refusal_is_one_line_naming_the_server_and_never_a_secret() -> None:
    config = nats("tls://nats-1:4222", token=SecretStr("s3cret-token"))
    text = connect_error_text(config, TlsNotEstablishedError("NATS server nats-1:4222"))
    assert "\n" not in text
    assert text.startswith("cannot connect to NATS at tls://nats-1:4222 with token: ")
    assert "NATS server nats-1:4222 did not establish TLS" in text
    assert "s3cret-token" not in text
