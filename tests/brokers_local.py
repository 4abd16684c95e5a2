"""The local test brokers of compose/brokers, seen from Python (tests and fixtures).

compose/brokers is the one place that knows ports, node names and the state directory; this module
only runs it. Failure tests can use it to stop, kill or restart a broker under a running bridge:

    from brokers_local import brokers
    brokers("kill", "rabbitmq")
    brokers("start", "rabbitmq")

Only meaningful for a broker this session took from compose/brokers (not from Docker, not from a
URL in the environment): check `is_local(name)` first.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BROKERS_SCRIPT = ROOT / "compose" / "brokers"

# how this test session got each broker ("docker", "env" or "local"); filled in by tests/conftest.py
SOURCES: dict[str, str] = {}


class BrokersError(RuntimeError):
    """compose/brokers exited non-zero."""


def brokers(*args: str, timeout: float = 300.0) -> str:
    """Run `compose/brokers ARGS...` and return its output; raise BrokersError on failure."""
    try:
        proc = subprocess.run(
            [str(BROKERS_SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokersError(f"compose/brokers {' '.join(args)} did not finish within {timeout:g}s") from exc
    if proc.returncode != 0:
        raise BrokersError(
            f"compose/brokers {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}".rstrip()
        )
    return proc.stdout + proc.stderr


@functools.cache
def broker_env() -> dict[str, str]:
    """The `export NAME=value` lines of `compose/brokers env` as a dict (URLs of the local brokers)."""
    result: dict[str, str] = {}
    for line in brokers("env").splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line.removeprefix("export ").partition("=")
            result[name.strip()] = value.strip()
    return result


def rabbitmqctl(*args: str, timeout: float = 60.0) -> str:
    """Run rabbitmqctl against the local test node (e.g. `rabbitmqctl("close_all_connections", "x")`)."""
    return brokers("rabbitmqctl", *args, timeout=timeout)


def is_local(name: str) -> bool:
    """True when this test session got broker NAME (nats, rabbitmq, kafka) from compose/brokers."""
    return SOURCES.get(name) == "local"
