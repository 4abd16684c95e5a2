"""Seeded fault schedules: drawn from a seed, run against real brokers and bridges, then checked.

    schedule = generate(seed, "ci")          # or "long"
    outcome = await run_schedule(schedule, nats_url, workdir)
    print(outcome.report())                  # everything, the seed first
    assert not outcome.failed, outcome.failure_message()

A seed fixes everything a schedule chooses — topologies, instances, NATS single or cluster,
duplicate windows, ordering, every fault's time, kind, target and duration — not the timing of
the machine: a replay of a seed runs the same schedule, with the same faults at the same moments
of its traffic.

Profiles:
- `ci`: all six topologies at once, one of them on the NATS cluster; 40 s of traffic at 25 msg/s
  per source; each topology loses a bridge instance (SIGKILL or SIGTERM, both kinds at least once),
  and Kafka, the second Kafka, RabbitMQ and a NATS cluster node are each restarted once, and one
  stream is full for a few seconds. 1-2 minutes on 2 cores.
- `long`: a random subset of topologies, 1-3 instances each, any of them on the cluster,
  1-3 minutes of traffic at 20-150 msg/s per source, and a fault every 6-15 s of any kind that
  applies, with downtimes that exceed short duplicate windows (so Kafka and stream routes must lean
  on their checkpoints).

- `nats`: topologies a and d on the NATS cluster, 190 s at 100 msg/s, issue 20's faults in turn: a
  frozen node, the stream leader stopped with SIGTERM, quorum lost, a full stream, a lame-duck
  rolling restart (`bench/chaos.py --profile nats`); and topology b on a nats-server of the
  schedule's own whose store is rolled back to a copy taken 70 s earlier (`nats-store-rollback`).

A topology on `private` NATS (the nats profile's b; in the long profile now and then a or b, drawn
from a second generator so that the rest of a long seed's schedule stays what it was) runs on a
nats-server the run starts in its workdir and stops at its end, the only NATS a store rollback may
hit: the shared server and cluster serve other tests.

Duplicate windows: routes whose exactly-once rests on checkpoints (Kafka, stream queues) may get a
5 s window, but only on the single NATS server: a 5 s window shorter than a NATS failover would
let an in-run resend through, which README does not promise to catch. Shadow routes keep 2 m (their
protection ends with the window, README "Guarantees (RabbitMQ)").
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import logging
import random
import re
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiormq
import nats
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from private_nats import PrivateNatsServer

from bridge.config import load_config_text
from bridge.config.services import Phase
from bridge.cutover.store import BUCKET as PHASE_BUCKET
from bridge.cutover.store import PhaseStore, phase_key
from bridge.headers import ORIGIN_HEADER
from bridge.jetstream.checkpoints import BUCKET as CHECKPOINT_BUCKET
from bridge.jetstream.declare import declare_streams

from . import brokers as chaos_brokers
from .brokers import KAFKA_A, KAFKA_B, Brokers, NatsCluster
from .checker import Expected, RouteResult, Stored, attribute, check_reverse, check_route, read_stream
from .faults import LOST_WRITES, BridgeFleet, Fault, FaultInjector, Injected, _retry
from .topologies import (
    BROKERS,
    KAFKA_ONLY,
    LETTERS,
    MAX_INSTANCES,
    Addresses,
    Built,
    NatsTarget,
    SourceSpec,
    TopologyPlan,
    build,
)
from .traffic import (
    AmqpTraffic,
    KafkaRecord,
    KafkaTraffic,
    NatsTraffic,
    check_no_message_id_on_the_wire,
    parse_body,
    read_stream_queue,
    read_topic,
)

Log = Callable[[str], None]
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Profile:
    name: str
    traffic_seconds: tuple[float, float]
    rate: tuple[int, int]  # messages per second per source
    quiet: float  # seconds without progress that end the wait for the streams to catch up
    settle_timeout: float  # most seconds to wait for them


PROFILES = {
    "ci": Profile("ci", (40, 40), (25, 25), quiet=10, settle_timeout=60),
    "nats": Profile("nats", (190, 190), (100, 100), quiet=20, settle_timeout=240),
    "long": Profile("long", (60, 180), (20, 150), quiet=20, settle_timeout=240),
}


@dataclass
class Schedule:
    seed: int
    profile: str
    traffic_seconds: float
    rate: int
    plans: list[TopologyPlan]
    faults: list[Fault]

    def describe(self) -> str:
        lines = [
            f"seed {self.seed}, profile {self.profile}: {self.traffic_seconds:.0f}s of traffic at {self.rate} msg/s "
            f"per source; topologies:"
        ]
        lines += [f"  {plan.describe()}" for plan in self.plans]
        lines.append(f"  faults ({len(self.faults)}):")
        lines += [f"    {fault.describe()}" for fault in sorted(self.faults, key=lambda f: f.at)]
        return "\n".join(lines)

    def order_exceptions(self, plan: TopologyPlan) -> str | None:
        """The faults under which README allows a pipelined route of this topology to reorder."""
        reasons = []
        if any(f.kind == "stream-full" and f.target == plan.letter for f in self.faults):
            reasons.append("a full discard-new stream")
        if plan.nats == "cluster" and any(f.kind == "nats-node-restart" for f in self.faults):
            reasons.append("a NATS node restart (503s while the stream changes leader)")
        if plan.nats == "cluster" and any(
            f.kind == "nats-leader-stop" and f.variant == "term" and f.target == plan.letter for f in self.faults
        ):
            reasons.append("its stream's leader stopped with SIGTERM (bench/README: pipelined routes reorder)")
        return " and ".join(reasons) or None


# --------------------------------------------------------------------------- generation


def _window(rng: random.Random, letter: str, nats_target: str) -> str:
    """The private server goes down twice for a store rollback, for longer than 5 s: 2 m there."""
    checkpointed = letter in "abef"  # Kafka and stream-queue routes only
    return rng.choice(["2m", "5s"]) if checkpointed and nats_target == "single" else "2m"


def _plan(rng: random.Random, letter: str, nats_target: NatsTarget, max_instances: int) -> TopologyPlan:
    return TopologyPlan(
        letter=letter,
        instances=rng.randint(1, min(max_instances, MAX_INSTANCES[letter])),
        nats=nats_target,
        duplicate_window=_window(rng, letter, nats_target),
        ordering=rng.choice(["pipelined", "strict", "batched"]),
        cluster_names=rng.random() < 0.5,
    )


def _broker_faults(rng: random.Random, plans: list[TopologyPlan], start: float, end: float) -> list[Fault]:
    """One restart of each broker the topologies use (the NATS node only when one runs on the cluster)."""
    used = set().union(*(BROKERS[plan.letter] for plan in plans))
    faults = [
        Fault(rng.uniform(start, end), "broker-restart", name, rng.uniform(1, 4), rng.choice(["kill", "graceful"]))
        for name in ("kafka-a", "kafka-b", "rabbitmq")
        if name in used
    ]
    if any(plan.nats == "cluster" for plan in plans):
        faults.append(
            Fault(
                rng.uniform(start, end),
                "nats-node-restart",
                str(rng.randrange(3)),
                rng.uniform(1, 4),
                rng.choice(["kill", "graceful"]),
            )
        )
    return faults


def generate(seed: int, profile: str = "ci", letters: str | None = None) -> Schedule:
    """The schedule seed `seed` stands for, in `profile`; `letters` limits the topologies."""
    rng = random.Random(seed)
    settings = PROFILES[profile]
    traffic = round(rng.uniform(*settings.traffic_seconds), 1)
    rate = rng.randint(*settings.rate)
    if profile == "ci":
        chosen = list(letters or LETTERS)
        on_cluster = rng.choice(chosen)
        plans = [_plan(rng, x, "cluster" if x == on_cluster else "single", 2) for x in chosen]
        first_kind = rng.randrange(2)
        faults = [
            Fault(
                rng.uniform(5, traffic - 8),
                ("bridge-kill", "bridge-term")[(first_kind + i) % 2],
                plan.letter,
                rng.uniform(1, 8),
                str(rng.randrange(plan.instances)),
            )
            for i, plan in enumerate(plans)
        ]
        faults += _broker_faults(rng, plans, 5, traffic - 15)
        faults.append(
            Fault(
                rng.uniform(5, traffic - 8),
                "stream-full",
                rng.choice(chosen),
                rng.uniform(2, 5),
                rng.choice(["max_msgs", "max_bytes"]),
            )
        )
        return Schedule(seed, profile, traffic, rate, plans, faults)
    if profile == "nats":
        return _nats_schedule(rng, seed, traffic, rate, letters)
    pool = list(letters or LETTERS)
    chosen = sorted(rng.sample(pool, rng.randint(1, len(pool))))
    plans = [_plan(rng, x, "cluster" if rng.random() < 0.3 else "single", 3) for x in chosen]
    faults = []
    at = rng.uniform(3, 10)
    while at < traffic - 5:
        faults.append(_random_fault(rng, plans, at))
        at += rng.uniform(6, 15)
    _private_rollback(random.Random(f"{seed}:private"), plans, faults, traffic)
    return Schedule(seed, profile, traffic, rate, plans, faults)


def _private_rollback(side: random.Random, plans: list[TopologyPlan], faults: list[Fault], traffic: float) -> None:
    """Now and then (3 schedules in 10 that have a Kafka-only topology on the single server) move
    one of them to the private server, and roll its store back once."""
    candidates = [i for i, plan in enumerate(plans) if plan.letter in KAFKA_ONLY and plan.nats == "single"]
    if not candidates or side.random() >= 0.3:
        return
    index = side.choice(candidates)
    plans[index] = dataclasses.replace(plans[index], nats="private", duplicate_window="2m")
    copy_at = side.uniform(5, traffic / 2)
    restore_at = side.uniform(copy_at + 10, traffic - 5)
    faults.append(
        Fault(
            round(copy_at, 1),
            "nats-store-rollback",
            plans[index].letter,
            round(restore_at - copy_at, 1),
            side.choice(["kill", "graceful"]),
        )
    )


def _nats_schedule(rng: random.Random, seed: int, traffic: float, rate: int, letters: str | None) -> Schedule:
    """Issue 20's NATS faults, one after another, against the topologies on the cluster: a frozen
    node, the stream leader stopped with SIGTERM, quorum lost, a full stream, and a lame-duck
    rolling restart of every node. One Kafka-only topology (b, else a; none when the letters hold
    neither) runs on a private nats-server instead, whose store is copied at t+40 s and restored
    at t+110 s after a SIGKILL: 70 s of acknowledged writes lost. With only that one letter, no
    cluster fault is drawn (and the cluster is not used)."""
    chosen = sorted(letters or "abd")
    private = next((x for x in reversed(KAFKA_ONLY) if x in chosen), None)
    on_cluster = [x for x in chosen if x != private]
    plans = [_plan(rng, x, "private" if x == private else "cluster", 2) for x in chosen]
    faults = []
    if on_cluster:
        faults += [
            Fault(10, "nats-node-freeze", str(rng.randrange(3)), 8),
            Fault(30, "nats-leader-stop", on_cluster[0], 3, "term"),
            Fault(50, "nats-quorum-loss", "".join(map(str, sorted(rng.sample(range(3), 2)))), 10),
            Fault(72, "stream-full", rng.choice(on_cluster), 5, "max_msgs"),
            Fault(82, "nats-rolling-ldm", "all", 3),
        ]
    if private is not None:
        faults.append(Fault(40, "nats-store-rollback", private, 70, "kill"))
    return Schedule(seed, "nats", traffic, rate, plans, faults)


def _random_fault(rng: random.Random, plans: list[TopologyPlan], at: float) -> Fault:
    kinds = ["bridge-kill", "bridge-kill", "bridge-term", "stream-full", "broker-restart", "broker-restart"]
    if any(plan.nats == "cluster" for plan in plans):
        kinds += ["nats-node-restart"]
    kind = rng.choice(kinds)
    plan = rng.choice(plans)
    if kind in ("bridge-kill", "bridge-term"):
        return Fault(at, kind, plan.letter, rng.uniform(0.5, 20), str(rng.randrange(plan.instances)))
    if kind == "stream-full":
        return Fault(at, kind, plan.letter, rng.uniform(2, 15), rng.choice(["max_msgs", "max_bytes"]))
    if kind == "nats-node-restart":
        return Fault(at, kind, str(rng.randrange(3)), rng.uniform(1, 10), rng.choice(["kill", "graceful"]))
    broker = rng.choice(sorted(set().union(*(BROKERS[p.letter] for p in plans))))
    return Fault(at, kind, broker, rng.uniform(1, 10), rng.choice(["kill", "graceful"]))


# --------------------------------------------------------------------------- the outcome


@dataclass
class Outcome:
    schedule: Schedule
    run: str
    results: list[RouteResult] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)  # not counted as lost/doubled/out of order
    expected: list[str] = field(default_factory=list)  # what bridges did that a fault explains
    unmet: list[str] = field(default_factory=list)  # what a fault must make the bridges do and they did not
    injected: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    error: str = ""  # the run could not be completed
    bridge: str = ""  # which bridge code ran (bridge_version)

    @property
    def failed(self) -> bool:
        return bool(self.error or self.unmet) or any(result.failed for result in self.results)

    @property
    def checked(self) -> int:
        return sum(result.expected for result in self.results)

    def total(self, what: str) -> int:
        return sum(getattr(result, what).count for result in self.results)

    def totals(self) -> str:
        return (
            f"messages checked {self.checked}, lost {self.total('lost')}, doubled {self.total('doubled')}, "
            f"out of order {self.total('out_of_order')}"
        )

    def report(self) -> str:
        lines = [f"chaos run {self.run} (bridge {self.bridge}): {self.schedule.describe()}", "faults injected:"]
        lines += [f"  {line}" for line in self.injected] or ["  (none)"]
        lines.append("routes:")
        lines += [f"  {result.summary()}" for result in self.results]
        if self.anomalies:
            lines.append("findings (processes, attribution):")
            lines += [f"  {line}" for line in self.anomalies]
        if self.expected:
            lines.append("expected after the faults:")
            lines += [f"  {line}" for line in self.expected]
        if self.unmet:
            lines.append("FAILED expectations:")
            lines += [f"  {line}" for line in self.unmet]
        if self.error:
            lines.append(f"ERROR: {self.error}")
        timings = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in self.timings.items())
        lines.append(f"seed {self.schedule.seed}: {self.totals()}; {timings}")
        return "\n".join(lines)

    def failure_message(self) -> str:
        failing = [result.summary() for result in self.results if result.failed]
        failing += [f"FAILED: {line}" for line in self.unmet]
        head = f"seed {self.schedule.seed} (replay: CHAOS_SEED={self.schedule.seed}): {self.totals()}"
        if self.error:
            failing.append(f"ERROR: {self.error}")
        return "\n".join([head, *failing, "", self.report()])


# --------------------------------------------------------------------------- running one


def bridge_version(source: Path) -> str:
    """Which bridge code a run used: the commit and whether bridge/ differs from it (the checkout
    is shared and edited while schedules run), and a hash of the bridge/*.py that ran."""
    digest = hashlib.sha256()
    for path in sorted((source / "bridge").rglob("*.py")):
        digest.update(path.relative_to(source).as_posix().encode() + b"\0" + path.read_bytes())
    if source != ROOT:
        return f"from {source}, sources {digest.hexdigest()[:12]}"

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return proc.stdout.strip()

    dirty = " + uncommitted changes" if git("status", "--porcelain", "--", "bridge") else ""
    return f"{git('rev-parse', '--short', 'HEAD')}{dirty}, sources {digest.hexdigest()[:12]}"


class _Clock:
    def __init__(self, log: Log) -> None:
        self.started = self.last = time.monotonic()
        self.log = log
        self.marks: dict[str, float] = {}

    def mark(self, what: str) -> None:
        now = time.monotonic()
        self.marks[what] = now - self.last
        self.last = now
        self.log(f"[chaos {now - self.started:6.1f}s] {what} ({self.marks[what]:.1f}s)")


@dataclass
class _Run:
    """Everything one schedule's run holds, for the steps and the cleanup."""

    schedule: Schedule
    run: str
    workdir: Path
    log: Log
    clock: _Clock
    brokers: Brokers
    bridge_env: dict[str, str]
    built: dict[str, Built] = field(default_factory=dict)
    fleets: dict[str, BridgeFleet] = field(default_factory=dict)
    clients: dict[str, NatsClient] = field(default_factory=dict)  # "single" / "cluster" / "private"
    private: PrivateNatsServer | None = None  # the run's own nats-server, when a plan is on "private"
    vhost: str | None = None
    amqp_url: str = ""
    topics: dict[str, set[str]] = field(default_factory=dict)  # broker -> topics made
    kafka_traffic: dict[str, KafkaTraffic] = field(default_factory=dict)
    amqp_traffic: dict[str, AmqpTraffic] = field(default_factory=dict)
    nats_traffic: dict[str, NatsTraffic] = field(default_factory=dict)

    def js(self, built: Built) -> JetStreamContext:
        return self.clients[built.plan.nats].jetstream(timeout=10)


async def run_schedule(
    schedule: Schedule,
    nats_url: str,
    workdir: Path,
    *,
    keep: bool = False,
    log: Log = print,
    bridge_env: Mapping[str, str] | None = None,
) -> Outcome:
    """Run `schedule` and check it. Brokers that cannot be had raise BrokerError (a missing broker
    fails the run, it never skips it); anything found in the streams is in the Outcome. `keep`
    leaves streams, topics and the vhost in place; `bridge_env` is added to the bridges'
    environment (bench/chaos.py --bridge-commit runs another commit's bridge through it)."""
    with _quiet_kafka_client():
        return await _run_schedule(schedule, nats_url, workdir, keep=keep, log=log, bridge_env=bridge_env)


@contextlib.contextmanager
def _quiet_kafka_client() -> Iterator[None]:
    """aiokafka logs every failed reconnect at ERROR: a broker restarted on purpose would fill the
    output with thousands of lines (the bridges' own logs keep theirs)."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


async def _run_schedule(
    schedule: Schedule,
    nats_url: str,
    workdir: Path,
    *,
    keep: bool,
    log: Log,
    bridge_env: Mapping[str, str] | None,
) -> Outcome:
    run = secrets.token_hex(3)
    outcome = Outcome(schedule, run)
    outcome.bridge = bridge_version(Path((bridge_env or {}).get("PYTHONPATH") or ROOT))
    clock = _Clock(log)
    log(f"[chaos] seed {schedule.seed}, run {run}, bridge {outcome.bridge}\n{schedule.describe()}")
    needed = sorted(set().union(*(BROKERS[plan.letter] for plan in schedule.plans)))
    await asyncio.to_thread(chaos_brokers.start_private, needed)
    on_cluster = any(plan.nats == "cluster" for plan in schedule.plans)
    cluster = await asyncio.to_thread(chaos_brokers.start_cluster) if on_cluster else None
    if cluster is not None:
        await chaos_brokers.wait_for_jetstream(list(cluster.urls))  # a node just started may still elect
    with _cluster_held(cluster):
        state = _Run(schedule, run, workdir, log, clock, Brokers(nats_url, cluster), dict(bridge_env or {}))
        try:
            if any(plan.nats == "private" for plan in schedule.plans):
                state.private = PrivateNatsServer(workdir / "nats-private")
                await asyncio.to_thread(state.private.start)
            clock.mark(
                f"brokers up: {', '.join(needed)}{' and the NATS cluster' if cluster else ''}"
                f"{f' and a private nats-server ({state.private.url})' if state.private else ''}"
            )
            await _run(state, outcome)
        finally:
            for fleet in state.fleets.values():
                fleet.kill_all()
            if not keep:
                await _cleanup(state)
            for client in state.clients.values():
                with contextlib.suppress(NatsError, TimeoutError):
                    await client.close()
            if state.private is not None:
                await asyncio.to_thread(state.private.stop)
    outcome.timings = dict(clock.marks)
    outcome.timings["total"] = time.monotonic() - clock.started
    return outcome


@contextlib.contextmanager
def _cluster_held(cluster: NatsCluster | None) -> Iterator[None]:
    if cluster is None:
        yield
        return
    with chaos_brokers.cluster_lock(cluster):
        yield


async def _quiet_errors(_error: Exception) -> None:
    """Reconnect attempts to a restarted broker are expected; nats-py would print each one."""


async def _run(state: _Run, outcome: Outcome) -> None:
    schedule, clock = state.schedule, state.clock
    await _connect_nats(state)
    await _setup(state)
    clock.mark("topologies set up")
    for letter, built in state.built.items():
        fleet = BridgeFleet(
            letter,
            state.workdir / f"{letter}.yaml",
            built.plan.instances,
            state.workdir,
            env=state.bridge_env,
            rolled_back=any(f.kind == "nats-store-rollback" and f.target == letter for f in schedule.faults),
        )
        state.fleets[letter] = fleet
        fleet.start_all()
    await _wait_for_shadow_queues(state)
    if "d" in state.built:
        note = await check_no_message_id_on_the_wire(state.amqp_url, f"ch{state.run}")
        state.log(f"[chaos] topology d producer: {note}")
    clock.mark(f"{sum(f.instances for f in state.fleets.values())} bridges up")

    stop = asyncio.Event()
    give_up: list[float] = []
    producers = [asyncio.create_task(task) for task in _producers(state, stop, give_up)]
    supervisors = [asyncio.create_task(fleet.supervise(stop)) for fleet in state.fleets.values()]
    streams = {letter: (state.js(built), built.stream) for letter, built in state.built.items()}
    injector = FaultInjector(schedule.faults, state.fleets, streams, state.brokers.cluster, state.private)
    t0 = time.monotonic()
    faults = asyncio.create_task(injector.run(t0))
    try:
        await asyncio.sleep(schedule.traffic_seconds)
        stop.set()
        give_up.append(time.monotonic() + 90)
        await asyncio.gather(*producers)
        clock.mark("traffic done")
        await faults
        clock.mark("faults done")
    finally:
        stop.set()
        for task in (*producers, faults):
            task.cancel()
        await asyncio.gather(*producers, faults, return_exceptions=True)
        await asyncio.gather(*supervisors, return_exceptions=True)
        outcome.injected = [injected.describe() for injected in injector.injected]
    await asyncio.to_thread(chaos_brokers.start_private, sorted({b for t in state.built.values() for b in t.brokers()}))
    for fleet in state.fleets.values():
        fleet.ensure_running()
    await _settle(state)
    clock.mark("streams settled")
    await asyncio.gather(*(fleet.stop_all() for fleet in state.fleets.values()))
    for fleet in state.fleets.values():
        outcome.anomalies.extend(fleet.findings)
        outcome.expected.extend(fleet.expected)
    clock.mark("bridges stopped")
    await _check(state, outcome)
    _lost_writes_seen(state, injector.injected, outcome)
    outcome.injected = [injected.describe() for injected in injector.injected]
    clock.mark("checked")


LOST_RECORDS = re.compile(r"(\d+) record\(s\) the group committed are in no stream")


def _lost_writes_seen(state: _Run, injected: list[Injected], outcome: Outcome) -> None:
    """A store rollback that lost messages must show in its topology's bridge logs: the ERROR
    "JetStream lost acknowledged messages" (the runner's, on the reconnect that finds a stream
    behind what it acknowledged, and the Kafka source's, naming what it copies again). Each
    rollback's outcome gets what the logs and the stream say; the same ERROR where no store was
    rolled back is a finding, and so are Bridge-Recopied marks there."""
    for letter, fleet in state.fleets.items():
        lines = fleet.log_lines(LOST_WRITES)
        rollbacks = [i for i in injected if i.fault.kind == "nats-store-rollback" and i.fault.target == letter]
        results = [r for r in outcome.results if r.topology == letter]
        if not rollbacks:
            if lines:
                outcome.anomalies.append(
                    f"{letter}: bridges logged {LOST_WRITES!r} {len(lines)} time(s) without a store rollback: "
                    f"{lines[0][:300]}"
                )
            if any(r.recopied for r in results):
                outcome.anomalies.append(
                    f"{letter}: {sum(r.recopied for r in results)} message(s) marked Bridge-Recopied without a "
                    "store rollback"
                )
            continue
        matches = [match for line in lines if (match := LOST_RECORDS.search(line))]
        named = sum(int(match.group(1)) for match in matches)
        recopied = sum(r.recopied for r in results)
        for rollback in rollbacks:
            rollback.outcome += (
                f"; bridges logged {LOST_WRITES!r} {len(lines)} time(s), {len(matches)} of them "
                f"naming {named} committed record(s) to copy again; {recopied} stored with Bridge-Recopied"
            )
            if rollback.lost and not lines:
                outcome.unmet.append(
                    f"{letter}: the store rollback at t+{rollback.fault.at:.0f}s lost {rollback.lost} acknowledged "
                    f"messages, but no bridge of {letter} logged {LOST_WRITES!r}"
                )


async def _connect_nats(state: _Run) -> None:
    targets = {plan.nats for plan in state.schedule.plans}
    if "single" in targets:
        state.clients["single"] = await nats.connect(state.brokers.nats_url, name=f"chaos-{state.run}")
    if "private" in targets:
        assert state.private is not None
        state.clients["private"] = await nats.connect(
            state.private.url,
            name=f"chaos-{state.run}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            error_cb=_quiet_errors,
        )
    if "cluster" in targets:
        assert state.brokers.cluster is not None
        state.clients["cluster"] = await nats.connect(
            servers=list(state.brokers.cluster.urls),
            name=f"chaos-{state.run}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            error_cb=_quiet_errors,
        )


async def _setup(state: _Run) -> None:
    """Build the topologies, and make what the legacy side and the operator would have made before
    the bridges run: topics, exchanges, the stream queue, the streams, the drain phase."""
    needed = {b for plan in state.schedule.plans for b in BROKERS[plan.letter]}
    if "rabbitmq" in needed:
        state.vhost = f"chaos-{state.run}"
        state.amqp_url = await asyncio.to_thread(chaos_brokers.create_vhost, state.vhost)
    where = Addresses(
        state.brokers,
        {"kafka-a": KAFKA_A.address, "kafka-b": KAFKA_B.address},
        state.amqp_url,
        state.private.url if state.private else "",
    )
    for plan in state.schedule.plans:
        built = build(plan.letter, plan, state.run, where)
        state.built[plan.letter] = built
        path = state.workdir / f"{plan.letter}.yaml"
        path.write_text(built.mapping)
        config = load_config_text(built.mapping, str(path), env={})
        js = state.js(built)
        # A cluster compose/brokers has just started may still be electing the leaders of the
        # streams and buckets made here ("no responders"): as an operator would, try again.
        deadline = time.monotonic() + 60
        await _retry(lambda js=js, config=config: declare_streams(js, config.all_streams()), deadline)
        if built.drain_service is not None:
            store = PhaseStore(js, replicas=config.state_replicas)
            service = built.drain_service
            await _retry(
                lambda store=store, service=service: _drain_once(store, service, f"chaos run {state.run}"),
                deadline,
            )
    sources = [source for built in state.built.values() for source in built.sources]
    for broker in ("kafka-a", "kafka-b"):
        topics = {s.target: s.partitions for s in sources if s.broker == broker}
        if topics:
            await _create_topics(chaos_brokers.PRIVATE[broker].address, topics)
            state.topics[broker] = set(topics)
    amqp = [s for s in sources if s.kind == "amqp"]
    if amqp:
        await _declare_exchanges(state.amqp_url, amqp)


async def _drain_once(store: PhaseStore, service: str, reason: str) -> None:
    """Put `service` in drain unless an earlier attempt did (its answer lost while electing)."""
    record, _ = await store.get(service)
    if record.phase != Phase.DRAIN:
        await store.change(service, Phase.DRAIN, by="chaos", reason=reason)


async def _create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(name, parts, 1) for name, parts in topics.items()])
        for topic, code, *rest in response.topic_errors:
            if code != 0:
                raise RuntimeError(f"creating Kafka topic {topic} on {bootstrap} failed: error {code} {rest}")
        deadline = time.monotonic() + 60
        while True:
            described = await admin.describe_topics(list(topics))
            if all(
                d["error_code"] == 0
                and len(d["partitions"]) == topics[d["topic"]]
                and all(p["error_code"] == 0 and p["leader"] >= 0 for p in d["partitions"])
                for d in described
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kafka topics {sorted(topics)} on {bootstrap} have no leaders after 60s")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def _declare_exchanges(url: str, sources: list[SourceSpec]) -> None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        for source in sources:
            await channel.exchange_declare(source.target, exchange_type="topic", durable=True)
            if source.stream_queue is not None:
                await channel.queue_declare(source.stream_queue, durable=True, arguments={"x-queue-type": "stream"})
                await channel.queue_bind(source.stream_queue, source.target, routing_key="#")
    finally:
        await connection.close()


async def _wait_for_shadow_queues(state: _Run, timeout: float = 120) -> None:
    """Shadow queues exist once a bridge declared and bound them: until then an exchange routes
    nowhere, so traffic waits for a consumer on each."""
    queues = [q for built in state.built.values() for q in built.shadow_queues]
    if not queues:
        return
    deadline = time.monotonic() + timeout
    connection = await aiormq.connect(state.amqp_url)
    try:
        for queue in queues:
            while True:
                channel = await connection.channel()
                try:
                    declared = await channel.queue_declare(queue, passive=True)
                    if declared.consumer_count:
                        break
                except aiormq.exceptions.ChannelNotFoundEntity:
                    pass
                finally:
                    if not channel.is_closed:
                        await channel.close()
                for fleet in state.fleets.values():
                    for index in range(fleet.instances):
                        if not fleet.alive(index):
                            raise AssertionError(f"bridge {fleet.name(index)} exited at start:\n{fleet.logs()}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"no consumer on shadow queue {queue} after {timeout:g}s")
                await asyncio.sleep(0.5)
    finally:
        await connection.close()


def _producers(state: _Run, stop: asyncio.Event, give_up: list[float]) -> list[Any]:
    rate = state.schedule.rate

    def give_up_at() -> float | None:
        return give_up[0] if give_up else None

    tasks = []
    for built in state.built.values():
        for source in built.sources:
            if source.kind == "kafka":
                kafka = KafkaTraffic(
                    chaos_brokers.PRIVATE[source.broker].address,
                    source.target,
                    source.name,
                    state.run,
                    rate=rate,
                    partitions=source.partitions,
                    dead_letter=source.dead_letter,
                    headers=_kafka_headers(source),
                )
                state.kafka_traffic[source.name] = kafka
                tasks.append(kafka.run(stop, give_up_at))
            elif source.kind == "amqp":
                keys = source.routing_keys
                amqp = AmqpTraffic(
                    state.amqp_url,
                    source.target,
                    source.name,
                    state.run,
                    rate=rate,
                    routing_key=_cycle(keys),
                    message_id=source.message_id,
                    headers=_amqp_headers(source),
                    dead_letter=source.dead_letter,
                )
                state.amqp_traffic[source.name] = amqp
                tasks.append(amqp.run(stop, give_up_at))
            else:
                nats_traffic = NatsTraffic(state.js(built), _spread(source.target), source.name, state.run, rate)
                state.nats_traffic[source.name] = nats_traffic
                tasks.append(nats_traffic.run(stop, give_up_at))
    return tasks


def _cycle(keys: tuple[str, ...]) -> Callable[[int], str]:
    """Message n's routing key: the keys in turn."""
    return lambda n: keys[n % len(keys)]


def _spread(prefix: str) -> Callable[[int], str]:
    """Message n's NATS subject: `<prefix>.<n % 3>` (the reverse route keys Kafka records by it)."""
    return lambda n: f"{prefix}.{n % 3}"


def _kafka_headers(source: SourceSpec) -> Callable[[int], list[tuple[str, bytes]]]:
    """Records carry `kind` (their route's subject needs it) unless produced to be dead-lettered."""
    if not source.dead_letter_every:
        return lambda _n: []
    return lambda n: [] if source.dead_letter(n) else [("kind", b"std")]


def _amqp_headers(source: SourceSpec) -> Callable[[int], dict[str, Any] | None]:
    if not source.dead_letter_every:
        return lambda _n: None
    return lambda n: None if source.dead_letter(n) else {"kind": "std"}


def _expected_counts(state: _Run, built: Built) -> tuple[int, int]:
    """(stream, dead letters) a topology should end with, from what the producers had confirmed
    (a lower bound: a source can hold a message twice)."""
    stream = dead = 0
    for route in built.routes:
        source = built.source(route.source)
        numbers = (
            state.kafka_traffic[source.name].acked.keys()
            if source.kind == "kafka"
            else state.amqp_traffic[source.name].acked
        )
        for n in numbers:
            if source.dead_letter(n):
                dead += 1
            else:
                stream += 1
    for source in built.sources:
        if source.kind == "nats":
            stream += len(state.nats_traffic[source.name].stored)
    return stream, dead


async def _settle(state: _Run) -> None:
    """Wait until every stream holds what it should and every reverse route has written all it
    read (then a little longer, for stray copies); or until nothing moved for the profile's quiet
    time — except while a reverse route still has messages out: a SIGKILLed instance's are
    redelivered only after the consumer's ack_wait (60 s) —; or until the settle timeout."""
    profile = PROFILES[state.schedule.profile]
    targets = []
    for built in state.built.values():
        stream, dead = _expected_counts(state, built)
        targets.append((state.js(built), built.stream, stream))
        targets.append((state.js(built), built.dlq_stream, dead))
    reverse = [(state.js(b), b.stream, b.reverse.durable) for b in state.built.values() if b.reverse is not None]
    deadline = time.monotonic() + profile.settle_timeout
    last: list[int] = []
    changed = time.monotonic()
    while time.monotonic() < deadline:
        counts = [await _count(js, stream) for js, stream, _ in targets]
        idle = [await _reverse_idle(js, stream, durable) for js, stream, durable in reverse]
        streams_full = all(c >= want for c, (_, _, want) in zip(counts, targets, strict=True))
        if streams_full and all(idle):
            await asyncio.sleep(3)  # copies a resend may still add
            return
        if counts != last:
            last, changed = counts, time.monotonic()
        elif time.monotonic() - changed > profile.quiet and all(idle):
            # Quiet is not done while a bridge is not ready (a source still reconnecting after its
            # broker came back, an instance waiting for its restart): it may still copy what is short.
            waiting = await _bridges_not_ready(state)
            if not waiting:
                short = [f"{s}: {c} of {w}" for c, (_, s, w) in zip(counts, targets, strict=True) if c < w]
                state.log(f"[chaos] nothing moved for {profile.quiet:g}s; short: {', '.join(short)}")
                return
        await asyncio.sleep(0.5)
    waiting = await _bridges_not_ready(state)
    state.log(
        f"[chaos] streams did not settle within {profile.settle_timeout:g}s"
        + (f"; bridges not ready: {'; '.join(waiting)}" if waiting else "")
    )


async def _bridges_not_ready(state: _Run) -> list[str]:
    """The bridge instances that are down (not on purpose) or whose /readyz does not answer 200, each
    with the first reason it gives."""
    waiting = []
    for fleet in state.fleets.values():
        for index, process in enumerate(fleet.processes):
            if not process.alive():
                waiting.append(f"{fleet.name(index)}: not running")
                continue
            try:
                url = await process.http_url(timeout=5)
                answer = await asyncio.to_thread(_get, f"{url}/readyz")
            except (AssertionError, OSError) as error:
                waiting.append(f"{fleet.name(index)}: /readyz did not answer ({error})")
                continue
            if answer is not None:
                waiting.append(f"{fleet.name(index)}: {answer}")
    return waiting


def _get(url: str) -> str | None:
    """None for a 200, else the first problem line of the answer."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return None
    except urllib.error.HTTPError as error:
        lines = error.read().decode(errors="replace").splitlines()
        return next((line.removeprefix("- ") for line in lines if line.startswith("- ")), f"HTTP {error.code}")


async def _count(js: JetStreamContext, stream: str) -> int:
    try:
        return (await js.stream_info(stream)).state.messages
    except (NotFoundError, NatsError, TimeoutError):
        return 0


async def _reverse_idle(js: JetStreamContext, stream: str, durable: str) -> bool:
    try:
        info = await js.consumer_info(stream, durable)
    except (NotFoundError, NatsError, TimeoutError):
        return False
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


# --------------------------------------------------------------------------- checking


async def _truth(state: _Run, built: Built) -> tuple[dict[str, list[Expected]], dict[str, list[KafkaRecord]]]:
    """What each source of the topology really holds, as the checker's expectations; and the raw
    Kafka records (topology f's reverse check needs the records its reverse route wrote)."""
    expected: dict[str, list[Expected]] = {}
    records: dict[str, list[KafkaRecord]] = {}
    for source in built.sources:
        if source.kind == "kafka":
            found = await read_topic(chaos_brokers.PRIVATE[source.broker].address, source.target, source.partitions)
            records[source.name] = found
            expected[source.name] = [
                Expected(content.key, f"p{r.partition}", r.offset, r.offset, dead_letter=content.dead_letter)
                for r in found
                if r.header(ORIGIN_HEADER) is None and (content := parse_body(r.value)) is not None
            ]
        elif source.kind == "amqp" and source.stream_queue is not None:
            found_queue = await read_stream_queue(state.amqp_url, source.stream_queue)
            expected[source.name] = [
                Expected(content.key, "queue", offset, offset, dead_letter=content.dead_letter)
                for offset, body in found_queue
                if (content := parse_body(body)) is not None
            ]
        elif source.kind == "amqp":
            # Confirmed and routed: in the queue. Given up as unroutable with no attempt of
            # unknown outcome: nowhere. Anything else published may or may not be there.
            traffic = state.amqp_traffic[source.name]
            expected[source.name] = [
                Expected(
                    f"{source.name}#{n}",
                    "queue",
                    n,
                    None,
                    dead_letter=source.dead_letter(n),
                    optional=n not in traffic.acked,
                    order_exempt=n in traffic.republished,
                )
                for n in sorted(traffic.attempted)
                if n in traffic.acked or n not in traffic.returned or n in traffic.uncertain
            ]
    return expected, records


async def _check(state: _Run, outcome: Outcome) -> None:
    for built in state.built.values():
        js = state.js(built)
        stored = await read_stream(js, built.stream)
        dead = await read_stream(js, built.dlq_stream)
        expected, records = await _truth(state, built)
        by_route, problems = attribute(built, stored)
        outcome.anomalies.extend(f"{built.letter}: {problem}" for problem in problems[:20])
        exception = state.schedule.order_exceptions(built.plan)
        for route in built.routes:
            outcome.results.append(
                check_route(
                    built,
                    route,
                    expected[route.source],
                    by_route.get(route.key, []),
                    dead,
                    order_exception=exception,
                )
            )
        if built.reverse is not None:
            published: list[Stored] = by_route.get(built.reverse.nats_source, [])
            try:
                floor = (await js.consumer_info(built.stream, built.reverse.durable)).ack_floor
                acked_up_to = floor.stream_seq if floor is not None and floor.stream_seq is not None else 0
            except (NotFoundError, NatsError, TimeoutError):
                acked_up_to = 0
            outcome.results.append(
                check_reverse(built, built.reverse, published, records[built.reverse.kafka_source], acked_up_to)
            )
        for name, traffic in state.amqp_traffic.items():
            if name.startswith(f"{built.letter}.") and traffic.returns:
                outcome.anomalies.append(
                    f"{name}: RabbitMQ returned {traffic.returns} publishes as unroutable (published again; "
                    f"{len(traffic.returned)} given up at the end)"
                )
        for name, kafka in state.kafka_traffic.items():
            if name.startswith(f"{built.letter}.") and kafka.unsent:
                outcome.anomalies.append(f"{name}: {len(kafka.unsent)} records never sent (Kafka down too long)")


# --------------------------------------------------------------------------- cleanup


async def _cleanup(state: _Run) -> None:
    """Delete what the run made: streams (with the reverse route's consumer), checkpoint and phase
    keys of its routes, Kafka topics, the RabbitMQ vhost. Nothing here may fail the run."""
    services = {service for built in state.built.values() for service in built.services}
    for built in state.built.values():
        js = state.js(built)
        for stream in (built.stream, built.dlq_stream):
            with contextlib.suppress(NotFoundError, NatsError, TimeoutError):
                await js.delete_stream(stream)
    for client in state.clients.values():
        with contextlib.suppress(NotFoundError, NatsError, TimeoutError):
            await _purge_keys(client.jetstream(timeout=10), services)
    for broker, topics in state.topics.items():
        admin = AIOKafkaAdminClient(bootstrap_servers=chaos_brokers.PRIVATE[broker].address)
        with contextlib.suppress(KafkaError, OSError, TimeoutError):
            await admin.start()
            await admin.delete_topics(sorted(topics))
        with contextlib.suppress(KafkaError, OSError, TimeoutError):
            await admin.close()
    if state.vhost is not None:
        await asyncio.to_thread(chaos_brokers.delete_vhost, state.vhost)


async def _purge_keys(js: JetStreamContext, services: set[str]) -> None:
    """Checkpoint keys are `<base64url scope>.<base64url lane>`, the scope naming the route."""
    with contextlib.suppress(NotFoundError, NatsError):
        kv = await js.key_value(CHECKPOINT_BUCKET)
        for key in await kv.keys():
            scope = key.split(".", 1)[0]
            decoded = base64.urlsafe_b64decode(scope + "=" * (-len(scope) % 4)).decode("utf-8", "replace")
            if decoded.split("/", 1)[0] in services:
                await kv.purge(key)
    with contextlib.suppress(NotFoundError, NatsError):
        phases = await js.key_value(PHASE_BUCKET)
        for service in services:
            with contextlib.suppress(NotFoundError, NatsError):
                await phases.purge(phase_key(service))
