"""The bridge against nats-servers that demand TLS and credentials (certificates, NKeys and JWTs
made by the fixtures): every authentication method connects and copies; a wrong credential is
one clear line naming NATS and the method; no secret ever reaches the log; and a user without
publish permission for a subject gets a clear error while the route dead-letters or stops."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nats
import nkeys
import pytest
from kafka_helpers import BridgeProcess, fill_topic
from nats_auth import TlsFiles, decentralised_auth, new_keypair, tls_files
from private_nats import PrivateNatsServer

if TYPE_CHECKING:
    from conftest import TopicFactory

pytestmark = [pytest.mark.nats, pytest.mark.kafka]

ROOT = Path(__file__).resolve().parents[2]
BridgeFactory = Callable[[Path], BridgeProcess]
TOKEN = "tok-5ecret-2f9d"
PASSWORD = "pw-5ecret-81c3"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return tls_files(tmp_path_factory.mktemp("tls"))


@dataclass
class Setup:
    server_conf: str  # authorization part of the server's config
    nats_yaml: str  # the mapping file's `nats:` settings besides servers
    env: dict[str, str]
    secrets: list[str]  # values that must never be logged
    verify_clients: bool = False


def start_server(tmp_path: Path, tls: TlsFiles, setup: Setup) -> PrivateNatsServer:
    verify = "\n  verify: true" if setup.verify_clients else ""
    conf = tmp_path / "nats.conf"
    conf.write_text(
        f"tls {{\n  cert_file: {tls.server_cert}\n  key_file: {tls.server_key}\n  ca_file: {tls.ca}{verify}\n}}\n"
        + setup.server_conf
    )
    server = PrivateNatsServer(tmp_path / "nats", extra_args=("-c", str(conf)))
    server.start()
    return server


def mapping(path: Path, server: PrivateNatsServer, tls: TlsFiles, setup: Setup, kafka: str, topic: str, to: str,
            on_error: str = "dead-letter") -> Path:  # fmt: skip
    nats_settings = textwrap.indent(setup.nats_yaml, "  ")
    path.write_text(f"""
nats:
  servers: ["tls://127.0.0.1:{server.port}"]
  tls_ca_file: {tls.ca}
{nats_settings}
streams:
  - {{name: ORDERS, subjects: ["orders.>"]}}
  - {{name: PAYMENTS, subjects: ["payments.>"]}}
sources:
  kafka: {{type: kafka, bootstrap_servers: ["{kafka}"]}}
services:
  svc:
    routes:
      - {{name: copy, source: kafka, from: {{topics: ["{topic}"]}}, to: "{to}", on_error: {on_error}}}
""")
    return path


def setups(tmp_path: Path, tls: TlsFiles) -> dict[str, Setup]:
    seed, public = new_keypair(nkeys.PREFIX_BYTE_USER)
    seed_file = tmp_path / "bridge.nk"
    seed_file.write_bytes(seed + b"\n")
    decentralised = decentralised_auth(tmp_path / "jwt")
    return {
        "token": Setup(
            f'authorization {{ token: "{TOKEN}" }}\n', "token: ${NATS_TOKEN}", {"NATS_TOKEN": TOKEN}, [TOKEN]
        ),
        "user-password": Setup(
            f'authorization {{ users: [{{user: bridge, password: "{PASSWORD}"}}] }}\n',
            "user: bridge\npassword: ${NATS_PASSWORD}",
            {"NATS_PASSWORD": PASSWORD},
            [PASSWORD],
        ),
        "nkey": Setup(
            f"authorization {{ users: [{{nkey: {public}}}] }}\n", f"nkey_seed_file: {seed_file}", {}, [seed.decode()]
        ),
        "credentials": Setup(
            decentralised.server_conf,
            f"credentials_file: {decentralised.creds_file}",
            {},
            [line for line in decentralised.creds_file.read_text().splitlines() if line and not line.startswith("-")],
        ),
        "client-certificate": Setup(
            "", f"tls_cert_file: {tls.client_cert}\ntls_key_file: {tls.client_key}", {}, [], verify_clients=True
        ),
    }


async def run_cli(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    import os

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", *args, cwd=ROOT, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()  # never leave a bridge running after the test
        await process.wait()
        raise
    return process.returncode or 0, out.decode()


@pytest.mark.parametrize("method", ["token", "user-password", "nkey", "credentials", "client-certificate"])
async def test_every_authentication_method_connects_over_tls_and_logs_no_secret(
    method: str,
    tmp_path: Path,
    tls: TlsFiles,
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    bridge_process: BridgeFactory,
) -> None:
    setup = setups(tmp_path, tls)[method]
    server = start_server(tmp_path, tls, setup)
    try:
        topic = await kafka_topic()
        await fill_topic(kafka_bootstrap, topic, 20, 1)
        path = mapping(tmp_path / "m.yaml", server, tls, setup, kafka_bootstrap, topic, "orders.{partition}")
        bridge = bridge_process(path)
        bridge.env = setup.env
        bridge.start()
        connect = {
            "token": {"token": TOKEN},
            "user-password": {"user": "bridge", "password": PASSWORD},
            "nkey": {"nkeys_seed": str(tmp_path / "bridge.nk")},
            "credentials": {"user_credentials": str(tmp_path / "jwt" / "bridge.creds")},
            "client-certificate": {},
        }[method]
        import ssl

        context = ssl.create_default_context(cafile=str(tls.ca))
        context.load_cert_chain(str(tls.client_cert), str(tls.client_key))
        nc = await nats.connect(f"tls://127.0.0.1:{server.port}", tls=context, **connect)  # type: ignore[arg-type]
        try:
            for _ in range(300):
                try:
                    if (await nc.jetstream().stream_info("ORDERS")).state.messages >= 20:
                        break
                except nats.js.errors.NotFoundError:
                    pass
                assert bridge.alive(), bridge.log()
                await asyncio.sleep(0.1)
            assert (await nc.jetstream().stream_info("ORDERS")).state.messages == 20, bridge.log()
        finally:
            await nc.close()
        assert bridge.terminate() == 0, bridge.log()
        logged = bridge.log_path.read_text()
        for secret in setup.secrets:
            assert secret not in logged
    finally:
        server.stop(kill=True)


@pytest.mark.parametrize(
    ("method", "wrong", "expected"),
    [
        ("token", {"NATS_TOKEN": "not-the-token-77"}, "with token: authentication refused"),
        ("user-password", {"NATS_PASSWORD": "bad-pw-77"}, "with user 'bridge' and password: authentication refused"),
        ("client-certificate", None, "TLS handshake failed"),
    ],
)  # fmt: skip
async def test_a_wrong_credential_is_one_clear_line_naming_nats_and_the_method(
    method: str, wrong: dict[str, str] | None, expected: str, tmp_path: Path, tls: TlsFiles, kafka_bootstrap: str
) -> None:
    setup = setups(tmp_path, tls)[method]
    if wrong is None:  # a client certificate from a CA the server does not trust
        setup.nats_yaml = f"tls_cert_file: {tls.other_client_cert}\ntls_key_file: {tls.other_client_key}"
    server = start_server(tmp_path, tls, setup)
    try:
        path = mapping(tmp_path / "m.yaml", server, tls, setup, kafka_bootstrap, "unused", "orders.{partition}")
        code, out = await run_cli(["run", str(path), "--http", "off"], wrong or {})
    finally:
        server.stop(kill=True)
    assert code != 0
    assert f"cannot connect to NATS at tls://127.0.0.1:{server.port}" in out, out
    assert expected in out, out
    assert "Traceback" not in out
    for value in (wrong or {}).values():
        assert value not in out


async def test_a_subject_the_user_may_not_publish_to_is_dead_lettered_or_stops_the_route(
    tmp_path: Path, tls: TlsFiles, kafka_bootstrap: str, kafka_topic: TopicFactory, bridge_process: BridgeFactory
) -> None:
    allowed = '["orders.>", "$JS.API.>", "$KV.>", "$O.>", "nats-bridge.dlq.>"]'
    setup = Setup(
        'authorization { users: [{user: bridge, password: "' + PASSWORD + '", permissions: {'
        f'publish: {{allow: {allowed}}}, subscribe: {{allow: ["_INBOX.>"]}}}}}}] }}\n',
        "user: bridge\npassword: ${NATS_PASSWORD}",
        {"NATS_PASSWORD": PASSWORD},
        [PASSWORD],
    )
    server = start_server(tmp_path, tls, setup)
    try:
        topic = await kafka_topic()
        await fill_topic(kafka_bootstrap, topic, 5, 1)
        path = mapping(tmp_path / "m.yaml", server, tls, setup, kafka_bootstrap, topic, "payments.{partition}")
        bridge = bridge_process(path)
        bridge.env = setup.env
        bridge.start()
        admin = await nats.connect(server.url.replace("nats://", "tls://"), tls=_client_context(tls), user="bridge",
                                   password=PASSWORD)  # fmt: skip
        try:
            for _ in range(300):
                try:
                    if (await admin.jetstream().stream_info("NATS_BRIDGE_DLQ")).state.messages >= 5:
                        break
                except nats.js.errors.NotFoundError:
                    pass
                assert bridge.alive(), bridge.log()
                await asyncio.sleep(0.1)
            letters = await admin.jetstream().pull_subscribe("nats-bridge.dlq.>", stream="NATS_BRIDGE_DLQ")
            (letter, *_) = await letters.fetch(5, timeout=5)
            assert letter.headers is not None
            assert letter.headers["Bridge-Dlq-Subject"] == "payments.0"
            assert "may not publish to 'payments.0'" in letter.headers["Bridge-Dlq-Error"]
            assert (await admin.jetstream().stream_info("PAYMENTS")).state.messages == 0
        finally:
            await admin.close()
        await bridge.wait_for_log("the bridge's user lacks the permission", timeout=5)
        assert bridge.terminate() == 0, bridge.log()

        # on_error: stop: the bridge stops with the reason (a fresh topic: the first is committed).
        second = await kafka_topic()
        await fill_topic(kafka_bootstrap, second, 5, 1)
        path = mapping(tmp_path / "s.yaml", server, tls, setup, kafka_bootstrap, second, "payments.{partition}", "stop")
        code, out = await run_cli(["run", str(path), "--http", "off"], setup.env, timeout=90)
        assert code != 0
        assert "may not publish to 'payments.0'" in out, out
        assert "Traceback" not in out
        assert PASSWORD not in out
    finally:
        server.stop(kill=True)


def _client_context(tls: TlsFiles) -> object:
    import ssl

    return ssl.create_default_context(cafile=str(tls.ca))
