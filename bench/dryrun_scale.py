"""How long offline `dry-run` takes on a large estate, as users run it (no broker needed).

Two figures, medians of `--repeats` runs of `python -m bridge dry-run ...` as a subprocess:

- offline checks on a generated mapping file of N streams and N routes (half Kafka, half
  RabbitMQ topic-exchange shadows, each route into its own stream), target under 10 s at 1,000;
- `--input` replay of M recorded messages (half Kafka records, half AMQP messages), in the text
  table and in `--json`, target under 30 s at 50,000.

    .venv/bin/python bench/dryrun_scale.py                   # 1,000 + 1,000 and 50,000 lines
    .venv/bin/python bench/dryrun_scale.py --routes 200 --lines 5000 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def estate(count: int) -> str:
    """A mapping file of `count` streams and `count` routes, one stream each."""
    lines = [
        "sources:",
        "  k: {type: kafka, bootstrap_servers: ['kafka:9092']}",
        "  r: {type: rabbitmq, url: 'amqp://rabbit/'}",
        "streams:",
    ]
    lines += [f"  - {{name: S{i}, subjects: ['s{i}.>']}}" for i in range(count)]
    lines.append("services:")
    for i in range(count):
        lines += [f"  svc{i}:", "    routes:"]
        if i % 2:
            lines.append(f"      - {{name: r, source: k, from: {{topics: [t{i}]}}, to: 's{i}.{{partition}}'}}")
        else:
            lines.append(
                f"      - {{name: r, source: r, from: {{exchange: x{i}, bindings: ['a.#', '*.b']}}, to: 's{i}.{{rk}}'}}"
            )
    return "\n".join(lines) + "\n"


def recorded(count: int) -> str:
    """`count` JSONL lines for `dry-run --input`, alternating Kafka records and AMQP messages."""
    lines = []
    for i in range(count):
        if i % 2:
            record = {"topic": "t1", "partition": i % 6, "offset": i, "key": f"k{i}", "value": "v" * 100}
            lines.append(json.dumps({"kafka": record}))
        else:
            message = {"exchange": "x0", "routing_key": f"a.{i}", "properties": {"message_id": f"m{i}"}, "body": "b"}
            lines.append(json.dumps({"amqp": message}))
    return "\n".join(lines) + "\n"


def timed(command: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1, 2):
        sys.exit(f"{shlex.join(command)} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return elapsed, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routes", type=int, default=1000, help="streams and routes in the estate (1000)")
    parser.add_argument("--lines", type=int, default=50_000, help="recorded messages to replay (50000)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    with tempfile.TemporaryDirectory(prefix="dryrun-scale-") as scratch:
        big = Path(scratch) / "estate.yaml"
        big.write_text(estate(args.routes))
        small = Path(scratch) / "replay.yaml"
        small.write_text(estate(2))
        replay = Path(scratch) / "recorded.jsonl"
        replay.write_text(recorded(args.lines))
        base = [sys.executable, "-m", "bridge", "dry-run"]
        cases = {
            f"offline, {args.routes} streams + {args.routes} routes": ([*base, str(big)], 10.0),
            f"--input {args.lines} lines, text": ([*base, str(small), "--input", str(replay)], 30.0),
            f"--input {args.lines} lines, --json": ([*base, str(small), "--input", str(replay), "--json"], 30.0),
        }
        print(f"{'case':<44} {'median s':>9}  runs (s)                 exit  target")
        for name, (command, target) in cases.items():
            samples = [timed(command) for _ in range(args.repeats)]
            seconds = [elapsed for elapsed, _ in samples]
            median = statistics.median(seconds)
            verdict = "ok" if median < target else "MISSED"
            runs = ", ".join(f"{s:.2f}" for s in seconds)
            print(f"{name:<44} {median:>9.2f}  [{runs:<22}] {samples[0][1]:>4}  < {target:.0f} s {verdict}")


if __name__ == "__main__":
    main()
