"""Readiness probes for the local test brokers, used by compose/brokers.

    probe.py KIND TARGET [--timeout SECONDS] [--pid PID]

KIND is one of:
  tcp    host:port       a TCP connect succeeds
  http   url             an HTTP GET answers 200 (NATS: /healthz checks JetStream too)
  amqp   host:port       the AMQP 0-9-1 handshake gets a Connection.Start frame back
  kafka  host:port       a Kafka metadata request lists at least one broker (needs aiokafka)

Waits until the probe succeeds (exit 0), the deadline passes (exit 1), or the process --pid is gone
(exit 2, the broker died while starting). Standard library only, except the kafka probe, which
falls back to a plain TCP connect when aiokafka is not importable.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def _split(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host or "127.0.0.1", int(port)


def probe_tcp(target: str) -> bool:
    try:
        with socket.create_connection(_split(target), timeout=1.0):
            return True
    except OSError:
        return False


def probe_http(target: str) -> bool:
    url = urllib.parse.urlsplit(target)
    netloc = f"{url.hostname}:{url.port}" if url.port else str(url.hostname)
    request = urllib.request.Request(url._replace(netloc=netloc).geturl())
    if url.username is not None:
        token = base64.b64encode(f"{url.username}:{url.password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=2.0) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def probe_amqp(target: str) -> bool:
    try:
        with socket.create_connection(_split(target), timeout=2.0) as sock:
            sock.settimeout(2.0)
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            head = sock.recv(7)
    except OSError:
        return False
    # frame type 1 (method) on channel 0: Connection.Start
    return len(head) == 7 and head[0] == 1 and head[1:3] == b"\x00\x00"


async def _kafka_metadata(target: str) -> bool:
    from aiokafka.client import AIOKafkaClient  # noqa: PLC0415 - only this probe needs it

    client = AIOKafkaClient(bootstrap_servers=target, request_timeout_ms=3000)
    try:
        await client.bootstrap()
        metadata = await client.fetch_all_metadata()
        return bool(metadata.brokers())
    finally:
        await client.close()


def probe_kafka(target: str) -> bool:
    if not probe_tcp(target):
        return False
    try:
        import aiokafka  # noqa: F401, PLC0415 - optional
    except ImportError:
        return True
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(asyncio.wait_for(_kafka_metadata(target), 5.0))
    except Exception:  # any failure means "not ready yet"
        return False


PROBES = {"tcp": probe_tcp, "http": probe_http, "amqp": probe_amqp, "kafka": probe_kafka}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped) counts as dead
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rpartition(")")[2].split()[0] != "Z"
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("kind", choices=sorted(PROBES))
    parser.add_argument("target")
    parser.add_argument("--timeout", type=float, default=0.0, help="seconds to keep trying (0: try once)")
    parser.add_argument("--pid", type=int, default=0, help="give up early when this process is gone")
    args = parser.parse_args()

    probe = PROBES[args.kind]
    deadline = time.monotonic() + args.timeout
    while True:
        if probe(args.target):
            return 0
        if args.pid and not _alive(args.pid):
            print(f"process {args.pid} exited before {args.target} became ready", file=sys.stderr)
            return 2
        if time.monotonic() >= deadline:
            if args.timeout:
                print(f"{args.kind} {args.target} not ready after {args.timeout:g}s", file=sys.stderr)
            return 1
        time.sleep(0.25)


if __name__ == "__main__":
    sys.exit(main())
