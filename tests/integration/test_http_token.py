"""The HTTP endpoint bound beyond loopback: a bearer token guards /status and /metrics, the
probes stay open, and the token never reaches the log."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from kafka_helpers import BridgeProcess, write_mapping

pytestmark = [pytest.mark.nats, pytest.mark.kafka]

BridgeFactory = Callable[[Path], BridgeProcess]
TOKEN = "http-t0ken-9b1e"


async def test_status_and_metrics_need_the_token_and_probes_do_not(
    tmp_path: Path, nats_url: str, kafka_bootstrap: str, unique_name: str, bridge_process: BridgeFactory
) -> None:
    mapping = write_mapping(
        tmp_path / "m.yaml", nats_url=nats_url, bootstrap=kafka_bootstrap, stream=unique_name.upper(),
        topic=unique_name, group=f"bridge-{unique_name}",
    )  # fmt: skip
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    bridge = bridge_process(mapping)
    bridge.args = ("--http", "0.0.0.0:0", "--http-token-file", str(token_file))
    bridge.start()
    url = (await bridge.http_url()).replace("0.0.0.0", "127.0.0.1")
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/readyz"):
            async with session.get(url + path) as response:
                assert response.status in (200, 503), path  # open: no 401 for probes
        for path in ("/status", "/metrics"):
            async with session.get(url + path) as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"] == "Bearer"
            async with session.get(url + path, headers={"Authorization": "Bearer wrong"}) as response:
                assert response.status == 401
            async with session.get(url + path, headers={"Authorization": f"Bearer {TOKEN}"}) as response:
                assert response.status == 200
    assert bridge.terminate() == 0, bridge.log()
    logged = bridge.log_path.read_text()
    assert TOKEN not in logged
    assert "without a bearer token" not in logged

    open_bridge = bridge_process(mapping)
    open_bridge.args = ("--http", "0.0.0.0:0")
    open_bridge.start()
    await open_bridge.wait_for_log("without a bearer token", timeout=60)
    assert open_bridge.terminate() == 0, open_bridge.log()
