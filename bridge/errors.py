"""The error tree of nats-bridge: every error the bridge raises on purpose, in one place.

Every failure the bridge reports to a person is one of these, so the CLI can print a clear
line and choose an exit code without ever showing a traceback::

    BridgeError                         anything the bridge itself raises on purpose
    ├── ConfigError                     a mapping file is unusable; carries every ConfigIssue found
    ├── TemplateError                   a subject, Msg-Id or key template is wrong
    │   ├── TemplateSyntaxError         ... as written (found at load time, with a column; a ValueError)
    │   └── TemplateRenderError         ... for one message (missing header, index out of range)
    ├── SourceUnavailableError          a source broker refused the connection or the subscription
    │   ├── SourceUnreachableError      ... did not answer at all: an outage, waited out
    │   └── RabbitMQConnectError        ... a RabbitMQ connection, with where and why
    ├── NatsUnavailableError            NATS is unreachable at start-up
    ├── NatsConnectionLostError         the NATS client closed for good while running (exit 1)
    ├── JetStreamLostWritesError        a stream forgot acknowledged messages (exit 1, re-copied)
    ├── AtomicBatchesUnsupportedError   `ordering: batched` on a server without atomic batches
    ├── ScanError                       a stream could not be read to its end (verify)
    ├── TargetUnavailableError          a reverse route's legacy broker cannot be written to
    ├── ReverseConsumerError            JetStream refused a reverse route's consumer
    ├── InvalidTransitionError          a phase change not allowed from the current phase
    ├── InvalidRecordError              a phase record that is not one (the phase bucket is input)
    ├── PhaseConflictError              a phase record changed between reading and writing it
    ├── NothingToCopyError              `import rabbitmq` would write a mapping that copies nothing
    ├── HttpAddressError                the --http address cannot be used
    └── RouteStoppedError               a route met a message it must not pass (bridge.pipeline)

Errors raised by aio-pika, aiokafka and nats-py are translated into this tree at the edge
of each adapter (bridge.brokers, bridge.jetstream); anything not recognised there is
re-raised untouched, because hiding an unknown failure behind a generic message would make
it harder to fix.
"""

from __future__ import annotations

from dataclasses import dataclass

# --------------------------------------------------------------------------- the base, and the mapping file


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a mapping file, located so an editor can jump to it.

    `line` and `column` are 1-based, as editors and compilers print them; `path` is the
    dotted key path (`services.orders.routes[0].from`), and `hint` suggests the fix.
    """

    file: str
    line: int
    column: int
    path: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        at = f" {self.path}:" if self.path else ""
        hint = f" — {self.hint}" if self.hint else ""
        return f"{where}:{at} {self.message}{hint}"


class ConfigError(BridgeError):
    """A mapping file cannot be used; `issues` lists every problem, not just the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


class TemplateError(BridgeError):
    """A subject or Msg-Id template is wrong, as written or for one message."""


class TemplateSyntaxError(TemplateError, ValueError):
    """A template cannot be parsed; found when the mapping file loads.

    Also a ValueError, so a pydantic validator that lets it escape still reports it as an
    ordinary validation error. `column` is 0-based into `template`.
    """

    def __init__(self, message: str, column: int, *, template: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.column = column
        self.template = template

    def pointer(self) -> str:
        """The message with the template and a caret under the offending column."""
        if not self.template:
            return self.message
        return f"{self.message}\n  {self.template}\n  {' ' * self.column}^"


class TemplateRenderError(TemplateError):
    """A valid template cannot be rendered for one message (a value it needs is missing)."""

    def __init__(self, message: str, placeholder: str = "") -> None:
        super().__init__(message)
        self.placeholder = placeholder


# --------------------------------------------------------------------------- source brokers


class SourceUnavailableError(BridgeError):
    """A source broker could not be reached, or refused the bridge's subscription."""


class SourceUnreachableError(SourceUnavailableError):
    """The source broker did not answer (connection refused or reset, no answer in time): an
    outage that ends by itself, so a route starting during it waits, where a refused login, a
    failed TLS handshake or a missing queue needs a person and ends the bridge."""


class RabbitMQConnectError(SourceUnavailableError):
    """A connection the broker refused or never answered: where (password as ***) and why;
    `unreachable` when it did not answer at all (an outage, not a setting to fix)."""

    def __init__(self, where: str, reason: str, *, unreachable: bool = False) -> None:
        super().__init__(f"RabbitMQ at {where} {reason}")
        self.where = where
        self.reason = reason
        self.unreachable = unreachable


# --------------------------------------------------------------------------- NATS and JetStream


class NatsUnavailableError(BridgeError):
    """NATS could not be reached at start-up."""


class NatsConnectionLostError(BridgeError):
    """The NATS client closed for good while the bridge ran; already logged when raised."""


class JetStreamLostWritesError(BridgeError):
    """JetStream came back without messages it had acknowledged; already logged when raised."""


class AtomicBatchesUnsupportedError(BridgeError):
    """A route has `ordering: batched` and the server cannot take atomic batches."""


class ScanError(BridgeError):
    """A stream could not be read to its end."""


# --------------------------------------------------------------------------- reverse routes


class TargetUnavailableError(BridgeError):
    """The legacy broker of a reverse route cannot be written to (unreachable, target missing)."""


class ReverseConsumerError(BridgeError):
    """JetStream refused a reverse route's consumer: the stream is missing, or the config clashes."""


# --------------------------------------------------------------------------- cut-over


class InvalidTransitionError(BridgeError):
    """The phase change asked for is not allowed from the current phase."""


class InvalidRecordError(BridgeError):
    """A stored record that is not a phase record: not JSON, wrong types, unknown phase, too large."""


class PhaseConflictError(BridgeError):
    """The record changed between reading and writing it."""


# --------------------------------------------------------------------------- commands


class NothingToCopyError(BridgeError):
    """The export maps to a file that would copy nothing: refused, never written as "valid".

    `nats-bridge import rabbitmq` prints `summary` as its one `error:` line, then `reasons` (the
    import's NOT MAPPED notes), and exits 2.
    """

    summary = "nothing to copy: no legacy queue's traffic can be shadowed, so the mapping would copy no message"

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons or ["the export has no exchanges, queues or bindings"]
        lines = "\n".join(f"- {reason}" for reason in self.reasons)
        super().__init__(f"{self.summary}; nothing written\n{lines}")


class HttpAddressError(BridgeError):
    """The --http address cannot be used."""


# --------------------------------------------------------------------------- the pipeline


class RouteStoppedError(BridgeError):
    """A route met a message it must not pass over (`on_error: stop`); nothing was settled past it."""
