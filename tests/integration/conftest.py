"""Fixtures for the end-to-end tests: bridge processes that never outlive their test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka_helpers import BridgeProcess
from nats.aio.client import Client as NatsClient


@pytest.fixture
def bridge_process(tmp_path: Path) -> Iterator[Callable[..., BridgeProcess]]:
    """Factory: `bridge_process(mapping, *args)` -> a BridgeProcess (not started) running
    `run mapping *args`, killed after the test."""
    made: list[BridgeProcess] = []

    def make(mapping: Path, *args: str) -> BridgeProcess:
        process = BridgeProcess(mapping, tmp_path / f"bridge-{len(made)}.log", args)
        made.append(process)
        return process

    yield make
    for process in made:
        if process.alive():
            process.kill()


@pytest.fixture
def nc(nats_client: NatsClient) -> NatsClient:
    """The connected test client, under the short name the end-to-end tests use."""
    return nats_client
