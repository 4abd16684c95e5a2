"""A/B of the bridge itself: one benchmark, the same brokers, two versions of `bridge/` run in
turn within one run, so what a change costs is a ratio measured under the same load.

    flock /tmp/nats-bridge-bench.lock .venv/bin/python bench/ab.py --against 781d810 --rounds 3 -- \\
        bench/kafka_to_jetstream.py --quick --only throughput --repeats 1

`--against REV` is checked out into a temporary git worktree (A), with this checkout's bench/
copied over its own so the measurement is the same (`--own-bench` keeps A's, for a benchmark that
imports bridge modules which have moved since A; say so when quoting it); B is this checkout. Each round runs the
benchmark script given after `--` once in each tree (the bridge processes it starts import that
tree's `bridge/`), the order alternating between rounds. From each run's JSON (bench/results/) it takes,
per message size, the bridge's msg/s and its CPU seconds per message; it prints the medians of
each version and the ratio B/A, and writes everything to bench/results/ab-<stamp>.json.

The machine is shared and small: the figures of one run are comparable with each other only.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _run(script: list[str], tree: Path) -> dict[str, Any]:
    """One benchmark run in `tree` (its bridge processes start there, `python -m bridge`, so they
    import that tree's package: the working directory comes first on sys.path); its JSON report."""
    results = tree / "bench" / "results"
    before = set(results.glob("*.json"))
    env = {**os.environ, "PYTHONPATH": str(tree)}
    print(f"--- {tree.name}: {shlex.join(script)}", flush=True)
    done = subprocess.run([sys.executable, *script], cwd=tree, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the benchmark exited {done.returncode} in {tree}")
    new = sorted(set(results.glob("*.json")) - before, key=lambda path: path.stat().st_mtime)
    if not new:
        raise SystemExit(f"the benchmark wrote no report under {results}")
    report: dict[str, Any] = json.loads(new[-1].read_text())
    if tree != ROOT:  # A's worktree goes away: keep its raw samples beside B's
        kept = RESULTS / f"{new[-1].stem}-A{new[-1].suffix}"
        kept.write_text(new[-1].read_text())
        new[-1] = kept
    report["_path"] = str(new[-1].relative_to(ROOT))
    return report


def _figures(report: dict[str, Any]) -> dict[int, tuple[float, float]]:
    """Per message size: (the bridge's median msg/s, its median CPU microseconds per message)."""
    figures = {}
    for entry in report.get("throughput") or []:
        runs = entry["samples"].get("bridge") or []
        rates = [run["rate"] for run in runs if run.get("rate")]
        cpu = [
            run["cpu"]["bridge_cpu_per_s"] * run["cpu"]["wall_s"] / run["messages"] * 1e6
            for run in runs
            if run.get("cpu") and run.get("messages")
        ]
        if rates and cpu:
            figures[int(entry["size"])] = (statistics.median(rates), statistics.median(cpu))
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, help="the git revision of version A")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each version (default 3)")
    parser.add_argument(
        "--own-bench",
        action="store_true",
        help="run A with A's own bench/ (when the benchmark imports bridge modules that moved since A)",
    )
    parser.add_argument("script", nargs=argparse.REMAINDER, help="-- then the benchmark script and its options")
    args = parser.parse_args(argv)
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    if not script:
        parser.error("give the benchmark after --, e.g. -- bench/kafka_to_jetstream.py --quick --only throughput")
    revision = _git("rev-parse", "--short", args.against)
    here = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--", "bridge"))
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="nats-bridge-ab-") as temporary:
        tree_a = Path(temporary) / f"A-{revision}"
        _git("worktree", "add", "--detach", str(tree_a), revision)
        # The same benchmark code for both: this checkout's bench/ replaces A's (unless --own-bench).
        if not args.own_bench:
            for path in (ROOT / "bench").glob("*.py"):
                (tree_a / "bench" / path.name).write_bytes(path.read_bytes())
        try:
            versions = {"A": tree_a, "B": ROOT}
            runs: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
            for round_number in range(args.rounds):
                order = ("A", "B") if round_number % 2 == 0 else ("B", "A")
                for label in order:
                    runs[label].append(_run(script, versions[label]))
        finally:
            _git("worktree", "remove", "--force", str(tree_a))
    table: dict[int, dict[str, Any]] = {}
    for label, reports in runs.items():
        for report in reports:
            for size, (rate, cpu) in _figures(report).items():
                row = table.setdefault(size, {"A": {"rates": [], "cpu_us": []}, "B": {"rates": [], "cpu_us": []}})
                row[label]["rates"].append(rate)
                row[label]["cpu_us"].append(cpu)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    print(f"\nA = {revision}, B = {here}{' + uncommitted bridge/ changes' if dirty else ''}; {args.rounds} round(s)")
    print(f"command: {command}")
    print(f"{'size':>6}  {'A msg/s':>10}  {'B msg/s':>10}  {'B/A':>6}  {'A us/msg':>9}  {'B us/msg':>9}  {'B/A':>6}")
    for size, row in sorted(table.items()):
        a_rate, b_rate = statistics.median(row["A"]["rates"]), statistics.median(row["B"]["rates"])
        a_cpu, b_cpu = statistics.median(row["A"]["cpu_us"]), statistics.median(row["B"]["cpu_us"])
        row["ratio_rate"], row["ratio_cpu"] = round(b_rate / a_rate, 3), round(b_cpu / a_cpu, 3)
        print(
            f"{size:>6}  {a_rate:>10,.0f}  {b_rate:>10,.0f}  {row['ratio_rate']:>6.2f}  "
            f"{a_cpu:>9.1f}  {b_cpu:>9.1f}  {row['ratio_cpu']:>6.2f}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"ab-{started}.json"
    out.write_text(
        json.dumps(
            {
                "command": command,
                "a": revision,
                "b": here,
                "b_dirty": dirty,
                "rounds": args.rounds,
                "sizes": table,
                "reports": {label: [report["_path"] for report in reports] for label, reports in runs.items()},
            },
            indent=1,
        )
        + "\n"
    )
    print(f"\nresults: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
