"""A bridge that cannot start says why in one line and exits 2, never with a traceback; a source
broker that does not answer at start is no such case: it is waited out (the bridge stops on SIGTERM).

Found by the fault-schedule suite (tests/chaos): with two services in the file, a Kafka that
does not answer ended in an ExceptionGroup (the failing route, and the cut-over controller
starting a task on a group already shutting down), exit 1; and a JetStream that did not answer
while the streams were declared ended in an unhandled nats TimeoutError. Since then a Kafka that
does not answer at start is waited for (tests/integration/test_start_while_source_down.py).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time
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


def test_two_services_with_kafka_unreachable_wait_and_stop_cleanly_on_sigterm(
    tmp_path: Path, nats_url: str, unique_name: str
) -> None:
    mapping = _mapping(tmp_path / "m.yaml", nats_url, f"127.0.0.1:{_closed_port()}", unique_name)
    log_path = tmp_path / "bridge.log"
    with log_path.open("wb") as log:
        bridge = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", str(mapping), "--http", "off"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        deadline = time.monotonic() + 60
        while log_path.read_text().count("nothing is read until it answers") < 2:
            assert bridge.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        time.sleep(3)  # a few attempts more
        assert bridge.poll() is None, log_path.read_text()
        bridge.send_signal(signal.SIGTERM)
        code = bridge.wait(timeout=30)
    finally:
        if bridge.poll() is None:
            bridge.kill()
    output = log_path.read_text()
    assert code == 0, output
    assert "Traceback" not in output
    assert "ExceptionGroup" not in output
    assert not [line for line in output.splitlines() if line.startswith("error:")], output
    waiting = [line for line in output.splitlines() if "nothing is read until it answers" in line]
    assert {line.split("route ")[1].split(":")[0] for line in waiting} == {"one/r", "two/r"}, waiting


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
