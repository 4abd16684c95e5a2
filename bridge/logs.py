"""Logging set-up for the long-running commands: one line per event, secrets never included.

Secrets are held as pydantic SecretStr and connection URLs are redacted where they are
logged (bridge.brokers.nats.client.redact_url). As a last line of defence, every
formatted line — message, exception and traceback alike — is scrubbed of the mapping
file's secret values before it is written, so a client library that prints a URL or a
password in an error cannot leak it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import SecretStr
from pythonjsonlogger.json import JsonFormatter

from bridge.config.model import BridgeConfig

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
HUMAN_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
MIN_SECRET_LENGTH = 4  # shorter values would scrub ordinary words out of every line
REDACTED = "***"


class LogFormat(StrEnum):
    HUMAN = "human"
    JSON = "json"


class Scrubber:
    """Replaces every known secret (as written, URL-encoded and JSON-escaped) with `***`: the
    last line of defence for anything the bridge writes out (log lines, /status)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if len(secret) >= MIN_SECRET_LENGTH:
                forms.update({secret, quote(secret, safe=""), json.dumps(secret)[1:-1]})
        self._forms = sorted(forms, key=len, reverse=True)  # longest first: no partial leftovers

    def scrub(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        return text


class SecretScrubbingFormatter(logging.Formatter):
    """Formats with `inner`, then scrubs the line (tracebacks included)."""

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self._inner = inner
        self._scrubber = Scrubber(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return self._scrubber.scrub(self._inner.format(record))


def config_secrets(config: BridgeConfig) -> list[str]:
    """Every secret value the mapping file resolved to: passwords, tokens, URL passwords."""
    values: list[SecretStr | None] = [config.nats.password, config.nats.token, *config.nats.servers]
    values += config.nats.monitor_urls
    nats = config.nats
    for path in (nats.credentials_file, nats.nkey_seed_file):
        secrets_in_file = _file_secrets(path)
        values += [SecretStr(value) for value in secrets_in_file]
    for source in config.sources.values():
        values += source.secret_values()
    secrets = []
    for value in values:
        if value is None:
            continue
        text = value.get_secret_value()
        password = _url_password(text)
        if password is not None:
            secrets += [password, unquote(password)]  # as written in the URL, and as sent
        elif "://" not in text:
            secrets.append(text)
    return secrets


def _file_secrets(path: str | None) -> list[str]:
    """The seed and JWT lines of an NKey seed or .creds file: values that must never be logged."""
    if path is None:
        return []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith(("-", "*", "#"))]


def _url_password(text: str) -> str | None:
    if "://" not in text:
        return None
    try:
        return urlsplit(text).password
    except ValueError:
        return None


def redact_url(url: str) -> str:
    """`url` with any password replaced by `***`, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None and not (parts.username and "@" in parts.netloc):
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    netloc = f"{user}:***@{host}" if parts.password is not None else f"***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class RepeatedLineFilter(logging.Filter):
    """Lets a line through once per `interval` seconds and drops its repeats meanwhile, saying
    how many were dropped on the next one let through.

    aiokafka logs an ERROR for every failed connection attempt ("Unable connect to ...", about
    seven a second while a broker is down, from the consumer, the producer of a reverse route
    and every start attempt alike): an outage of a minute buried everything else in the log.
    Only lines of `logger` (and its children) starting with one of `prefixes` are limited."""

    def __init__(self, logger: str, prefixes: tuple[str, ...], interval: float = 60.0) -> None:
        super().__init__()
        self._logger = logger
        self._prefixes = prefixes
        self._interval = interval
        self._last: dict[str, tuple[float, int]] = {}  # line -> (when let through, dropped since)

    def filter(self, record: logging.LogRecord) -> bool:
        template = record.msg if isinstance(record.msg, str) else ""
        if not template.startswith(self._prefixes) or record.name.partition(".")[0] != self._logger:
            return True
        line = record.getMessage()
        now = time.monotonic()
        shown_at, dropped = self._last.get(line, (-self._interval, 0))
        if now - shown_at < self._interval:
            self._last[line] = (shown_at, dropped + 1)
            return False
        self._last[line] = (now, 0)
        if dropped:
            record.msg, record.args = f"{line} ({dropped} more like it in the last {self._interval:g}s)", None
        return True


class RetriedByTheClientFilter(logging.Filter):
    """aiokafka's ERROR about a request it retries by itself becomes a WARNING.

    On a brand-new Kafka, and while a broker restarts, the group coordinator is not elected yet:
    aiokafka logs "Group Coordinator Request failed: [Error 15] CoordinatorNotAvailableError" as
    an ERROR, asks again a moment later, and the bridge goes on once Kafka answers. An ERROR in
    the first seconds of a healthy start (the quickstart showed two) teaches operators to ignore
    ERRORs. Only lines whose error aiokafka itself marks retriable change; the rest stay ERRORs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and record.name.partition(".")[0] == "aiokafka":
            args = record.args if isinstance(record.args, tuple) else ()
            if any(getattr(arg, "retriable", False) is True for arg in args):
                record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


def configure_logging(
    level: str = "info",
    log_format: LogFormat = LogFormat.HUMAN,
    *,
    secrets: Iterable[str] = (),
    worker: int | None = None,
) -> None:
    """Lines on stderr, human or JSON; the clients' chatty loggers are held at WARNING.

    A worker process of `run --workers N` (bridge.workers) says which one it is on every line
    (`worker=K`, or a `worker` field), as its lines share the supervisor's stderr with the others'."""
    inner: logging.Formatter
    if log_format is LogFormat.JSON:
        inner = JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            static_fields={} if worker is None else {"worker": worker},
        )
    else:
        human = HUMAN_FORMAT if worker is None else HUMAN_FORMAT.replace("%(name)s", f"worker={worker} %(name)s")
        inner = logging.Formatter(human)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SecretScrubbingFormatter(inner, secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS.get(level.lower(), logging.INFO))
    for noisy in ("aiokafka", "aio_pika", "aiormq", "aiohttp"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # On the handler: a logger's filter does not see the records of its children (aiokafka.client).
    handler.addFilter(RetriedByTheClientFilter())
    handler.addFilter(RepeatedLineFilter("aiokafka", ("Unable connect to", "Group Coordinator Request failed")))
    # nats-py logs a traceback for every failed reconnect attempt; the bridge's error
    # callback already reports each one in a single line.
    logging.getLogger("nats").setLevel(logging.CRITICAL)
    # aiormq logs tracebacks when a connection drops; the source reports each retry in one line.
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
