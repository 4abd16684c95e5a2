"""The CI profile of the fault-schedule suite: one seeded schedule with all six topologies at once.

Each topology loses a bridge instance (SIGKILL or SIGTERM), Kafka, the second Kafka, RabbitMQ and a
node of the NATS cluster are each restarted once, and one stream is full for a few seconds, all
while numbered messages flow; then every stream is read back and checked (tests/chaos/checker.py).
It fails on any lost, doubled or out-of-order message, any unexplained dead letter, and anything a
route stored that its source never held; the message starts with the seed.

    .venv/bin/pytest tests/chaos -s                         # a random seed, printed first
    CHAOS_SEED=1234 .venv/bin/pytest tests/chaos -s         # replay one
    CHAOS_TOPOLOGIES=ad CHAOS_SEED=1234 .venv/bin/pytest tests/chaos -s   # only some topologies
    CHAOS_KEEP=1 ...                                        # keep streams, topics and the vhost to look at

About 1-2 minutes on 2 cores (1:02 to 1:50 measured). The suite's own Kafka, second Kafka and
RabbitMQ (tests/chaos/brokers.py) and the NATS cluster are started by compose/brokers when down;
one that cannot start fails the test (never skips it). With CI=true or BRIDGE_TEST_STOP_BROKERS=1
the suite's own brokers are stopped afterwards (compose/test stops the cluster).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from .brokers import BrokerError, stop_private
from .schedule import generate, run_schedule

pytestmark = [pytest.mark.chaos, pytest.mark.nats, pytest.mark.kafka, pytest.mark.rabbitmq]


@pytest.mark.timeout(420)
async def test_ci_fault_schedule_loses_doubles_and_reorders_nothing(nats_url: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or secrets.randbits(31))
    print(f"\nchaos seed {seed} (replay: CHAOS_SEED={seed} .venv/bin/pytest tests/chaos -s)", flush=True)
    schedule = generate(seed, "ci", os.environ.get("CHAOS_TOPOLOGIES") or None)
    try:
        outcome = await run_schedule(
            schedule,
            nats_url,
            tmp_path,
            keep=os.environ.get("CHAOS_KEEP") == "1",
            log=lambda line: print(line, flush=True),
        )
    except BrokerError as error:
        pytest.fail(f"seed {seed}: a broker the schedule needs is not available:\n{error}", pytrace=False)
    except Exception as error:
        raise AssertionError(f"seed {seed}: the schedule could not be run: {type(error).__name__}: {error}") from error
    finally:
        if os.environ.get("CI") == "true" or os.environ.get("BRIDGE_TEST_STOP_BROKERS") == "1":
            stop_private()
    print(outcome.report(), flush=True)
    assert not outcome.failed, outcome.failure_message()
