"""TLS is a promise: a mapping that asks for TLS never sends a credential in clear.

Each test puts a recording TCP proxy between the bridge and a real server and looks at every
byte the bridge sent. NATS: nats-py 2.16 upgrades to TLS only when the server's INFO asks for
it, so a plaintext server (or anyone answering `tls_required:false`) used to receive CONNECT
with the token; the bridge now refuses before CONNECT, in one line naming the server, exit 2.
TLS-first (`tls_handshake_first`) and servers that offer TLS without requiring it are covered
too. RabbitMQ (amqps://) and Kafka (SSL, SASL_SSL) start with the TLS handshake before any byte
of their protocol: against the plaintext ports of the shared brokers they fail in one line
naming the broker, and the proxy sees a TLS ClientHello and no credential.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import pytest
from nats_auth import TlsFiles, decentralised_auth, tls_files
from private_nats import PrivateNatsServer

if TYPE_CHECKING:
    from conftest import TopicFactory

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "tok-cl3ar-7e41"
PASSWORD = "pw-cl3ar-93b0"
TLS_RECORD = b"\x16\x03"  # a TLS handshake record: what a TLS client's first bytes are


class RecordingProxy:
    """A loopback TCP proxy to 127.0.0.1:`upstream_port` keeping every byte a client sent, per connection."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.sent: list[bytearray] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> RecordingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    def everything(self) -> bytes:
        return b"".join(self.sent)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        record = bytearray()
        self.sent.append(record)
        self._writers.append(writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._writers.append(upstream_writer)
        await asyncio.gather(
            _pipe(reader, upstream_writer, record), _pipe(upstream_reader, writer, None), return_exceptions=True
        )


async def _pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter, record: bytearray | None) -> None:
    try:
        while data := await source.read(65536):
            if record is not None:
                record += data
            target.write(data)
            await target.drain()
    except OSError:
        pass
    finally:
        target.close()


async def run_cli(args: list[str], env: dict[str, str] | None = None, timeout: float = 90) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", *args, cwd=ROOT, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()  # never leave a bridge running after the test
        await process.wait()
        raise
    return process.returncode or 0, out.decode(errors="replace")


def lines_with(output: str, text: str) -> list[str]:
    return [line for line in output.splitlines() if text in line]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return tls_files(tmp_path_factory.mktemp("tls"))


# --------------------------------------------------------------------------- NATS


def nats_mapping(path: Path, port: int, nats_settings: str, kafka: str, topic: str = "tls-no-fallback") -> Path:
    settings = "".join(f"  {line}\n" for line in nats_settings.splitlines())
    path.write_text(f"""
nats:
  servers: ["tls://127.0.0.1:{port}"]
  connect_timeout: 2s
{settings}streams:
  - {{name: ORDERS, subjects: ["orders.>"]}}
sources:
  kafka: {{type: kafka, bootstrap_servers: ["{kafka}"]}}
services:
  svc:
    routes:
      - {{name: copy, source: kafka, from: {{topics: ["{topic}"]}}, to: "orders.{{partition}}"}}
""")
    return path


def start_nats(tmp_path: Path, conf: str) -> PrivateNatsServer:
    path = tmp_path / "nats.conf"
    path.write_text(conf)
    server = PrivateNatsServer(tmp_path / "nats", extra_args=("-c", str(path)))
    server.start()
    return server


def assert_no_login_sent(proxy: RecordingProxy, secrets: list[str]) -> None:
    sent = proxy.everything()
    assert proxy.sent, "the bridge never reached the proxy"
    assert b"CONNECT" not in sent, sent[:500]
    for word in (b"auth_token", b'"pass"', b'"sig"', b'"jwt"', b'"user"'):
        assert word not in sent, sent[:500]
    for secret in secrets:
        assert secret.encode() not in sent


COMMANDS = {
    "streams plan": ["streams", "plan", "{file}"],
    "dry-run --connect": ["dry-run", "{file}", "--connect", "--json"],
    "run": ["run", "{file}", "--http", "off"],
}


@pytest.mark.nats
@pytest.mark.kafka
@pytest.mark.parametrize("command", list(COMMANDS))
async def test_a_tls_mapping_refuses_a_plaintext_nats_before_sending_the_token(
    command: str, tmp_path: Path, tls: TlsFiles, kafka_bootstrap: str, kafka_topic: TopicFactory
) -> None:
    """tls:// + tls_ca_file + a token, and the server behind the URL speaks plaintext (its INFO says
    tls_required:false): exit 2, one line naming the server, and no CONNECT ever left the host."""
    topic = await kafka_topic()  # everything else about the file is fine: only NATS can fail it
    server = start_nats(tmp_path, f'authorization {{ token: "{TOKEN}" }}\n')
    try:
        async with RecordingProxy(server.port) as proxy:
            path = nats_mapping(tmp_path / "m.yaml", proxy.port, f"tls_ca_file: {tls.ca}\ntoken: ${{NATS_TOKEN}}",
                                kafka_bootstrap, topic)  # fmt: skip
            args = [arg.format(file=path) for arg in COMMANDS[command]]
            code, out = await run_cli(args, {"NATS_TOKEN": TOKEN})
    finally:
        server.stop(kill=True)
    assert code == 2, out
    if command == "dry-run --connect":
        (finding,) = [f for f in json.loads(out)["findings"] if f["subject"] == "nats"]
        assert finding["severity"] == "error", finding
        line = finding["message"]
        assert "\n" not in line, line
    else:
        (line,) = lines_with(out, "did not establish TLS")
    assert f"cannot connect to NATS at tls://127.0.0.1:{proxy.port} with token: " in line, out
    assert f"NATS server 127.0.0.1:{proxy.port} did not establish TLS" in line, out
    assert "Traceback" not in out, out
    assert TOKEN not in out
    assert_no_login_sent(proxy, [TOKEN])


@pytest.mark.nats
@pytest.mark.parametrize("method", ["user-password", "credentials"])
async def test_no_login_of_any_kind_leaves_in_clear(
    method: str, tmp_path: Path, tls: TlsFiles, kafka_bootstrap: str
) -> None:
    """The same for a password and for a .creds file (JWT and nonce signature): refused before CONNECT."""
    if method == "user-password":
        server_conf = f'authorization {{ users: [{{user: bridge, password: "{PASSWORD}"}}] }}\n'
        settings, env, secrets = "user: bridge\npassword: ${NATS_PASSWORD}", {"NATS_PASSWORD": PASSWORD}, [PASSWORD]
    else:
        decentralised = decentralised_auth(tmp_path / "jwt")
        server_conf = decentralised.server_conf
        settings, env = f"credentials_file: {decentralised.creds_file}", {}
        secrets = [line for line in decentralised.creds_file.read_text().splitlines() if not line.startswith("-")]
        secrets = [secret for secret in secrets if secret]
    server = start_nats(tmp_path, server_conf)
    try:
        async with RecordingProxy(server.port) as proxy:
            path = nats_mapping(tmp_path / "m.yaml", proxy.port, f"tls_ca_file: {tls.ca}\n{settings}", kafka_bootstrap)
            code, out = await run_cli(["streams", "plan", str(path)], env)
    finally:
        server.stop(kill=True)
    assert code == 2, out
    assert len(lines_with(out, f"NATS server 127.0.0.1:{proxy.port} did not establish TLS")) == 1, out
    assert_no_login_sent(proxy, secrets)


@pytest.mark.nats
async def test_tls_handshake_first_talks_to_a_handshake_first_server(
    tmp_path: Path, tls: TlsFiles, kafka_bootstrap: str
) -> None:
    """`nats.tls_handshake_first: true` against `tls { handshake_first: true }`: the first bytes on the
    wire are the TLS ClientHello (before the server's INFO), the commands work, nothing is in clear."""
    server = start_nats(
        tmp_path,
        f"tls {{\n  cert_file: {tls.server_cert}\n  key_file: {tls.server_key}\n  handshake_first: true\n}}\n"
        f'authorization {{ token: "{TOKEN}" }}\n',
    )
    try:
        async with RecordingProxy(server.port) as proxy:
            path = nats_mapping(
                tmp_path / "m.yaml", proxy.port,
                f"tls_ca_file: {tls.ca}\ntls_handshake_first: true\ntoken: ${{NATS_TOKEN}}", kafka_bootstrap,
            )  # fmt: skip
            applied, applied_out = await run_cli(["streams", "apply", str(path)], {"NATS_TOKEN": TOKEN})
            planned, planned_out = await run_cli(["streams", "plan", str(path)], {"NATS_TOKEN": TOKEN})
    finally:
        server.stop(kill=True)
    assert applied == 0, applied_out
    assert planned == 0, planned_out  # the stream `apply` created is there: the login worked
    assert proxy.sent
    for connection in proxy.sent:
        assert connection.startswith(TLS_RECORD), connection[:100]
    assert TOKEN.encode() not in proxy.everything()
    assert b"CONNECT" not in proxy.everything()


@pytest.mark.nats
async def test_a_server_that_offers_tls_without_requiring_it_is_asked_for_tls(
    tmp_path: Path, tls: TlsFiles, kafka_bootstrap: str
) -> None:
    """`allow_non_tls: true` servers announce `tls_available` and do not require TLS: a TLS mapping
    upgrades (as nats.go does) instead of refusing, and the login travels inside TLS."""
    server = start_nats(
        tmp_path,
        f"tls {{\n  cert_file: {tls.server_cert}\n  key_file: {tls.server_key}\n}}\nallow_non_tls: true\n"
        f'authorization {{ token: "{TOKEN}" }}\n',
    )
    try:
        async with RecordingProxy(server.port) as proxy:
            path = nats_mapping(tmp_path / "m.yaml", proxy.port, f"tls_ca_file: {tls.ca}\ntoken: ${{NATS_TOKEN}}",
                                kafka_bootstrap)  # fmt: skip
            code, out = await run_cli(["streams", "plan", str(path)], {"NATS_TOKEN": TOKEN})
    finally:
        server.stop(kill=True)
    assert code == 1, out  # reached the server: the stream is still to be created
    assert "ORDERS" in out, out
    assert proxy.sent
    assert b"CONNECT" not in proxy.everything()
    assert TOKEN.encode() not in proxy.everything()


# --------------------------------------------------------------------------- RabbitMQ and Kafka


async def run_until_exit(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    started = time.monotonic()
    code, out = await run_cli(args, env, timeout)
    assert time.monotonic() - started < timeout
    return code, out


@pytest.mark.rabbitmq
@pytest.mark.nats
async def test_amqps_against_a_plaintext_rabbitmq_fails_before_any_login(
    tmp_path: Path, tls: TlsFiles, amqp_url: str, nats_url: str, unique_name: str
) -> None:
    """amqps:// to RabbitMQ's plaintext AMQP port: aio-pika starts with the TLS handshake, RabbitMQ
    answers with its AMQP header and closes, the bridge exits 2 with one line naming RabbitMQ; the
    proxy saw a ClientHello and no PLAIN login."""
    from yarl import URL

    plain = URL(amqp_url)
    assert plain.port is not None
    async with RecordingProxy(plain.port) as proxy:
        path = tmp_path / "m.yaml"
        path.write_text(f"""
nats: {{servers: ["{nats_url}"]}}
streams:
  - {{name: {unique_name.upper()}, subjects: ["{unique_name}.>"]}}
sources:
  rabbit:
    type: rabbitmq
    url: "amqps://bridge:${{AMQP_PASSWORD}}@127.0.0.1:{proxy.port}/"
    tls_ca_file: {tls.ca}
services:
  svc:
    routes:
      - {{name: copy, source: rabbit, from: {{queue: {unique_name}-q}}, to: "{unique_name}.{{rk}}"}}
""")
        code, out = await run_until_exit(["run", str(path), "--http", "off"], {"AMQP_PASSWORD": PASSWORD})
    assert code == 2, out
    (line,) = [line for line in out.splitlines() if line.startswith("error:")]
    assert f"RabbitMQ at amqps://bridge:***@127.0.0.1:{proxy.port}/" in line, out
    assert "Traceback" not in out, out
    assert PASSWORD not in out
    assert proxy.sent
    for connection in proxy.sent:
        assert connection.startswith(TLS_RECORD), connection[:100]
    sent = proxy.everything()
    assert b"AMQP" not in sent  # not even the protocol header went out in clear
    assert PASSWORD.encode() not in sent
    assert b"bridge" not in sent


@pytest.mark.kafka
@pytest.mark.nats
@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
async def test_kafka_ssl_against_a_plaintext_listener_fails_before_any_login(
    protocol: str, tmp_path: Path, tls: TlsFiles, kafka_bootstrap: str, nats_url: str, unique_name: str
) -> None:
    """security_protocol SSL / SASL_SSL to Kafka's plaintext listener: aiokafka starts with the TLS
    handshake, the broker cannot parse it and drops the connection, the bridge exits 2 with one line
    naming Kafka; the proxy saw only ClientHellos: no ApiVersions, no SASL handshake, no password."""
    host, _, port = kafka_bootstrap.split(",", maxsplit=1)[0].rpartition(":")
    assert host in ("127.0.0.1", "localhost"), kafka_bootstrap
    sasl = "    sasl_mechanism: PLAIN\n    sasl_username: bridge\n    sasl_password: ${KAFKA_PASSWORD}\n"
    async with RecordingProxy(int(port)) as proxy:
        path = tmp_path / "m.yaml"
        path.write_text(f"""
nats: {{servers: ["{nats_url}"]}}
streams:
  - {{name: {unique_name.upper()}, subjects: ["{unique_name}.>"]}}
sources:
  kafka:
    type: kafka
    bootstrap_servers: ["127.0.0.1:{proxy.port}"]
    security_protocol: {protocol}
    ssl_ca_file: {tls.ca}
{sasl if protocol == "SASL_SSL" else ""}services:
  svc:
    routes:
      - {{name: copy, source: kafka, from: {{topics: ["{unique_name}"]}}, to: "{unique_name}.{{partition}}"}}
""")
        code, out = await run_until_exit(["run", str(path), "--http", "off"], {"KAFKA_PASSWORD": PASSWORD})
    assert code == 2, out
    (line,) = [line for line in out.splitlines() if line.startswith("error:")]
    assert "Kafka" in line, out
    assert f"127.0.0.1:{proxy.port}" in line, out
    assert "Traceback" not in out, out
    assert PASSWORD not in out
    assert proxy.sent
    for connection in proxy.sent:
        assert connection.startswith(TLS_RECORD), connection[:100]
    sent = proxy.everything()
    assert PASSWORD.encode() not in sent
    assert b"PLAIN" not in sent
    assert b"nats-bridge" not in sent  # the client id of any plaintext Kafka request
