"""What `ordering: strict` and `ordering: batched` cost: the same Kafka backlog drained by each mode.

`ordering: strict` keeps one publish in flight per partition, which rules out the one
reordering the pipelined default still allows (JetStream refusing a record with an error
reply while storing the next one). Its price is a round trip per record per partition; this
measures it, the modes alternating on the same topic in one run, so their ratios are fair on a
noisy machine. `ordering: batched` (one JetStream atomic batch of up to 500 records in flight per
partition) rules out every reorder, a leader's graceful stop included; it is measured beside them.

    bash compose/brokers start nats kafka
    flock /tmp/nats-bridge-bench.lock .venv/bin/python bench/strict_ordering_cost.py [--messages N] [--repeats R]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import nats
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 6


def mapping(nats_url: str, bootstrap: str, stream: str, topic: str, group: str, ordering: str) -> str:
    return textwrap.dedent(f"""\
        nats: {{servers: ["{nats_url}"]}}
        streams: [{{name: {stream}, subjects: ["{stream.lower()}.>"]}}]
        sources: {{kafka: {{type: kafka, bootstrap_servers: ["{bootstrap}"]}}}}
        services:
          bench:
            routes:
              - name: r
                source: kafka
                from: {{topics: ["{topic}"], group: "{group}"}}
                to: "{stream.lower()}.{{partition}}"
                ordering: {ordering}
        """)


async def fill(bootstrap: str, topic: str, count: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=512 * 1024)
    await producer.start()
    sends = [
        await producer.send(topic, b"x" * 100, key=str(i).encode(), partition=i % PARTITIONS) for i in range(count)
    ]
    await asyncio.gather(*sends)
    await producer.stop()


async def drain(nats_url: str, mapping_text: str, stream: str, count: int, workdir: Path) -> float:
    """Run the bridge until `count` records are stored; msg/s between the first and last stored."""
    path = workdir / f"{stream}.yaml"
    path.write_text(mapping_text)
    with (workdir / f"{stream}.log").open("wb") as log:
        bridge = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "run", str(path), stdout=log, stderr=log, cwd=ROOT
        )
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                state = (await js.stream_info(stream)).state
            except nats.js.errors.NotFoundError:
                state = None
            if state is not None and state.messages >= count:
                break
            if time.monotonic() > deadline or bridge.returncode is not None:
                raise RuntimeError(f"bridge did not store {count} records; see {workdir}")
            await asyncio.sleep(0.2)
        first = await js.get_msg(stream, state.first_seq)
        last = await js.get_msg(stream, state.last_seq)
        if first.time is None or last.time is None:
            raise RuntimeError("the server returned no storage times")
        seconds = (last.time - first.time).total_seconds()
        await js.delete_stream(stream)
        return count / seconds
    finally:
        bridge.send_signal(signal.SIGTERM)
        await asyncio.wait_for(bridge.wait(), 60)
        await nc.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    nats_url = os.environ.get("NATS_URL", "nats://127.0.0.1:14222")
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    run = uuid.uuid4().hex[:8]
    topic = f"strict-cost-{run}"
    await fill(bootstrap, topic, args.messages)
    rates: dict[str, list[float]] = {"pipelined": [], "strict": [], "batched": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for ordering, samples in rates.items():
                stream = f"STRICT_{run}_{ordering}_{repeat}".upper()
                text = mapping(nats_url, bootstrap, stream, topic, f"strict-cost-{run}-{ordering}-{repeat}", ordering)
                samples.append(await drain(nats_url, text, stream, args.messages, Path(tmp)))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.delete_topics([topic])
    await admin.close()
    pipelined = statistics.median(rates["pipelined"])
    print("nats-bridge: the cost of ordering: strict and batched")
    print(f"command: {shlex.join(['python', *sys.argv])}")
    print(f"backlog: {args.messages:,} x 100 B over {PARTITIONS} partitions, {args.repeats} repeats (medians)")
    print()
    print("| ordering | msg/s (median) | samples |")
    print("|---|---|---|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):,.0f} | {', '.join(f'{v:,.0f}' for v in values)} |")
    print()
    for name in ("strict", "batched"):
        print(f"{name} / pipelined: {statistics.median(rates[name]) / pipelined:.1%}")


if __name__ == "__main__":
    asyncio.run(main())
