"""Fault schedules (issue 13, item 6): seeded random faults against real bridges, real brokers.

A *schedule* runs one or more topologies (mapping files generated per run, `topologies.py`) with
1-3 `nats-bridge run` processes each, sends numbered messages through their sources
(`traffic.py`), and meanwhile SIGKILLs and SIGTERMs bridges, restarts Kafka, RabbitMQ and a node of
the NATS cluster, and fills streams (`faults.py`). When everything is back and quiet, the checker
(`checker.py`) reads every stream and dead-letter stream back and asserts, per route, what
README.md's "Guarantees" promise: each source message stored exactly once (by position and by
content), in order where order is promised, dead letters counted and explained.

`schedule.py` draws a schedule from a seed and runs it; `test_fault_schedules.py` is the short CI
profile; `bench/chaos.py --minutes N --seed S` runs long ones. Faults restart brokers, so the suite
runs its own Kafka and RabbitMQ instances (`brokers.py`), never the shared test brokers.

The package reuses the integration tests' helpers (`brokers_local`, `kafka_helpers`); this puts
their directories on the import path for pytest and for bench/chaos.py alike.
"""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
for _path in (_TESTS, _TESTS / "integration"):
    if str(_path) not in sys.path:
        sys.path.append(str(_path))
