"""How long one JetStream atomic batch commit takes, against a plain publish, on R1 and R3.

nats-server stages an atomic batch of an R1 file stream in a store of its own on disk, and an R3
one in memory; this times 50 sequential batches of 1, 2, 5 and 20 messages (the commit's PubAck
ends each) and a few plain publishes, and prints medians and p90s (bench/README.md, "What
batched costs in latency").

    bash compose/brokers start nats nats-cluster
    .venv/bin/python bench/atomic_commit_rtt.py nats://127.0.0.1:14222 1
    .venv/bin/python bench/atomic_commit_rtt.py nats://127.0.0.1:14231,nats://127.0.0.1:14232,nats://127.0.0.1:14233 3
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

import nats
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

STREAM = "BENCH_ATOMIC_RTT"


def _quantiles(samples: list[float]) -> str:
    samples.sort()
    return f"median {samples[len(samples) // 2] * 1000:.2f} ms, p90 {samples[int(len(samples) * 0.9)] * 1000:.2f} ms"


async def main(servers: list[str], replicas: int) -> None:
    nc = await nats.connect(servers=servers)
    js = nc.jetstream()
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(STREAM)
    await js.add_stream(StreamConfig(name=STREAM, subjects=["bench-rtt.>"], allow_atomic=True, num_replicas=replicas))
    try:
        print(f"R{replicas}, {', '.join(servers)}")
        for size in (1, 2, 5, 20):
            samples = []
            for batch in range(50):
                started = time.perf_counter()
                for number in range(1, size + 1):
                    headers = {
                        "Nats-Batch-Id": f"b{size}-{batch}",
                        "Nats-Batch-Sequence": str(number),
                        "Nats-Msg-Id": f"{size}-{batch}-{number}",
                    }
                    if number == size:
                        headers["Nats-Batch-Commit"] = "1"
                        await nc.request("bench-rtt.a", b"x" * 100, headers=headers, timeout=5)
                    else:
                        await nc.publish("bench-rtt.a", b"x" * 100, headers=headers)
                samples.append(time.perf_counter() - started)
            print(f"  atomic batch of {size:2}: {_quantiles(samples)}")
        samples = []
        for number in range(50):
            started = time.perf_counter()
            await js.publish("bench-rtt.b", b"x" * 100, headers={"Nats-Msg-Id": f"plain-{number}"})
            samples.append(time.perf_counter() - started)
        print(f"  plain publish:      {_quantiles(samples)}")
        print(f"command: {' '.join(sys.argv)}")
    finally:
        await js.delete_stream(STREAM)
        await nc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1].split(","), int(sys.argv[2]) if len(sys.argv) > 2 else 1))
