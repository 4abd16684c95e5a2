"""Fault schedules back to back for N minutes: the long profile of the chaos suite (tests/chaos).

    bash compose/brokers start nats
    .venv/bin/python bench/chaos.py --minutes 30 --seed 42
    .venv/bin/python bench/chaos.py --minutes 10 --seed 42 --topologies ad
    .venv/bin/python bench/chaos.py --profile ci --seed 1083708357 --schedules 1     # replay a CI schedule
    .venv/bin/python bench/chaos.py --minutes 5 --seed 7 --bridge-commit 50d7d45     # another commit's bridge
    .venv/bin/python bench/chaos.py --profile nats --seed 100 --schedules 1          # NATS faults, a store rollback

Schedule k of a run has seed S+k, so any one of them replays alone with `--seed S+k --schedules 1`
(and the same --profile and --topologies). New schedules start until --minutes have passed (the
last one finishes). Each prints one line as it ends; a failing one also its failing routes with
examples. At the end: schedules run, faults injected, messages checked, lost, doubled, out of
order, and the command line. Every schedule's full report (faults with what they did, every
route, process findings) goes to the JSON file bench/results/chaos-<UTC stamp>.json. Exit status 1
when any schedule failed.

The brokers: NATS_URL, or compose/brokers' NATS (started if down); the suite's own Kafka, second
Kafka and RabbitMQ, and the 3-node NATS cluster, as tests/chaos/brokers.py describes (started if
down; --stop-brokers stops the suite's own afterwards). What a schedule creates is deleted after it
unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the suite lives in tests/chaos (a package of the `tests` namespace)

from tests.chaos.brokers import BrokerError, shared_nats_url, stop_private  # noqa: E402
from tests.chaos.schedule import LETTERS, PROFILES, Outcome, generate, run_schedule  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="start schedules until this many minutes passed")
    parser.add_argument("--seed", type=int, default=None, help="seed of the first schedule (default: random)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="long")
    parser.add_argument("--topologies", default=None, help=f"only these topologies, e.g. 'ad' (of '{LETTERS}')")
    parser.add_argument("--schedules", type=int, default=None, help="run at most this many schedules")
    parser.add_argument("--bridge-commit", default=None, help="run the bridge of this git commit (git archive)")
    parser.add_argument("--keep", action="store_true", help="keep streams, topics and vhosts of every schedule")
    parser.add_argument("--stop-brokers", action="store_true", help="stop the suite's own brokers at the end")
    parser.add_argument("--workdir", type=Path, default=None, help="mapping files and bridge logs (default: temp)")
    args = parser.parse_args()
    if args.topologies and set(args.topologies) - set(LETTERS):
        parser.error(f"--topologies takes letters of '{LETTERS}'")
    return args


def bridge_checkout(commit: str, into: Path) -> dict[str, str]:
    """The `bridge` package of `commit` unpacked into `into` (git archive: the checkout is not
    touched), and the environment that makes `python -m bridge` import it instead."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", commit, "bridge"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return {"PYTHONSAFEPATH": "1", "PYTHONPATH": str(into)}


def line_for(index: int, outcome: Outcome, seconds: float) -> str:
    schedule = outcome.schedule
    letters = "".join(plan.letter for plan in schedule.plans)
    state = "FAIL" if outcome.failed else "ok"
    return (
        f"schedule {index + 1}: seed {schedule.seed} [{letters}] {schedule.traffic_seconds:.0f}s traffic, "
        f"{len(schedule.faults)} faults: {outcome.totals()} — {state} ({seconds:.0f}s)"
    )


async def main(args: argparse.Namespace) -> int:
    first = args.seed if args.seed is not None else secrets.randbits(31)
    url = shared_nats_url()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="chaos-bench-"))
    env: dict[str, str] = {}
    if args.bridge_commit:
        env = bridge_checkout(args.bridge_commit, workdir / "bridge-checkout")
    command = shlex.join([sys.executable, *sys.argv])
    print(f"chaos: first seed {first}, profile {args.profile}, {args.minutes:g} min; logs in {workdir}", flush=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    started = time.monotonic()
    outcomes: list[dict[str, Any]] = []
    totals = {"schedules": 0, "faults": 0, "checked": 0, "lost": 0, "doubled": 0, "out_of_order": 0, "failed": 0}
    try:
        index = 0
        while time.monotonic() - started < args.minutes * 60 and (args.schedules is None or index < args.schedules):
            schedule = generate(first + index, args.profile, args.topologies)
            directory = workdir / f"schedule-{index + 1}-seed-{schedule.seed}"
            directory.mkdir(parents=True, exist_ok=True)
            began = time.monotonic()
            outcome = await run_schedule(
                schedule, url, directory, keep=args.keep, log=lambda _line: None, bridge_env=env
            )
            (directory / "report.txt").write_text(outcome.report() + "\n")
            print(line_for(index, outcome, time.monotonic() - began), flush=True)
            if outcome.failed:
                print("  " + outcome.failure_message().split("\n\n")[0].replace("\n", "\n  "), flush=True)
            totals["schedules"] += 1
            totals["faults"] += len(schedule.faults)
            totals["checked"] += outcome.checked
            totals["lost"] += outcome.total("lost")
            totals["doubled"] += outcome.total("doubled")
            totals["out_of_order"] += outcome.total("out_of_order")
            totals["failed"] += outcome.failed
            outcomes.append({"seed": schedule.seed, "failed": outcome.failed, "report": outcome.report()})
            index += 1
    finally:
        if args.stop_brokers:
            stop_private()
        print(
            f"\nschedules run {totals['schedules']} ({totals['failed']} failed), faults injected {totals['faults']}, "
            f"messages checked {totals['checked']}, lost {totals['lost']}, doubled {totals['doubled']}, "
            f"out of order {totals['out_of_order']}\ncommand: {command}",
            flush=True,
        )
        report = {
            "_stamp": stamp,
            "command": command,
            "first_seed": first,
            "profile": args.profile,
            "minutes": round((time.monotonic() - started) / 60, 2),
            "git": common.git("rev-parse", "--short", "HEAD")
            + (" + uncommitted changes in bridge/" if common.git("status", "--porcelain", "--", "bridge") else ""),
            "bridge_commit": args.bridge_commit,
            "totals": totals,
            "schedules": outcomes,
        }
        if outcomes:
            print(f"results: {common.save(report, 'chaos')}", flush=True)
    return 1 if totals["failed"] else 0


if __name__ == "__main__":
    arguments = parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        try:
            sys.exit(asyncio.run(main(arguments)))
        except BrokerError as error:
            print(f"chaos: {error}", file=sys.stderr)
            sys.exit(2)
    sys.exit(130)
