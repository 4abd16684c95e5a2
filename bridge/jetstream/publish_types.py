"""What one publish is, and what can come of it: the value types the publisher and its owners share.

An owner (the pipeline) hands the publisher `InFlight` entries and hears back, once per attempt,
`published` or `failed` with a `PublishFailure`. Kept apart from the publisher so an owner's
modules import the vocabulary without the machinery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Self, TypeVar

from bridge.message import OutboundMessage

_Entry_contra = TypeVar("_Entry_contra", bound="InFlight", contravariant=True)

STATUS_HEADER = "Status"
NO_RESPONDERS = "503"
# Atomic batch headers (nats-server 2.12+, streams with allow_atomic): the server stores every
# message of a batch or none, in order, once the message carrying the commit header arrives.
BATCH_ID_HEADER = "Nats-Batch-Id"
BATCH_SEQUENCE_HEADER = "Nats-Batch-Sequence"
BATCH_COMMIT_HEADER = "Nats-Batch-Commit"
# JetStream errors that resending the same message cannot cure (nats-server's errors.json).
PERMANENT_ERRORS = frozenset(
    {
        10054,  # message size exceeds the stream's max_msg_size
    }
)


@dataclass(frozen=True, slots=True)
class PublishFailure:
    """Why one publish attempt did not end in a PubAck.

    `permanent` failures cannot succeed by resending the same message (the client refuses
    it: too large, a bad header); the owner dead-letters or stops. Everything else is
    retried with the same Nats-Msg-Id.
    """

    kind: str  # "error" | "no-responders" | "timeout" | "disconnected" | "refused" | "permission"
    description: str
    code: int = 0
    err_code: int = 0
    permanent: bool = False

    def __str__(self) -> str:
        codes = f" (code {self.code}, err_code {self.err_code})" if self.code else ""
        return f"{self.kind}: {self.description}{codes}"


class PublishOwner(Protocol[_Entry_contra]):
    """Who hears the outcome of a publish; the pipeline's per-lane tracker implements it.

    Generic in the kind of entry it is handed back: an owner that keeps more per message than
    the publisher does subclasses `InFlight` (the pipeline's `LaneEntry`) and gets its own
    entries back, with nothing to look up and no second object per message."""

    def sendable(self, entry: _Entry_contra) -> bool:
        """Asked just before `entry` is sent; False skips it (the owner will resend it)."""

    def published(self, entry: _Entry_contra, seq: int, duplicate: bool) -> None:
        """The message is stored in stream sequence `seq` (`duplicate`: it already was)."""

    def failed(self, entry: _Entry_contra, failure: PublishFailure) -> None:
        """This attempt failed; the message may or may not be stored (see PublishFailure)."""


@dataclass(slots=True, eq=False)
class InFlight:
    """One message on its way to JetStream: what the publisher needs to send it and to hand
    its outcome back, nothing of what its owner does with that outcome.

    `position` is the source's own position (a Kafka offset, an AMQP delivery tag), opaque
    here: it names the message for its owner. `token` names the current attempt, so a late
    reply to an older attempt is ignored. `seq` and `stream` are where the last PubAck said the
    message is stored; `attempts` and `sent_at` count and time its attempts.
    """

    outbound: OutboundMessage
    owner: PublishOwner[Self]
    position: int
    token: str = ""
    sent_at: float = 0.0
    attempts: int = 0
    seq: int = 0
    stream: str = ""
    batch: list[Self] | None = None  # on the commit message of an atomic batch: every message of it


@dataclass(slots=True)
class PublisherStats:
    """Running totals, read by metrics and by tests."""

    sent: int = 0
    batches: int = 0  # atomic batches sent (ordering: batched)
    stored: int = 0
    duplicates: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    def count_failure(self, failure: PublishFailure) -> None:
        self.failures[failure.kind] = self.failures.get(failure.kind, 0) + 1
