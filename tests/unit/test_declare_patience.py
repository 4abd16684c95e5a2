"""Declaring the streams waits out a JetStream that times out (a cluster just restarted, electing
its meta leader) for up to DECLARE_PATIENCE, and gives up at once when there is no JetStream at all.

Found by bench/leader_stop_order.py: a bridge started right after the cluster's restart exited 2
with "NATS did not answer while declaring the streams (nats: timeout)" a second after the first
stream was created. The retry policy is pure logic; the no-JetStream case against a real server is
tests/integration/test_start_failures.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import ServiceUnavailableError

from bridge.config.model import BridgeConfig
from bridge.errors import NatsUnavailableError
from bridge.runner import Bridge


def _bridge() -> Bridge:
    config = BridgeConfig.model_validate(
        {
            "nats": {"servers": ["nats://127.0.0.1:4222"]},
            "streams": [{"name": "S", "subjects": ["s.>"]}],
            "sources": {"k": {"type": "kafka", "bootstrap_servers": ["127.0.0.1:9092"]}},
            "services": {"svc": {"routes": [{"name": "r", "source": "k", "from": {"topics": ["t"]}, "to": "s.x"}]}},
        }
    )
    return Bridge(config)


def _failing(errors: list[BaseException]) -> Any:
    calls: list[int] = []

    async def declare(*_args: object, **_kwargs: object) -> None:
        calls.append(1)
        if errors:
            raise errors.pop(0)

    declare.calls = calls  # type: ignore[attr-defined]
    return declare


async def test_timeouts_are_asked_again_until_jetstream_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    unavailable = ServiceUnavailableError(code=503, err_code=10008, description="JetStream temporarily unavailable")
    declare = _failing([NatsTimeoutError(), TimeoutError(), unavailable])
    monkeypatch.setattr("bridge.runner.declare_streams", declare)
    monkeypatch.setattr("bridge.runner.asyncio.sleep", _no_sleep)
    await _bridge()._declare(None, [])  # type: ignore[arg-type]
    assert len(declare.calls) == 4


async def test_no_jetstream_at_all_gives_up_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    declare = _failing([NoRespondersError()])
    monkeypatch.setattr("bridge.runner.declare_streams", declare)
    with pytest.raises(NatsUnavailableError, match="NATS did not answer while declaring the streams"):
        await _bridge()._declare(None, [])  # type: ignore[arg-type]
    assert len(declare.calls) == 1


async def test_timeouts_past_the_patience_give_up(monkeypatch: pytest.MonkeyPatch) -> None:
    declare = _failing([NatsTimeoutError() for _ in range(1000)])
    monkeypatch.setattr("bridge.runner.declare_streams", declare)
    monkeypatch.setattr("bridge.runner.DECLARE_PATIENCE", 0.0)
    with pytest.raises(NatsUnavailableError, match="timeout"):
        await _bridge()._declare(None, [])  # type: ignore[arg-type]
    assert len(declare.calls) == 1


async def _no_sleep(_seconds: float) -> None:
    return None
