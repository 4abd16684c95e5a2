"""(3') OUT, reverse direction: the one small interface every legacy target implements.

A reverse route hands its target a batch of `LegacyMessage`s and gets back one outcome per
message, in order: None when the legacy broker confirmed it (RabbitMQ publisher confirm,
Kafka acks=all), a `WriteFailure` when it did not. The route acknowledges the JetStream
message only for None, so an outcome is a promise: None means "stored by the legacy
broker", never "probably sent".

    LegacyTarget.connect()  open the connection and check the target exists; raises
                            TargetUnavailableError with a line a person can act on
    LegacyTarget.write()    send the whole batch (pipelined), then wait for every confirm;
                            never raises for a broker problem: it reports it per message
                            (permanent when the broker refuses that message for good),
                            connects first when needed, and after a failure drops the
                            connection so the next write starts on a fresh one
    LegacyTarget.close()    release the connection; safe to call at any time
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class LegacyMessage:
    """One JetStream message as the legacy broker gets it.

    `key` is the rendered routing key (RabbitMQ) or record key (Kafka; None for no key);
    `headers` are the NATS headers without JetStream's own (`Nats-*`) — the target adds the
    origin marker; `msg_id` becomes the AMQP message_id.
    """

    key: str | None
    payload: bytes
    headers: Mapping[str, str]
    msg_id: str | None = None


@dataclass(frozen=True, slots=True)
class WriteFailure:
    """Why the legacy broker did not confirm one message.

    `permanent`: the broker refused it for good (too large for the topic, not authorized, a
    precondition it will never meet) — writing it again can only fail again. The route retries
    every other failure; a permanent one it dead-letters, once it has seen the message refused
    written alone (in a batch, a refusal can hit the neighbours of the message at fault).
    """

    reason: str
    permanent: bool = False


Outcome = WriteFailure | None


class LegacyTarget(Protocol):
    """A RabbitMQ exchange or a Kafka topic that a reverse route writes to (see the module docstring)."""

    @property
    def description(self) -> str:
        """What and where, for logs: never contains a secret."""
        ...

    @property
    def key_name(self) -> str:
        """What the rendered template is called for this broker ("routing key", "record key")."""
        ...

    def key_problem(self, key: str | None) -> str | None:
        """Why the broker would refuse `key` (e.g. too long), or None; checked before writing."""
        ...

    async def connect(self) -> None: ...

    async def write(self, batch: Sequence[LegacyMessage]) -> list[Outcome]: ...

    async def close(self) -> None: ...


def legacy_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """NATS headers without JetStream's own: `Nats-Msg-Id`, `Nats-Expected-*` and the like steer
    JetStream and mean nothing (or something wrong) to a legacy consumer."""
    if not headers:
        return {}
    return {name: value for name, value in headers.items() if name[:5].lower() != "nats-"}
