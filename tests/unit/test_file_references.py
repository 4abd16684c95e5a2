"""`${file:PATH}` is read only where a secret or a connection setting belongs, errors show the
reference and never what it expanded to, and key files others can read earn a warning."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from bridge.config import load_config, load_config_text
from bridge.errors import ConfigError

BASE = """\
nats:
  servers: ["nats://127.0.0.1:4222"]
{nats_extra}
streams: [{{name: S, subjects: ["s.>"]}}]
sources:
  k: {{type: kafka, bootstrap_servers: ["k:9092"]}}
services:
  svc:
    routes:
      - {{name: r, source: k, from: {{topics: [t]}}, to: "s.{{partition}}"{route_extra}}}
"""


def _text(nats_extra: str = "", route_extra: str = "") -> str:
    return BASE.format(nats_extra=nats_extra, route_extra=route_extra)


def test_a_file_reference_in_a_header_is_refused_and_nothing_is_read(tmp_path: Path) -> None:
    leak = tmp_path / "host-secret"
    leak.write_text("the-content-must-not-show")
    text = _text(route_extra=f', headers: {{set: {{X-Leak: "${{file:{leak}}}"}}}}')
    with pytest.raises(ConfigError) as raised:
        load_config_text(text, "m.yaml", {})
    message = str(raised.value)
    assert "m.yaml:10:" in message
    assert "reference is read only into a secret or a connection setting" in message
    assert "the-content-must-not-show" not in message


def test_a_file_reference_in_a_duration_is_refused_without_printing_the_file(tmp_path: Path) -> None:
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash")
    with pytest.raises(ConfigError) as raised:
        load_config_text(_text(nats_extra=f'  connect_timeout: "${{file:{secret}}}"'), "m.yaml", {})
    assert "root:x:0:0" not in str(raised.value)
    assert "nats.connect_timeout" in str(raised.value)


def test_an_error_about_an_environment_reference_shows_the_reference() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config_text(
            _text(nats_extra='  connect_timeout: "${BRIDGE_TIMEOUT}"'), "m.yaml", {"BRIDGE_TIMEOUT": "sekret-7"}
        )
    message = str(raised.value)
    assert "'${BRIDGE_TIMEOUT}' is not a duration" in message
    assert "sekret-7" not in message


def test_secrets_and_connection_settings_may_still_come_from_files(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t0ken\n")
    (tmp_path / "m.yaml").write_text(_text(nats_extra='  token: "${file:token}"'))
    config = load_config(tmp_path / "m.yaml", env={})
    assert config.nats.token is not None
    assert config.nats.token.get_secret_value() == "t0ken"


@pytest.mark.parametrize(("mode", "allowed", "warned"), [(0o644, "", True), (0o600, "", False), (0o640, "1", False)])
def test_a_seed_file_others_can_read_gets_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, allowed: str, warned: bool
) -> None:
    seed = tmp_path / "bridge.nk"
    seed.write_text("SUAEXAMPLE\n")
    os.chmod(seed, mode)
    (tmp_path / "m.yaml").write_text(_text(nats_extra="  nkey_seed_file: bridge.nk"))
    env = {"NATS_BRIDGE_ALLOW_READABLE_SECRETS": allowed} if allowed else {}
    with caplog.at_level(logging.WARNING, logger="bridge.config.loader"):
        load_config(tmp_path / "m.yaml", env=env)
    found = [r.getMessage() for r in caplog.records if "can be read by group or others" in r.getMessage()]
    assert bool(found) is warned, found
    if warned:
        assert "nats.nkey_seed_file" in found[0]
        assert "chmod 600" in found[0]
        assert "SUAEXAMPLE" not in found[0]
