"""A bridge that cannot start says why in one line and exits 2, never with a traceback.

Found by the fault-schedule suite (tests/chaos): with two services in the file, a Kafka that
does not answer ended in an ExceptionGroup (the failing route, and the cut-over controller
starting a task on a group already shutting down), exit 1; and a JetStream that did not answer
while the streams were declared ended in an unhandled nats TimeoutError.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from kafka_helpers import ROOT
from private_nats import PrivateNatsServer

pytestmark = [pytest.mark.nats]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once the socket is closed


def _run(mapping: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", "run", str(mapping), "--http", "off"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


def _mapping(path: Path, nats_url: str, bootstrap: str, name: str) -> Path:
    path.write_text(
        textwrap.dedent(f"""\
            nats: {{servers: ["{nats_url}"], connect_timeout: 5s}}
            streams: [{{name: {name.upper()}, subjects: ["{name}.>"]}}]
            sources:
              kafka: {{type: kafka, bootstrap_servers: ["{bootstrap}"]}}
            services:
              one:
                routes: [{{name: r, source: kafka, from: {{topics: [t1]}}, to: "{name}.one.{{partition}}"}}]
              two:
                routes: [{{name: r, source: kafka, from: {{topics: [t2]}}, to: "{name}.two.{{partition}}"}}]
            """)
    )
    return path


def test_two_services_with_kafka_unreachable_exit_2_with_one_line(
    tmp_path: Path, nats_url: str, unique_name: str
) -> None:
    mapping = _mapping(tmp_path / "m.yaml", nats_url, f"127.0.0.1:{_closed_port()}", unique_name)
    done = _run(mapping)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "ExceptionGroup" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "kafka" in errors[0].lower()


def test_a_jetstream_that_does_not_answer_at_start_exits_2_with_one_line(tmp_path: Path, unique_name: str) -> None:
    plain = PrivateNatsServer(tmp_path / "nats", jetstream=False)  # core NATS only: no $JS.API answers
    plain.start()
    try:
        done = _run(_mapping(tmp_path / "m.yaml", plain.url, "127.0.0.1:9", unique_name))
    finally:
        plain.stop()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "NATS did not answer while declaring the streams" in done.stderr
