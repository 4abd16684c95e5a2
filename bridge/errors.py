"""The error tree of nats-bridge.

Every failure the bridge reports to a person is one of these, so the CLI can print a
clear line and choose an exit code without ever showing a traceback::

    BridgeError                     anything the bridge itself raises on purpose
    ├── ConfigError                 a mapping file is unusable; carries every ConfigIssue found
    ├── TemplateError               a subject or Msg-Id template is wrong (bridge.routing.templates)
    │   ├── TemplateSyntaxError     ... as written (found at load time, with a column)
    │   └── TemplateRenderError     ... for one message (missing header, index out of range)
    ├── SourceUnavailableError      a source broker is unreachable or refused the subscription
    │   └── SourceUnreachableError  ... did not answer at all: an outage, waited out at start too
    ├── NatsUnavailableError        NATS is unreachable at start-up (bridge.runner)
    └── RouteStoppedError           a route met a message it must not pass (raised by bridge.pipeline)

Errors raised by aio-pika, aiokafka and nats-py are translated into this tree at the edge
of each adapter; anything not recognised there is re-raised untouched, because hiding an
unknown failure behind a generic message would make it harder to fix.
"""

from __future__ import annotations

from dataclasses import dataclass


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


class SourceUnavailableError(BridgeError):
    """A source broker could not be reached, or refused the bridge's subscription."""


class SourceUnreachableError(SourceUnavailableError):
    """The source broker did not answer (connection refused or reset, no answer in time): an
    outage that ends by itself, so a route starting during it waits, where a refused login, a
    failed TLS handshake or a missing queue needs a person and ends the bridge."""


class RouteStoppedError(BridgeError):
    """A route met a message it must not pass over (`on_error: stop`); nothing was settled past it."""
