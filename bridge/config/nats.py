"""The `nats:` section: how the bridge reaches NATS, and how it logs in."""

from __future__ import annotations

from datetime import timedelta

from pydantic import (
    Field,
    SecretStr,
    model_validator,
)

from bridge.config.base import Strict
from bridge.config.durations import Duration
from bridge.config.limits import INT32_MAX


class NatsConfig(Strict):
    """How the bridge reaches NATS. Credentials are references, never literals."""

    servers: list[SecretStr] = Field(
        default_factory=lambda: [SecretStr("nats://127.0.0.1:4222")],
        min_length=1,
        description="NATS server URLs; the client fails over between them. May be `${NATS_URL}`.",
        json_schema_extra={"items": {"type": "string"}, "examples": [["nats://127.0.0.1:4222"]]},
    )
    name: str = Field("nats-bridge", description="Connection name shown in the server's monitoring.")
    user: str | None = Field(None, description="User name for user/password authentication.")
    password: SecretStr | None = Field(None, description="Password; write it as a `${VAR}` reference, never a literal.")
    token: SecretStr | None = Field(
        None, description="Authentication token; write it as a `${VAR}` reference, never a literal."
    )
    credentials_file: str | None = Field(
        None, description="Path of a `.creds` file (JWT and NKey seed) for decentralised auth."
    )
    nkey_seed_file: str | None = Field(None, description="Path of a file holding an NKey seed.")
    tls_ca_file: str | None = Field(None, description="CA bundle to verify the servers' certificates.")
    tls_cert_file: str | None = Field(None, description="Client certificate (PEM) for servers that verify clients.")
    tls_key_file: str | None = Field(None, description="The client certificate's private key (PEM).")
    tls_handshake_first: bool = Field(
        False,
        description="Start with the TLS handshake before the server's INFO (the server needs "
        "`tls { handshake_first: true }`, nats-server 2.10.4+); implies TLS.",
    )
    connect_timeout: Duration = Field(
        timedelta(seconds=5), description="Bound on the initial connect, so a wrong URL fails fast."
    )
    ping_interval: Duration = Field(
        timedelta(seconds=5),
        description=(
            "How often to ping the server; a hung or dead connection is noticed within two intervals "
            "(a round of PubAck timeouts checks it sooner)."
        ),
    )
    max_reconnect_attempts: int = Field(
        -1,
        ge=-1,
        le=INT32_MAX,
        strict=True,
        description="Reconnect attempts before giving up; -1 (the default) retries forever.",
    )
    monitor_urls: list[SecretStr] = Field(
        default_factory=list,
        description=(
            "Monitoring endpoints of the servers (`http://nats-1:8222`), read only by `dry-run --connect` "
            "and `status` for each server's `sync_interval` (/varz), which JetStream does not reveal to "
            "clients. Optional; `run` never uses them."
        ),
        json_schema_extra={"items": {"type": "string"}, "examples": [["http://127.0.0.1:8222"]]},
    )

    @model_validator(mode="after")
    def _one_auth_method(self) -> NatsConfig:
        methods = [
            name
            for name, value in (
                ("password", self.password),
                ("token", self.token),
                ("credentials_file", self.credentials_file),
                ("nkey_seed_file", self.nkey_seed_file),
            )
            if value is not None
        ]
        if len(methods) > 1:
            raise ValueError(f"choose one authentication method, not {' and '.join(methods)}")
        if self.password is not None and self.user is None:
            raise ValueError("'password' needs 'user'")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("'tls_cert_file' and 'tls_key_file' go together")
        return self
