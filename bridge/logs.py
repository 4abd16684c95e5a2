"""Logging set-up for the long-running commands: one line per event, secrets never included.

Connection URLs are redacted where they are logged (bridge.jetstream.connection.redact_url)
and secrets are held as pydantic SecretStr, so nothing here needs to scrub text.
"""

from __future__ import annotations

import logging
import sys

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(level: str = "info") -> None:
    """Human-readable lines on stderr; the clients' chatty loggers are held at WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS.get(level.lower(), logging.INFO))
    for noisy in ("aiokafka", "aio_pika", "aiormq"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # nats-py logs a traceback for every failed reconnect attempt; the bridge's error
    # callback already reports each one in a single line.
    logging.getLogger("nats").setLevel(logging.CRITICAL)
