"""The `sources:` section: the RabbitMQ brokers and Kafka clusters the bridge reads and writes."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    Discriminator,
    Field,
    SecretStr,
    Tag,
    model_validator,
)

from bridge.config.base import NAME_PATTERN, Strict
from bridge.config.durations import Duration


class RabbitMQManagement(Strict):
    """RabbitMQ's management HTTP API, read only by `dry-run --connect` and `status`.

    AMQP cannot tell a quorum queue from a classic one (a passive declare answers both alike),
    so what a legacy queue promises about durability — its type, members, durability — and
    which legacy queues are bound where a shadow route copies can only be read here.
    """

    url: SecretStr = Field(
        description="Base URL of the API, e.g. `http://rabbit:15672/`; a password in it only via `${VAR}`.",
        json_schema_extra={"type": "string", "examples": ["http://rabbit:15672/"]},
    )
    username: str | None = Field(
        None, description="A user with the `monitoring` tag; when absent, the URL's user, else the source's."
    )
    password: SecretStr | None = Field(
        None, description="Its password as a `${VAR}` or `${file:PATH}` reference; when absent, the source's."
    )


class RabbitMQSource(Strict):
    """A RabbitMQ broker the bridge reads from."""

    type: Literal["rabbitmq"] = Field(description="Source kind.")
    url: SecretStr = Field(
        description="AMQP URL, e.g. `amqp://bridge@rabbit:5672/`; put a password in it only via `${VAR}`.",
        json_schema_extra={"type": "string", "examples": ["${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}"]},
    )
    vhost: str | None = Field(None, description="Virtual host; overrides the one in the URL.")
    username: str | None = Field(None, description="User name; overrides the one in the URL.")
    password: SecretStr | None = Field(None, description="Password as a `${VAR}` or `${file:PATH}` reference.")
    tls_ca_file: str | None = Field(None, description="CA bundle to verify the broker (amqps:// URLs).")
    tls_cert_file: str | None = Field(None, description="Client certificate (PEM), for EXTERNAL or verify_peer.")
    tls_key_file: str | None = Field(None, description="The client certificate's private key (PEM).")
    auth_mechanism: Literal["PLAIN", "EXTERNAL"] = Field(
        "PLAIN", description="PLAIN (user and password) or EXTERNAL (the client certificate's identity)."
    )
    prefetch: int = Field(
        1000, ge=1, le=65535, strict=True, description="Most unacknowledged deliveries per consumer: the memory bound."
    )
    heartbeat: Duration = Field(timedelta(seconds=30), description="AMQP heartbeat interval.")
    management: RabbitMQManagement | None = Field(
        None,
        description=(
            "The management API, for the durability posture of `dry-run --connect` and `status` "
            "(queue types, bound queues); optional, never used by `run`."
        ),
    )

    @model_validator(mode="after")
    def _tls_consistent(self) -> RabbitMQSource:
        tls = any(f is not None for f in (self.tls_ca_file, self.tls_cert_file, self.tls_key_file))
        scheme = self.url.get_secret_value().split("://", 1)[0].lower()
        if tls and scheme != "amqps":
            raise ValueError("TLS files need an amqps:// URL")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("'tls_cert_file' and 'tls_key_file' go together")
        if self.auth_mechanism == "EXTERNAL" and (self.tls_cert_file is None or scheme != "amqps"):
            raise ValueError("auth_mechanism EXTERNAL needs an amqps:// URL and a client certificate")
        if self.auth_mechanism == "EXTERNAL" and self.password is not None:
            raise ValueError("auth_mechanism EXTERNAL takes no password: the certificate is the credential")
        return self

    @property
    def msg_id_cluster(self) -> str | None:
        """No qualifier: an AMQP delivery's default Msg-Id comes from its message_id or content."""
        return None

    def secret_values(self) -> list[SecretStr | None]:
        """Every setting of this source that is a secret (for the log scrubber)."""
        values = [self.url, self.password]
        if self.management is not None:
            values += [self.management.url, self.management.password]
        return values

    @property
    def effective_vhost(self) -> str:
        """The vhost the bridge opens: `vhost`, else the URL's (percent-decoded) path, else `/`.
        Offline tools (`explain --definitions`) need it to know which vhost's messages a route sees."""
        if self.vhost is not None:
            return self.vhost or "/"
        return unquote(urlsplit(self.url.get_secret_value()).path.removeprefix("/")) or "/"


class KafkaSource(Strict):
    """A Kafka cluster the bridge reads from through its own consumer groups."""

    type: Literal["kafka"] = Field(description="Source kind.")
    bootstrap_servers: list[str] = Field(
        min_length=1, description="host:port of one or more brokers.", examples=[["127.0.0.1:9092"]]
    )
    client_id: str = Field("nats-bridge", description="Client id shown in broker logs and quotas.")
    cluster_name: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        description="Name that qualifies default Msg-Ids, when several Kafka clusters feed one stream.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism when the protocol uses SASL."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(
        None, description="SASL password as a `${VAR}` or `${file:PATH}` reference."
    )
    ssl_ca_file: str | None = Field(None, description="CA bundle (PEM) to verify the brokers (SSL, SASL_SSL).")
    ssl_cert_file: str | None = Field(None, description="Client certificate (PEM) for brokers that verify clients.")
    ssl_key_file: str | None = Field(None, description="The client certificate's private key (PEM).")
    ssl_key_password: SecretStr | None = Field(
        None, description="Password of an encrypted private key, as a `${VAR}` or `${file:PATH}` reference."
    )

    @property
    def msg_id_cluster(self) -> str | None:
        """What qualifies this cluster's default Msg-Ids (`cluster_name`)."""
        return self.cluster_name

    def secret_values(self) -> list[SecretStr | None]:
        """Every setting of this source that is a secret (for the log scrubber)."""
        return [self.sasl_password, self.ssl_key_password]

    @model_validator(mode="after")
    def _security_consistent(self) -> KafkaSource:
        protocol = self.security_protocol
        sasl = protocol.startswith("SASL_")
        if sasl and (self.sasl_mechanism is None or self.sasl_username is None or self.sasl_password is None):
            raise ValueError(f"{protocol} needs 'sasl_mechanism', 'sasl_username' and 'sasl_password'")
        if not sasl and self.sasl_mechanism is not None:
            raise ValueError(f"'sasl_mechanism' needs security_protocol SASL_SSL (or SASL_PLAINTEXT), not {protocol}")
        ssl_files = (self.ssl_ca_file, self.ssl_cert_file, self.ssl_key_file, self.ssl_key_password)
        if any(f is not None for f in ssl_files) and not protocol.endswith("SSL"):
            raise ValueError(f"ssl_* settings need security_protocol SSL or SASL_SSL, not {protocol}")
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise ValueError("'ssl_cert_file' and 'ssl_key_file' go together")
        return self


def _source_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("type")
        return kind if isinstance(kind, str) else None
    return getattr(value, "type", None)


SourceConfig = Annotated[
    Annotated[RabbitMQSource, Tag("rabbitmq")] | Annotated[KafkaSource, Tag("kafka")],
    Discriminator(
        _source_kind,
        custom_error_type="source_type",
        custom_error_message="every source needs 'type: rabbitmq' or 'type: kafka'",
    ),
]
