"""`ordering: batched` is the default; a server that cannot take atomic batches (older than 2.12,
which drops `allow_atomic`) must not stop a bridge whose routes only took the default.

Such a server is not at hand here (the suite's nats-server is 2.15): the fake below answers as one
does — it creates the stream and returns its config without the setting it does not know. The
real-server cases (a stream without allow_atomic refusing batches) are in
tests/integration/test_reorder_detection.py.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from bridge.config.model import BridgeConfig
from bridge.errors import AtomicBatchesUnsupportedError
from bridge.plan import compile_plan
from bridge.runner import Bridge


class _OldServer:
    """Streams created as nats-server before 2.12 creates them: allow_atomic dropped."""

    def __init__(self) -> None:
        self.streams: dict[str, js_api.StreamConfig] = {}

    async def stream_info(self, name: str) -> js_api.StreamInfo:
        if name not in self.streams:
            raise NotFoundError
        return js_api.StreamInfo(config=self.streams[name], state=None)  # type: ignore[arg-type]

    async def add_stream(self, config: js_api.StreamConfig) -> js_api.StreamInfo:
        kept = dataclasses.replace(config, allow_atomic=None)
        self.streams[config.name or ""] = kept
        return js_api.StreamInfo(config=kept, state=None)  # type: ignore[arg-type]


def _config(ordering: str | None, replicas: int = 3) -> BridgeConfig:
    route: dict[str, Any] = {"name": "r", "source": "k", "from": {"topics": ["t"]}, "to": "s.x"}
    if ordering:
        route["ordering"] = ordering
    return BridgeConfig.model_validate(
        {
            "nats": {"servers": ["nats://127.0.0.1:4222"]},
            "streams": [{"name": "S", "subjects": ["s.>"], "replicas": replicas}],
            "sources": {"k": {"type": "kafka", "bootstrap_servers": ["127.0.0.1:9092"]}},
            "services": {"svc": {"routes": [route]}},
        }
    )


async def test_routes_left_to_the_default_run_pipelined_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    config = _config(None)
    bridge = Bridge(config)
    (route,) = compile_plan(config).routes
    assert bridge._pipeline_settings(route).atomic_batch > 0  # batched, until the server says otherwise
    server = _OldServer()
    with caplog.at_level(logging.WARNING):
        await bridge._declare_once(server, config.all_streams())  # type: ignore[arg-type]
    assert "S" in server.streams
    settings = bridge._pipeline_settings(route)
    assert settings.atomic_batch == 0
    assert settings.max_in_flight_per_lane == 0  # pipelined, not strict
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "nats-server 2.12" in warnings[0]
    assert "run pipelined" in warnings[0]


async def test_a_route_that_asks_for_batched_stops_the_bridge_instead() -> None:
    config = _config("batched")
    with pytest.raises(AtomicBatchesUnsupportedError, match="stream S: the NATS server does not keep allow_atomic"):
        await Bridge(config)._declare_once(_OldServer(), config.all_streams())  # type: ignore[arg-type]


def test_ordering_chosen_tells_the_default_from_the_same_value_written_out() -> None:
    (_, default), (_, written) = _config(None).routes()[0], _config("batched").routes()[0]
    assert default.ordering == written.ordering == "batched"
    assert not default.ordering_chosen
    assert written.ordering_chosen
    assert not _config(None).requires_atomic_batches
    assert _config("batched").requires_atomic_batches


@pytest.mark.parametrize(
    ("ordering", "replicas", "batched"),
    [(None, 3, True), (None, 1, False), ("batched", 1, True), ("pipelined", 3, False), ("strict", 3, False)],
)
def test_left_to_the_default_only_a_route_into_a_replicated_stream_sends_atomic_batches(
    ordering: str | None, replicas: int, batched: bool
) -> None:
    """An R1 stream has no leader to fail over, and nats-server stages each atomic batch of an R1
    file stream on disk (bench/README.md: p50 33 ms at 5,000 msg/s): the default goes pipelined there."""
    config = _config(ordering, replicas)
    (route,) = compile_plan(config).routes
    settings = Bridge(config)._pipeline_settings(route)
    assert (settings.atomic_batch > 0) is batched, settings
    assert settings.max_in_flight_per_lane == (1 if ordering == "strict" else 0)
