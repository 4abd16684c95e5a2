"""The partition Kafka's default partitioner gives a key, as `explain --key K --partitions N` says it
(what a NATS producer publishing to a `{partition}` subject must compute)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bridge.brokers.kafka.partitioner import key_partition
from bridge.commands import app

# The Java client's DefaultPartitioner over 1000 partitions (Kafka's murmur2 compatibility vectors).
JAVA = [(b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566), (b"\x00 ", 742)]

MAPPING = """
nats: {servers: ["nats://127.0.0.1:4222"]}
streams: [{name: PAYMENTS, subjects: ["payments.>"]}]
sources:
  kafka: {type: kafka, bootstrap_servers: ["127.0.0.1:9092"]}
services:
  pay:
    routes:
      - {name: copy, source: kafka, from: {topics: [payments]}, to: "payments.{partition}"}
"""


@pytest.mark.parametrize(("key", "partition"), JAVA)
def test_keys_land_where_the_java_client_puts_them(key: bytes, partition: int) -> None:
    assert key_partition(key, 1000) == partition


def test_a_topic_has_a_partition() -> None:
    with pytest.raises(ValueError, match="at least one partition"):
        key_partition(b"k", 0)


def test_explain_gives_the_subject_of_the_keys_partition(tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    args = ["explain", str(mapping), "--topic", "payments", "--key", "abc", "--partitions", "1000", "--json"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["matches"][0]["subject"] == "payments.107"
    assert "Kafka's default partitioner" in document["message"]


def test_partitions_needs_a_key_and_no_partition(tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    for extra in (["--partitions", "6"], ["--key", "k", "--partition", "2", "--partitions", "6"]):
        result = CliRunner().invoke(app, ["explain", str(mapping), "--topic", "payments", *extra])
        assert result.exit_code == 2
        assert "--partitions computes the partition of --key" in result.output
