"""The one place that builds aiokafka clients: every consumer, admin client and producer the bridge
opens on a Kafka source gets its TLS and SASL settings here, so a change to how the bridge logs in
to Kafka touches this file alone (dry-run, verify, status and the reverse routes included).

Also why a client could not start, said once for all of them.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from bridge.config.sources import KafkaSource
from bridge.errors import BridgeError, SourceUnavailableError, SourceUnreachableError


def kafka_client_options(source: KafkaSource, *, client_suffix: str = "") -> dict[str, Any]:
    """Connection settings every aiokafka client of a source shares (consumer, admin, dry-run)."""
    options: dict[str, Any] = {
        "bootstrap_servers": source.bootstrap_servers,
        "client_id": source.client_id + client_suffix,
        "security_protocol": source.security_protocol,
    }
    if source.security_protocol in ("SSL", "SASL_SSL"):
        # Brokers are verified against ssl_ca_file (the system CAs without it), host names included.
        # No key password is "", not None: OpenSSL would prompt on the terminal for an encrypted key.
        key_password = source.ssl_key_password.get_secret_value() if source.ssl_key_password else ""
        try:
            options["ssl_context"] = create_ssl_context(
                cafile=source.ssl_ca_file,
                certfile=source.ssl_cert_file,
                keyfile=source.ssl_key_file,
                password=key_password,
            )
        except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
            files = ", ".join(f for f in (source.ssl_ca_file, source.ssl_cert_file, source.ssl_key_file) if f)
            hint = " (a wrong or missing ssl_key_password looks like this too)" if source.ssl_key_file else ""
            raise BridgeError(f"Kafka TLS settings: cannot load {files or 'the system CAs'}: {error}{hint}") from None
    if source.sasl_mechanism is not None:
        options["sasl_mechanism"] = source.sasl_mechanism
        options["sasl_plain_username"] = source.sasl_username
        if source.sasl_password is not None:
            options["sasl_plain_password"] = source.sasl_password.get_secret_value()
    return options


async def start_failure(name: str, source: KafkaSource, error: KafkaError) -> SourceUnavailableError:
    """Why a client could not start, in one line, as the error to raise: a Kafka that does not
    answer is an outage (SourceUnreachableError, waited out), a refused login or TLS handshake is
    not. aiokafka's bootstrap says only "Unable to bootstrap" and logs the cause: one direct
    connection to the first broker finds the cause again."""
    servers = ", ".join(source.bootstrap_servers)
    cause: BaseException = error
    host, _, port = source.bootstrap_servers[0].rpartition(":")
    if isinstance(error, KafkaConnectionError) and port.isdigit():
        options = kafka_client_options(source)
        del options["bootstrap_servers"]
        try:
            conn = await create_conn(host.strip("[]"), int(port), request_timeout_ms=10_000, **options)
        except (KafkaError, OSError, TimeoutError) as found:
            cause = found
        else:
            conn.close()
    where = f"source '{name}': "
    if isinstance(cause, SaslAuthenticationFailed | UnsupportedSaslMechanismError):
        user = source.sasl_username
        return SourceUnavailableError(
            f"{where}Kafka at {servers} refused the SASL {source.sasl_mechanism} login of user '{user}': {cause}"
        )
    if isinstance(cause, ssl.SSLError):
        return SourceUnavailableError(f"{where}TLS with Kafka at {servers} failed: {cause}")
    if source.security_protocol in ("SSL", "SASL_SSL") and isinstance(cause, ConnectionResetError | EOFError):
        # A plaintext listener cannot parse a ClientHello and drops the connection: no SSL error,
        # just a reset. Waiting would never end; a broker restarting under the handshake is rarer.
        return SourceUnavailableError(
            f"{where}TLS with Kafka at {servers} failed: the broker closed the connection during the handshake "
            f"({type(cause).__name__}); is that a plaintext listener?"
        )
    if isinstance(cause, KafkaConnectionError | KafkaTimeoutError | OSError | TimeoutError):
        return SourceUnreachableError(f"{where}Kafka at {servers} is not reachable: {cause}")
    return SourceUnavailableError(f"{where}Kafka at {servers} refused the consumer: {cause}")


def consumer(source: KafkaSource, *, purpose: str = "", **settings: Any) -> AIOKafkaConsumer:
    """A consumer on `source`; `purpose` (e.g. "status") is appended to its client id, so a
    broker's logs tell the bridge's clients apart."""
    return AIOKafkaConsumer(**kafka_client_options(source, client_suffix=_suffix(purpose)), **settings)


def admin(source: KafkaSource, *, purpose: str, **settings: Any) -> AIOKafkaAdminClient:
    """An admin client on `source` (metadata, offsets, groups)."""
    return AIOKafkaAdminClient(**kafka_client_options(source, client_suffix=_suffix(purpose)), **settings)


def producer(source: KafkaSource, *, purpose: str, **settings: Any) -> AIOKafkaProducer:
    """A producer on `source` (reverse routes, test traffic)."""
    return AIOKafkaProducer(**kafka_client_options(source, client_suffix=_suffix(purpose)), **settings)


def _suffix(purpose: str) -> str:
    return f"-{purpose}" if purpose else ""
