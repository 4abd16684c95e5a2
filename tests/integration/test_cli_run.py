"""`nats-bridge traffic`, `run` and `streams` as an operator uses them, on real brokers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from kafka_helpers import ROOT

pytestmark = [pytest.mark.kafka, pytest.mark.nats]


async def delete_topics(bootstrap: str, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=env,
        cwd=ROOT,
    )


def test_traffic_run_streams_and_sigterm_exit_0(
    tmp_path: Path, nats_url: str, kafka_bootstrap: str, unique_name: str
) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        (ROOT / "mappings" / "kafka-orders.yaml")
        .read_text()
        .replace("KAFKA_ORDERS", unique_name.upper())
        .replace("kafka.orders.>", f"{unique_name}.>")
        .replace('"kafka.{topic[0:]}', f'"{unique_name}.{{topic[0:]}}')
        .replace("orders.events", f"{unique_name}-events")
        .replace("orders.payments", f"{unique_name}-payments")
    )
    env = {**os.environ, "NATS_URL": nats_url, "KAFKA_BOOTSTRAP": kafka_bootstrap}
    sent = cli("traffic", str(mapping), "--count", "300", env=env)
    assert sent.returncode == 0, sent.stderr
    assert f"sent 300 records to Kafka topic '{unique_name}-events'" in sent.stdout

    with (tmp_path / "run.log").open("wb") as log:
        bridge = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", str(mapping)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        try:
            shown = cli("streams", str(mapping), "--wait-for", "600", "--timeout", "60", "--json", env=env)
            assert shown.returncode == 0, shown.stdout + shown.stderr
            (state,) = json.loads(shown.stdout)
            assert state["messages"] == 600
            assert state["last_subject"].startswith(f"{unique_name}.")
        finally:
            bridge.send_signal(signal.SIGTERM)
            code = bridge.wait(timeout=60)
    asyncio.run(delete_topics(kafka_bootstrap, [f"{unique_name}-events", f"{unique_name}-payments"]))
    output = (tmp_path / "run.log").read_text()
    assert code == 0, output
    assert "bridge stopped" in output
    assert "Traceback" not in output
