"""`nats-bridge import` against real brokers: a RabbitMQ estate exported by the management API, and
Kafka topics with retention configs, become mapping files that validate and route as the brokers do."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bridge.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )


def _api(api_url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    split = urllib.parse.urlsplit(api_url.rstrip("/"))
    netloc = f"{split.hostname}:{split.port}" if split.port else str(split.hostname)
    request = urllib.request.Request(
        split._replace(netloc=netloc, path=split.path + path).geturl(),
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    token = base64.b64encode(f"{split.username or 'guest'}:{split.password or 'guest'}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        data = response.read()
    return json.loads(data) if data else None


def test_import_rabbitmq_definitions_from_the_management_api(
    rabbit_vhost_url: str, rabbitmq_api_url: str | None, tmp_path: Path
) -> None:
    assert rabbitmq_api_url is not None, "this test needs the management API"
    vhost = urllib.parse.unquote(urllib.parse.urlsplit(rabbit_vhost_url).path.lstrip("/"))
    v = urllib.parse.quote(vhost, safe="")
    _api(rabbitmq_api_url, "PUT", f"/exchanges/{v}/orders", {"type": "topic", "durable": True})
    _api(rabbitmq_api_url, "PUT", f"/exchanges/{v}/billing", {"type": "headers", "durable": True})
    _api(
        rabbitmq_api_url,
        "PUT",
        f"/queues/{v}/order-audit",
        {"durable": True, "arguments": {"x-queue-type": "quorum", "x-message-ttl": 3600000}},
    )
    _api(rabbitmq_api_url, "PUT", f"/queues/{v}/invoices", {"durable": True, "arguments": {"x-max-priority": 5}})
    _api(rabbitmq_api_url, "POST", f"/bindings/{v}/e/orders/q/order-audit", {"routing_key": "order.*.created"})
    _api(
        rabbitmq_api_url,
        "POST",
        f"/bindings/{v}/e/billing/q/invoices",
        {"routing_key": "", "arguments": {"x-match": "any", "format": "pdf"}},
    )
    definitions = _api(rabbitmq_api_url, "GET", f"/definitions/{v}")
    exported = tmp_path / "definitions.json"
    exported.write_text(json.dumps(definitions))
    mapping = tmp_path / "mapping.yaml"

    result = _cli("import", "rabbitmq", str(exported), "--vhost", vhost, "--output", str(mapping))

    assert result.returncode == 0, result.stderr
    assert _cli("validate", str(mapping)).returncode == 0
    config = load_config(mapping, env={})
    stream = next(s for s in config.streams if s.name == "RMQ_ORDERS")
    assert stream.max_age is not None
    assert stream.max_age.total_seconds() == 3600
    assert "priority queue" in mapping.read_text()
    explained = _cli("explain", str(mapping), "--exchange", "orders", "--routing-key", "order.eu.created", "--json")
    assert explained.returncode == 0, explained.stderr
    assert [m["subject"] for m in json.loads(explained.stdout)["matches"]] == ["rmq.orders.order.eu.created"]
    missed = _cli("explain", str(mapping), "--exchange", "orders", "--routing-key", "order.eu.shipped")
    assert missed.returncode == 1  # the legacy queue does not get it, so neither does the shadow
    headers = _cli("explain", str(mapping), "--exchange", "billing", "--routing-key", "", "--header", "format=pdf")
    assert headers.returncode == 0, headers.stdout


async def test_import_kafka_topics_with_retention_configs(
    kafka_bootstrap: str, kafka_topic: Callable[..., Awaitable[str]], unique_name: str, tmp_path: Path
) -> None:
    events = await kafka_topic(partitions=3, config={"retention.ms": "172800000", "retention.bytes": "1048576"})
    state = await kafka_topic(partitions=2, config={"cleanup.policy": "compact", "retention.ms": "-1"})
    mapping = tmp_path / "kafka.yaml"

    result = _cli("import", "kafka", "--bootstrap", kafka_bootstrap, "--topics", f"{unique_name}.*", "-o", str(mapping))

    assert result.returncode == 0, result.stderr
    assert _cli("validate", str(mapping)).returncode == 0
    config = load_config(mapping, env={})
    assert sorted(t for _, r in config.routes() for t in r.from_.topics) == sorted([events, state])  # type: ignore[union-attr]
    streams = {s.subjects[0]: s for s in config.streams}
    first = streams[f"kafka.{events}.*"]
    assert first.max_age is not None
    assert first.max_age.days == 2
    assert first.max_bytes == 3 * 1048576
    second = streams[f"kafka.{state}.*"]
    assert second.max_age is None
    text = mapping.read_text()
    assert "cleanup.policy compact" in text
    assert "KV bucket" in text
