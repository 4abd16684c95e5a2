"""JetStream atomic batch publish as an ordering mode: throughput, de-duplication, leader stops.

Issue 20, item 1: `ordering: pipelined` can store records out of partition order when the NATS
node leading the stream stops on SIGTERM; `ordering: strict` keeps order at ~30% of the
throughput. The candidate measured here: one *atomic batch* (ADR-50, nats-server 2.12+, stream
`allow_atomic: true`) in flight per lane. Every message of a batch carries `Nats-Batch-Id` and
`Nats-Batch-Sequence` (1..n), the last one `Nats-Batch-Commit: 1`; only the commit message asks
for a PubAck, which carries the result of the whole batch, stored all or nothing. The next batch
of a lane goes out only after the previous one's PubAck, so order holds by construction.

This is a prototype with nats-py directly (the bridge is not involved):

1. Throughput on the single local server: N messages of 100 B (each with a unique Nats-Msg-Id)
   over 6 lanes (subjects <prefix>.<lane>) into an R1 file stream, per mode: pipelined (up to
   1000 PubAcks outstanding per lane, like js.publish_async), strict (one publish in flight per
   lane), atomic batches of B (one batch in flight per lane). Medians of --repeats runs, the
   modes alternating within each repeat.
2. Correctness of the batch mode against the real server (PASS/FAIL lines, exit 1 on FAIL):
   a committed batch resent under a new batch id, a batch abandoned before its commit and resent,
   a batch containing a Msg-Id that is already stored (and the per-message fallback after it),
   a Msg-Id twice inside one batch, a batch over the server's size limit.
3. --cluster: rounds of bench/leader_stop_order.py against the local 3-node cluster (R3 stream):
   make the publisher's node the stream leader, let traffic flow, SIGTERM it, start it again;
   a paced batch publisher (and, as the control, a pipelined one) instead of the bridge; counts
   records stored after a higher offset of their lane, lost and doubled.

    bash compose/brokers start nats
    flock /tmp/nats-bridge-bench.lock .venv/bin/python bench/atomic_batch_order.py [--messages 200000] [--repeats 3]
    flock /tmp/nats-bridge-bench.lock .venv/bin/python bench/atomic_batch_order.py --cluster [--rounds 6] [--rate 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shlex
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import leader_stop_order as lso  # bench/: the cluster rounds (leader moves, stops, out-of-order count)
import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api as js_api

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LANES = 6
PAYLOAD = b"x" * 100
WINDOW = 1000  # PubAcks outstanding per lane in the pipelined mode
BATCH_SIZES = (100, 500, 1000)  # the server's default max_batch_size is 1000 (streamMaxAtomicBatchSize)
ACK_TIMEOUT = 10.0

Answer = dict[str, Any]


class Acks:
    """One wildcard inbox for every PubAck (as js.publish_async does): reply token -> future."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.prefix = ""
        self.futures: dict[str, asyncio.Future[Msg]] = {}
        self.count = 0

    async def start(self) -> None:
        self.prefix = self.nc.new_inbox()
        await self.nc.subscribe(self.prefix + ".*", cb=self._on_reply)

    async def _on_reply(self, msg: Msg) -> None:
        future = self.futures.pop(msg.subject[len(self.prefix) + 1 :], None)
        if future is not None and not future.done():
            future.set_result(msg)

    def expect(self) -> tuple[str, asyncio.Future[Msg]]:
        self.count += 1
        token = str(self.count)
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self.futures[token] = future
        return f"{self.prefix}.{token}", future

    def forget(self, reply: str) -> None:
        self.futures.pop(reply[len(self.prefix) + 1 :], None)


def answer(msg: Msg) -> Answer:
    """The server's reply as a dict: a PubAck, {"error": ...}, or {} (an empty ack)."""
    if msg.headers and msg.headers.get("Status") == "503":
        return {"error": {"code": 503, "description": "no responders"}}
    return json.loads(msg.data) if msg.data else {}


async def wait_answer(acks: Acks, reply: str, future: asyncio.Future[Msg], ack_wait: float = ACK_TIMEOUT) -> Answer:
    try:
        return answer(await asyncio.wait_for(future, ack_wait))
    except TimeoutError:
        acks.forget(reply)
        return {"error": {"code": 408, "description": "no PubAck (client timeout)"}}


def batch_headers(
    msg_id: str, batch_id: str, seq: int, commit: bool, extra: dict[str, str] | None = None
) -> dict[str, str]:
    headers = {"Nats-Msg-Id": msg_id, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(seq)}
    if commit:
        headers["Nats-Batch-Commit"] = "1"
    if extra:
        headers.update(extra)
    return headers


async def publish_batch(
    nc: NatsClient,
    acks: Acks,
    subject: str,
    msg_ids: list[str],
    batch_id: str | None = None,
    commit: bool = True,
    extra: Callable[[int], dict[str, str]] | None = None,
    ack_wait: float = ACK_TIMEOUT,
) -> Answer:
    """One atomic batch; only the commit message carries a reply. {} when not committed."""
    batch_id = batch_id or uuid.uuid4().hex
    last = len(msg_ids)
    for seq, msg_id in enumerate(msg_ids, 1):
        headers = batch_headers(msg_id, batch_id, seq, commit and seq == last, extra(seq - 1) if extra else None)
        if commit and seq == last:
            reply, future = acks.expect()
            await nc.publish(subject, PAYLOAD, reply=reply, headers=headers)
            return await wait_answer(acks, reply, future, ack_wait)
        await nc.publish(subject, PAYLOAD, headers=headers)
    return {}


async def publish_one(
    nc: NatsClient, acks: Acks, subject: str, headers: dict[str, str], ack_wait: float = ACK_TIMEOUT
) -> Answer:
    reply, future = acks.expect()
    await nc.publish(subject, PAYLOAD, reply=reply, headers=headers)
    return await wait_answer(acks, reply, future, ack_wait)


async def create_stream(nc: NatsClient, name: str, subject_prefix: str, replicas: int = 1) -> None:
    js = nc.jetstream(timeout=10)
    config = js_api.StreamConfig(
        name=name,
        subjects=[f"{subject_prefix}.>"],
        storage=js_api.StorageType.FILE,
        num_replicas=replicas,
        allow_atomic=True,
    )
    await js.add_stream(config)


async def stream_count(nc: NatsClient, name: str) -> int:
    return (await nc.jetstream(timeout=10).stream_info(name)).state.messages


# --------------------------------------------------------------------------- 1. throughput


class LaneError(Exception):
    pass


async def lane_pipelined(nc: NatsClient, acks: Acks, subject: str, ids: list[str]) -> None:
    window = asyncio.Semaphore(WINDOW)
    futures: list[asyncio.Future[Msg]] = []
    for msg_id in ids:
        await window.acquire()
        reply, future = acks.expect()
        future.add_done_callback(lambda _f: window.release())
        futures.append(future)
        await nc.publish(subject, PAYLOAD, reply=reply, headers={"Nats-Msg-Id": msg_id})
    for msg in await asyncio.wait_for(asyncio.gather(*futures), 120):
        result = answer(msg)
        if "error" in result or result.get("duplicate"):
            raise LaneError(f"{subject}: {result}")


async def lane_strict(nc: NatsClient, acks: Acks, subject: str, ids: list[str]) -> None:
    for msg_id in ids:
        result = await publish_one(nc, acks, subject, {"Nats-Msg-Id": msg_id})
        if "error" in result or result.get("duplicate"):
            raise LaneError(f"{subject}: {result}")


def lane_batched(size: int) -> Callable[[NatsClient, Acks, str, list[str]], Awaitable[None]]:
    async def lane(nc: NatsClient, acks: Acks, subject: str, ids: list[str]) -> None:
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            result = await publish_batch(nc, acks, subject, chunk)
            if "error" in result or result.get("count") != len(chunk):
                raise LaneError(f"{subject}: {result}")

    return lane


def throughput_modes() -> dict[str, Callable[[NatsClient, Acks, str, list[str]], Awaitable[None]]]:
    modes = {"pipelined": lane_pipelined, "strict": lane_strict}
    for size in BATCH_SIZES:
        modes[f"atomic B={size}"] = lane_batched(size)
    return modes


async def throughput_run(url: str, mode: str, messages: int) -> float:
    lane = throughput_modes()[mode]
    tag = uuid.uuid4().hex[:8]
    stream, prefix = f"ATOMIC_TP_{tag.upper()}", f"atomictp{tag}"
    nc = await nats.connect(url, name=f"atomic-bench-{tag}")
    try:
        acks = Acks(nc)
        await acks.start()
        await create_stream(nc, stream, prefix)
        per_lane = messages // LANES
        ids = [[f"{tag}-{index}-{seq}" for seq in range(per_lane)] for index in range(LANES)]
        started = time.perf_counter()
        await asyncio.gather(*(lane(nc, acks, f"{prefix}.{index}", ids[index]) for index in range(LANES)))
        elapsed = time.perf_counter() - started
        stored = await stream_count(nc, stream)
        if stored != per_lane * LANES:
            raise LaneError(f"{mode}: stored {stored} of {per_lane * LANES}")
        return per_lane * LANES / elapsed
    finally:
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(stream)
        await nc.close()


async def throughput(url: str, messages: int, repeats: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {mode: [] for mode in throughput_modes()}
    for repeat in range(repeats):
        for mode, values in samples.items():
            rate = await throughput_run(url, mode, messages)
            values.append(rate)
            print(f"  repeat {repeat + 1}: {mode:14} {rate:>9,.0f} msg/s", flush=True)
    medians = {mode: statistics.median(values) for mode, values in samples.items()}
    print()
    print(f"{messages:,} x {len(PAYLOAD)} B over {LANES} lanes, R1 file stream, median of {repeats}")
    print("| mode | msg/s (median) | samples | / pipelined |")
    print("|---|---|---|---|")
    for mode, values in samples.items():
        each = ", ".join(f"{v:,.0f}" for v in values)
        print(f"| {mode} | {medians[mode]:,.0f} | {each} | {medians[mode] / medians['pipelined']:.0%} |")
    return {"messages": messages, "repeats": repeats, "samples": samples, "medians": medians}


# --------------------------------------------------------------------------- 2. correctness


class Checks:
    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.results.append({"check": name, "pass": ok, "detail": detail})
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)

    @property
    def failed(self) -> bool:
        return not all(r["pass"] for r in self.results)


def error_of(result: Answer) -> tuple[int, int] | None:
    error = result.get("error")
    return (error.get("code"), error.get("err_code")) if error else None


async def stored_ids(nc: NatsClient, stream: str) -> list[str]:
    """Nats-Msg-Id of every stored message, in stream order."""
    js = nc.jetstream(timeout=10)
    total = await stream_count(nc, stream)
    found: list[str] = []
    if not total:
        return found
    config = js_api.ConsumerConfig(ack_policy=js_api.AckPolicy.NONE, headers_only=True)
    subscription = await js.pull_subscribe("", stream=stream, config=config)
    while len(found) < total:
        for message in await subscription.fetch(min(total - len(found), 1000), timeout=10):
            found.append((message.headers or {}).get("Nats-Msg-Id", ""))
    await subscription.unsubscribe()
    return found


async def check_resend_committed(checks: Checks, nc: NatsClient, acks: Acks, stream: str, subject: str) -> None:
    # (a) a committed batch, resent with the same Msg-Ids under a new batch id.
    a_ids = [f"a-{i}" for i in range(1, 11)]
    first = await publish_batch(nc, acks, subject, a_ids)
    print(f"     (a) first attempt, commit PubAck: {json.dumps(first)}")
    again = await publish_batch(nc, acks, subject, a_ids)
    print(f"     (a) resend, new batch id, commit answer: {json.dumps(again)}")
    same_id = uuid.uuid4().hex
    await publish_batch(nc, acks, subject, [f"a-x{i}" for i in range(1, 4)], batch_id=same_id)
    again_same = await publish_batch(nc, acks, subject, [f"a-x{i}" for i in range(1, 4)], batch_id=same_id)
    print(f"     (a) resend under the SAME (already committed) batch id: {json.dumps(again_same)}")
    count = await stream_count(nc, stream)
    checks.check(
        "a: committed batch resent (new batch id) is refused as a duplicate, nothing stored twice",
        first.get("count") == 10
        and first.get("seq") == 10
        and error_of(again) == (400, 10201)
        and error_of(again_same) == (400, 10201)
        and count == 13,
        f"first {first}; resend {again.get('error')}; resend same id {again_same.get('error')}; "
        f"stream holds {count} (13 expected)",
    )


async def check_abandoned(
    checks: Checks, nc: NatsClient, acks: Acks, stream: str, subject: str, wait_timeout: bool
) -> None:
    # (b) a batch that never got its commit: 1..4 of 10 sent, abandoned, then all 10 resent
    # under a new batch id with the commit.
    b_ids = [f"b-{i}" for i in range(1, 11)]
    abandoned = uuid.uuid4().hex
    await publish_batch(nc, acks, subject, b_ids[:4], batch_id=abandoned, commit=False)
    await nc.flush()
    before = await stream_count(nc, stream)
    resent = await publish_batch(nc, acks, subject, b_ids)
    print(f"     (b) resend after an abandoned first attempt, commit PubAck: {json.dumps(resent)}")
    # The abandoned batch is still open on the server (until max_batch_timeout, 10 s): its
    # late commit must not store anything either.
    late = await publish_one(nc, acks, subject, batch_headers(b_ids[4], abandoned, 5, True))
    print(f"     (b) late commit of the abandoned batch (still open): {json.dumps(late)}")
    ids = await stored_ids(nc, stream)
    checks.check(
        "b: batch abandoned before its commit, resent whole with a new batch id, is stored exactly once",
        before == 0 and resent.get("count") == 10 and ids == b_ids and error_of(late) == (400, 10201),
        f"before resend {before} stored; resend {resent}; late commit of the abandoned batch {late.get('error')}; "
        f"stream holds {len(ids)} in order {ids == b_ids}",
    )
    if wait_timeout:
        expired = uuid.uuid4().hex
        await publish_batch(nc, acks, subject, [f"b-t{i}" for i in range(1, 4)], batch_id=expired, commit=False)
        await asyncio.sleep(11)
        after = await publish_one(nc, acks, subject, batch_headers("b-t4", expired, 4, True))
        print(f"     (b) commit 11 s after the batch started (server max_batch_timeout 10 s): {json.dumps(after)}")
        count = await stream_count(nc, stream)
        checks.check(
            "b: an abandoned batch expires on the server (10 s); a late commit is refused, nothing stored",
            error_of(after) == (400, 10176) and count == 10,
            f"late commit {after.get('error')}; stream holds {count} (10 expected)",
        )


async def check_duplicate_inside(checks: Checks, nc: NatsClient, acks: Acks, stream: str, subject: str) -> None:
    # (c) a batch containing one Msg-Id that is already stored.
    c_ids = [f"c-{i}" for i in range(1, 11)]
    single = await publish_one(nc, acks, subject, {"Nats-Msg-Id": "c-5"})
    failed = await publish_batch(nc, acks, subject, c_ids)
    print(f"     (c) batch with c-5 already stored (seq {single.get('seq')}), commit answer: {json.dumps(failed)}")
    count = await stream_count(nc, stream)
    checks.check(
        "c: batch with one already-stored Msg-Id fails entirely",
        error_of(failed) == (400, 10201) and count == 1,
        f"answer {json.dumps(failed)} (no Msg-Id, no seq of the duplicate); stream holds {count} (1 expected)",
    )
    # The answer does not say which message is the duplicate, so the fallback a bridge has is
    # to publish that batch's messages one at a time (one in flight: order kept).
    singles = [await publish_one(nc, acks, subject, {"Nats-Msg-Id": msg_id}) for msg_id in c_ids]
    dup = [s for s in singles if s.get("duplicate")]
    ids = await stored_ids(nc, stream)
    checks.check(
        "c: fallback, the batch one message at a time: the duplicate is acknowledged as such, the rest stored once",
        len(dup) == 1 and dup[0].get("seq") == single.get("seq") and sorted(ids) == sorted(c_ids),
        f"duplicate PubAck {json.dumps(dup[0]) if dup else None}; stream order {ids}",
    )


async def check_limits(checks: Checks, nc: NatsClient, acks: Acks, stream: str, subject: str) -> None:
    # (d) the same Msg-Id twice inside one batch.
    inner = await publish_batch(nc, acks, subject, ["d-1", "d-2", "d-1", "d-3"])
    count = await stream_count(nc, stream)
    checks.check(
        "d: a Msg-Id twice inside one batch fails the batch",
        error_of(inner) == (400, 10201) and count == 0,
        f"answer {json.dumps(inner)}; stream holds {count}",
    )

    # (e) the server's batch size limit (max_batch_size, default 1000).
    big = await publish_batch(nc, acks, subject, [f"e-{i}" for i in range(1, 1002)])
    fits = await publish_batch(nc, acks, subject, [f"e-ok-{i}" for i in range(1, 1001)])
    count = await stream_count(nc, stream)
    checks.check(
        "e: 1001 messages exceed the server's batch limit, 1000 fit",
        error_of(big) == (400, 10199) and fits.get("count") == 1000 and count == 1000,
        f"1001: {json.dumps(big)}; 1000: count {fits.get('count')}; stream holds {count}",
    )


async def correctness(url: str, wait_timeout: bool) -> Checks:
    checks = Checks()
    tag = uuid.uuid4().hex[:8]
    stream, prefix = f"ATOMIC_OK_{tag.upper()}", f"atomicok{tag}"
    subject = f"{prefix}.0"
    nc = await nats.connect(url, name=f"atomic-check-{tag}")
    js = nc.jetstream(timeout=10)
    try:
        acks = Acks(nc)
        await acks.start()
        await create_stream(nc, stream, prefix)

        await check_resend_committed(checks, nc, acks, stream, subject)
        await js.purge_stream(stream)
        await check_abandoned(checks, nc, acks, stream, subject, wait_timeout)
        await js.purge_stream(stream)
        await check_duplicate_inside(checks, nc, acks, stream, subject)
        await js.purge_stream(stream)
        await check_limits(checks, nc, acks, stream, subject)
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)
        await nc.close()
    return checks


# --------------------------------------------------------------------------- 3. --cluster


class LanePublisher:
    """Records of one lane arrive at a fixed rate; one batch (or a window of publishes) in flight.

    A failed batch (no PubAck, incomplete, not leader, no responders) is resent whole under a new
    batch id; a batch refused as a duplicate is resent one message at a time (duplicates are
    acknowledged as such). The pipelined control resends every failed publish, as the bridge does.
    """

    def __init__(self, nc: NatsClient, acks: Acks, subject: str, lane: int, tag: str, batch: int) -> None:
        self.nc, self.acks, self.subject, self.lane, self.tag, self.batch = nc, acks, subject, lane, tag, batch
        self.queue: list[int] = []
        self.produced = 0
        self.arrived = asyncio.Event()
        self.resends = 0
        self.fallbacks = 0

    def headers(self, offset: int) -> dict[str, str]:
        return {"Kafka-Partition": str(self.lane), "Kafka-Offset": str(offset)}

    def msg_id(self, offset: int) -> str:
        return f"{self.tag}-{self.lane}-{offset}"

    async def produce(self, rate: float, stop: asyncio.Event) -> None:
        started = time.monotonic()
        while not stop.is_set():
            due = int((time.monotonic() - started) * rate)
            while self.produced < due:
                self.queue.append(self.produced)
                self.produced += 1
            self.arrived.set()
            await asyncio.sleep(0.01)

    async def take(self, stop: asyncio.Event, limit: int) -> list[int]:
        while not self.queue:
            if stop.is_set():
                return []
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), 0.1)
        taken, self.queue = self.queue[:limit], self.queue[limit:]
        return taken

    async def run_atomic(self, stop: asyncio.Event) -> None:
        while chunk := await self.take(stop, self.batch):
            ids = [self.msg_id(offset) for offset in chunk]
            while True:
                result = await publish_batch(
                    self.nc, self.acks, self.subject, ids, extra=lambda i, c=chunk: self.headers(c[i]), ack_wait=3
                )
                error = error_of(result)
                if error is None and result.get("count") == len(chunk):
                    break
                if error == (400, 10201):
                    self.fallbacks += 1
                    await self.one_at_a_time(chunk)
                    break
                self.resends += 1
                await asyncio.sleep(0.25)

    async def one_at_a_time(self, chunk: list[int]) -> None:
        for offset in chunk:
            while True:
                headers = {"Nats-Msg-Id": self.msg_id(offset), **self.headers(offset)}
                result = await publish_one(self.nc, self.acks, self.subject, headers, ack_wait=3)
                if error_of(result) is None:
                    break
                await asyncio.sleep(0.25)

    async def run_pipelined(self, stop: asyncio.Event) -> None:
        window = asyncio.Semaphore(WINDOW)
        pending: set[asyncio.Task[None]] = set()

        async def publish(offset: int) -> None:
            try:
                headers = {"Nats-Msg-Id": self.msg_id(offset), **self.headers(offset)}
                while error_of(await publish_one(self.nc, self.acks, self.subject, headers, ack_wait=3)) is not None:
                    self.resends += 1
                    await asyncio.sleep(0.25)
            finally:
                window.release()

        while chunk := await self.take(stop, WINDOW):
            for offset in chunk:
                await window.acquire()
                task = asyncio.create_task(publish(offset))
                pending.add(task)
                task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)


async def cluster_mode(publisher: str, rounds: int, rate: int, batch: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    stream, prefix, name = f"ATOMIC_CL_{tag.upper()}", f"atomiccl{tag}", f"bench-atomic-{tag}"
    cluster = lso.Cluster()
    nc = await nats.connect(cluster.urls, name=name, error_cb=lso._quiet, max_reconnect_attempts=-1)
    checker = await nats.connect(cluster.urls, error_cb=lso._quiet, max_reconnect_attempts=-1)
    stop = asyncio.Event()
    try:
        acks = Acks(nc)
        await acks.start()
        await create_stream(checker, stream, prefix, replicas=3)
        lanes = [LanePublisher(nc, acks, f"{prefix}.{i}", i, tag, batch) for i in range(LANES)]
        producers = [asyncio.create_task(lane.produce(rate / LANES, stop)) for lane in lanes]
        run = "run_atomic" if publisher == "atomic" else "run_pipelined"
        publishers = [asyncio.create_task(getattr(lane, run)(stop)) for lane in lanes]
        await asyncio.sleep(3)
        stopped = await lso.stop_leaders(cluster, checker, name, stream, "term", rounds)
        stop.set()
        await asyncio.gather(*producers)
        await asyncio.wait_for(asyncio.gather(*publishers), 180)
        produced = sum(lane.produced for lane in lanes)
        await lso.wait_for_count(checker, stream, produced, 60)
        late, doubled, distinct = lso.out_of_order(await lso.stored_records(checker, stream))
        return {
            "mode": f"{publisher} + term" + (f" (B<={batch})" if publisher == "atomic" else ""),
            "rounds": stopped,
            "produced": produced,
            "lost": produced - distinct,
            "doubled": doubled,
            "out_of_order": late,
            "resent": sum(lane.resends for lane in lanes),
            "dup_fallbacks": sum(lane.fallbacks for lane in lanes),
        }
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await checker.jetstream().delete_stream(stream)
        await nc.close()
        await checker.close()


async def cluster(rounds: int, rate: int, batch: int, publishers: list[str]) -> list[dict[str, Any]]:
    results = []
    with lso.cluster_lock(lso.start_cluster()):
        # As leader_stop_order.py: restart so every node runs the current config.
        lso.brokers_local.brokers("stop", "nats-cluster")
        lso.brokers_local.brokers("start", "nats-cluster")
        await lso.wait_for_jetstream(lso.Cluster().urls)
        for publisher in publishers:
            print(f"{publisher}: {rounds} rounds at {rate} msg/s", flush=True)
            results.append(await cluster_mode(publisher, rounds, rate, batch))
    print()
    print(f"{'mode':24} {'rounds':>6} {'produced':>9} {'lost':>5} {'doubled':>7} {'out of order':>12} {'resent':>6}")
    for r in results:
        print(
            f"{r['mode']:24} {r['rounds']:>6} {r['produced']:>9} {r['lost']:>5} {r['doubled']:>7} "
            f"{r['out_of_order']:>12} {r['resent']:>6}"
        )
    return results


# --------------------------------------------------------------------------- main


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-timeout", action="store_true", help="skip waiting 11 s for a batch to expire")
    parser.add_argument("--cluster", action="store_true", help="leader-stop rounds on the 3-node cluster")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100, help="--cluster: most records per batch")
    parser.add_argument("--publishers", default="atomic,pipelined", help="--cluster: atomic, pipelined or both")
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args()
    command = shlex.join(["python", *sys.argv])
    started = dt.datetime.now(dt.UTC)
    result: dict[str, Any] = {"command": command, "date": started.isoformat(timespec="seconds")}
    failed = False
    if args.cluster:
        os.environ.setdefault("KAFKA_BOOTSTRAP", "127.0.0.1:19092")  # leader_stop_order reads it on import paths
        result["cluster"] = await cluster(args.rounds, args.rate, args.batch, args.publishers.split(","))
        failed = any(r["lost"] or r["doubled"] for r in result["cluster"] if r["mode"].startswith("atomic"))
    else:
        url = os.environ.get("NATS_URL", "nats://127.0.0.1:14222")
        nc = await nats.connect(url)
        result["server"] = nc._server_info.get("version")
        await nc.close()
        print(f"nats-server {result['server']} at {url}")
        print("\ncorrectness of the batch mode:")
        checks = await correctness(url, not args.skip_timeout)
        result["checks"] = checks.results
        failed = checks.failed
        if not args.skip_throughput:
            print("\nthroughput:")
            result["throughput"] = await throughput(url, args.messages, args.repeats)
    result["took_s"] = round((dt.datetime.now(dt.UTC) - started).total_seconds())
    print(f"\ncommand: {command}   ({started:%Y-%m-%d %H:%M} UTC, took {result['took_s']} s)")
    if not args.no_json:
        RESULTS.mkdir(exist_ok=True)
        name = "atomic_batch_order-" + ("cluster-" if args.cluster else "") + f"{started:%Y%m%dT%H%M%SZ}.json"
        (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
        print(f"results: bench/results/{name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
