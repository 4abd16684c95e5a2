"""`run --workers N`, the pure parts: restart backoff, metrics merging, health aggregation, stop
verdicts, what a mapping must not do with several workers, and the worker's side of the contract."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from bridge.config.loader import load_config_text
from bridge.config.model import BridgeConfig
from bridge.logs import LogFormat
from bridge.operations.http import HttpAddress
from bridge.workers.backoff import RestartBackoff
from bridge.workers.checks import check_workers
from bridge.workers.child import port_announcer, worker_index
from bridge.workers.merge import WorkerReply, health_problems, merge_metrics
from bridge.workers.process import describe_exit, pass_lines
from bridge.workers.supervisor import stop_failures, worker_argv

ROOT = Path(__file__).resolve().parents[2]

# --- backoff ------------------------------------------------------------------------------------


def test_restart_backoff_doubles_from_1s_to_30s_and_starts_over_after_a_healthy_minute() -> None:
    backoff = RestartBackoff()
    assert [backoff.delay(ran_for=2) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(ran_for=60) == 1  # it ran a healthy minute: quick again
    assert backoff.delay(ran_for=59.9) == 2


# --- metrics ------------------------------------------------------------------------------------


def worker_metrics(received: int, latency: float) -> str:
    """A bridge-shaped /metrics text: a labelled counter, a histogram, a gauge, process metrics."""
    registry = CollectorRegistry(auto_describe=False)
    counter = Counter("nats_bridge_messages_received", "Messages read.", ["service", "route"], registry=registry)
    counter.labels("svc", "r").inc(received)
    histogram = Histogram(
        "nats_bridge_publish_latency_seconds", "Latency.", ["service", "route"], buckets=(0.01, 0.1), registry=registry
    )
    histogram.labels("svc", "r").observe(latency)
    Gauge("nats_bridge_ready", "1 when ready.", registry=registry).set(1)
    ProcessCollector(registry=registry)
    return generate_latest(registry).decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_merged_metrics_label_each_sample_with_its_worker_and_describe_each_family_once() -> None:
    one, two = worker_metrics(5, 0.005), worker_metrics(7, 0.05)
    merged = merge_metrics({2: two, 1: one}).decode()
    for family in ("nats_bridge_messages_received_total", "nats_bridge_publish_latency_seconds", "nats_bridge_ready"):
        assert merged.count(f"# HELP {family} ") == 1, merged
        assert merged.count(f"# TYPE {family} ") == 1, merged
    expected = {}
    for worker, text in (("1", one), ("2", two)):
        for (name, labels), value in samples(text).items():
            expected[(name, tuple(sorted((*labels, ("worker", worker)))))] = value
    assert samples(merged) == expected  # every sample of every worker, values untouched
    assert 'nats_bridge_publish_latency_seconds_bucket{le="0.01",route="r",service="svc",worker="1"} 1.0' in merged
    assert 'nats_bridge_messages_received_total{route="r",service="svc",worker="2"} 7.0' in merged


def test_merged_metrics_without_a_worker_that_sent_garbage_still_carry_the_supervisors_own() -> None:
    up = GaugeMetricFamily("nats_bridge_worker_up", "Up.", labels=["worker"])
    up.add_metric(["1"], 0)
    assert merge_metrics({1: "not { prometheus"}, extra=[up]).decode().splitlines() == [
        "# HELP nats_bridge_worker_up Up.",
        "# TYPE nats_bridge_worker_up gauge",
        'nats_bridge_worker_up{worker="1"} 0.0',
    ]


# --- health -------------------------------------------------------------------------------------


def test_health_is_every_worker_healthy_and_otherwise_names_the_workers_and_their_problems() -> None:
    assert health_problems({1: WorkerReply(200, "ok\n"), 2: WorkerReply(200, "ok\n")}) == []
    replies = {
        3: WorkerReply(None, "no answer on port 4 within 2s (pid 9)"),
        1: WorkerReply(503, "not ready\n- route a/b: stalled for 61s\n- NATS: not connected\n"),
        2: WorkerReply(200, "ok\n"),
        4: WorkerReply(500, "500 Internal Server Error\n\nServer got itself in trouble"),
    }
    assert health_problems(replies) == [
        "worker 1: route a/b: stalled for 61s",
        "worker 1: NATS: not connected",
        "worker 3: no answer on port 4 within 2s (pid 9)",
        "worker 4: answered 500: 500 Internal Server Error",
    ]


# --- stopping -----------------------------------------------------------------------------------


def test_a_stop_is_clean_when_every_worker_exited_0_or_died_of_the_signal_before_it_could_handle_it() -> None:
    assert stop_failures({1: 0, 2: -signal.SIGTERM}, signal.SIGTERM) == []
    assert stop_failures({1: 0, 2: -signal.SIGINT}, signal.SIGINT) == []
    assert stop_failures({2: -signal.SIGKILL, 1: 1, 3: 0}, signal.SIGTERM) == [
        "worker 1 exited 1 while stopping",
        "worker 2 was killed by SIGKILL while stopping",
    ]
    assert stop_failures({1: -signal.SIGTERM}, signal.SIGINT) == ["worker 1 was killed by SIGTERM while stopping"]
    assert stop_failures({1: 0, 2: 2}, signal.SIGTERM, idle={2}) == [
        "worker 2 was not running at the stop: its last run exited 2"
    ]


def test_exit_codes_read_as_words() -> None:
    assert describe_exit(0) == "exited 0"
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(-200) == "was killed by signal 200"


def test_a_worker_runs_the_same_command_with_a_free_loopback_port() -> None:
    argv = worker_argv(
        Path("m.yaml"),
        log_level="debug",
        log_format=LogFormat.JSON,
        stall_after="30s",
        http_token_file=Path("/run/token"),
        serve_http=True,
    )
    assert argv[:5] == (sys.executable, "-m", "bridge", "run", "m.yaml")
    assert " ".join(argv[5:]) == (
        "--log-level debug --log-format json --stall-after 30s --http 127.0.0.1:0 --http-token-file /run/token"
    )
    quiet = worker_argv(
        Path("m.yaml"),
        log_level="info",
        log_format=LogFormat.HUMAN,
        stall_after="60s",
        http_token_file=None,
        serve_http=False,
    )
    assert quiet[-2:] == ("--http", "off")


# --- the mapping --------------------------------------------------------------------------------


def mapping(*routes: str) -> BridgeConfig:
    text = textwrap.dedent("""\
        nats: {servers: ["nats://127.0.0.1:4222"]}
        streams: [{name: S, subjects: ["s.>"]}]
        sources:
          rabbit: {type: rabbitmq, url: "amqp://guest:guest@127.0.0.1:5672/"}
          kafka: {type: kafka, bootstrap_servers: ["127.0.0.1:9092"]}
        services:
          svc:
            routes:
        """) + "".join(f"      - {route}\n" for route in routes)
    return load_config_text(text, "m.yaml", {})


SHADOW = '{name: shadow, source: rabbit, from: {exchange: x, bindings: ["#"]}, to: "s.{rk}"}'
SHADOW_SAC = (
    '{name: sac, source: rabbit, from: {exchange: x, bindings: ["#"], single_active_consumer: true}, to: "s.{rk}"}'
)
QUEUE = '{name: drain, source: rabbit, from: {queue: legacy}, to: "s.{rk}"}'
STREAM = '{name: log, source: rabbit, from: {queue: events, mode: stream}, to: "s.log", msg_id: "{offset}"}'
KAFKA = '{name: topic, source: kafka, from: {topics: [t]}, to: "s.{partition}"}'


def test_several_workers_refuse_a_stream_route_naming_it() -> None:
    checks = check_workers(mapping(STREAM, KAFKA), 2)
    assert len(checks.errors) == 1
    assert checks.errors[0].startswith("route svc/log reads the stream queue 'events' (mode: stream)")
    assert check_workers(mapping(STREAM), 1).errors == []


def test_several_workers_warn_once_per_queue_route_whose_order_they_interleave() -> None:
    checks = check_workers(mapping(SHADOW, SHADOW_SAC, QUEUE, KAFKA), 3)
    assert checks.errors == []
    assert len(checks.warnings) == 2
    shadow, drain = checks.warnings
    assert shadow.startswith("route svc/shadow: 3 workers consume its shadow queue as competing consumers")
    assert "single_active_consumer: true" in shadow
    assert drain.startswith("route svc/drain: 3 workers consume queue 'legacy' as competing consumers")
    assert check_workers(mapping(SHADOW, QUEUE), 1).warnings == []


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )


def test_run_refuses_fewer_than_one_worker_and_a_shared_stream_route_before_starting_anything(tmp_path: Path) -> None:
    file = tmp_path / "m.yaml"
    file.write_text(
        textwrap.dedent(f"""\
        nats: {{servers: ["nats://127.0.0.1:1"]}}
        streams: [{{name: S, subjects: ["s.>"]}}]
        sources: {{rabbit: {{type: rabbitmq, url: "amqp://guest:guest@127.0.0.1:1/"}}}}
        services:
          svc:
            routes:
              - {STREAM}
        """)
    )
    none = run_cli("run", str(file), "--workers", "0")
    assert none.returncode == 2
    assert "Invalid value for '--workers'" in none.stderr
    assert "greater than or equal to 1" in none.stderr
    shared = run_cli("run", str(file), "--workers", "2", "--http", "off")
    assert shared.returncode == 2, shared.stderr
    assert shared.stderr.startswith("error: route svc/log reads the stream queue 'events'"), shared.stderr
    assert "Traceback" not in shared.stderr


# --- the worker's side --------------------------------------------------------------------------


def test_a_worker_knows_its_index_and_tells_its_port_through_the_pipe() -> None:
    assert worker_index({"NATS_BRIDGE_WORKER": "3"}) == 3
    assert worker_index({}) is None
    assert port_announcer({}) is None
    read, write = os.pipe()
    announce = port_announcer({"NATS_BRIDGE_WORKER_PORT_FD": str(write)})
    assert announce is not None
    announce(HttpAddress("127.0.0.1", 40123))
    with os.fdopen(read, "rb") as pipe:
        assert pipe.read() == b"40123\n"  # and then end of file: the worker closed its end


class Writes:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.writes.append(data)
        return len(data)

    def flush(self) -> None:
        return


async def passed_on(*chunks: bytes) -> list[bytes]:
    """The writes pass_lines makes of `chunks`, arriving one by one as from a pipe."""
    reader = asyncio.StreamReader()
    sink = Writes()
    passing = asyncio.create_task(pass_lines(reader, sink))  # type: ignore[arg-type]
    for chunk in chunks:
        reader.feed_data(chunk)
        await asyncio.sleep(0)  # let it read this chunk alone
    reader.feed_eof()
    await passing
    return sink.writes


async def test_output_is_passed_on_in_whole_lines_however_it_arrives() -> None:
    writes = await passed_on(b'{"a": ', b'1}\n{"b"', b": 2}\n", b'{"c": 3}\n{"d": 4}', b"\n", b"tail without end")
    assert writes == [b'{"a": 1}\n', b'{"b": 2}\n', b'{"c": 3}\n', b'{"d": 4}\n', b"tail without end\n"]


async def test_a_line_up_to_a_mebibyte_is_passed_on_whole_and_a_longer_one_in_pieces() -> None:
    chunks = [b"x" * 65536] * 15 + [b"x" * 1000 + b"\n"]  # just under 1 MiB
    assert await passed_on(*chunks) == [b"".join(chunks)]
    longer = await passed_on(*[b"y" * 65536] * 40, b"\n")  # 2.5 MiB
    assert all(write.endswith(b"\n") for write in longer)
    assert len(longer) == 3
    assert b"".join(longer).replace(b"\n", b"") == b"y" * 65536 * 40
