"""`import kafka` mapping rules, without a broker: topic selection, limits, compaction notes."""

from __future__ import annotations

from bridge.config import load_config_text
from bridge.dryrun.checks import offline_checks
from bridge.dryrun.report import Severity
from bridge.explain import explain_kafka
from bridge.importers import TopicInfo, import_topics, render, select_topics


def test_select_topics_skips_internal_and_matches_whole_names() -> None:
    names = ["__consumer_offsets", "_schemas", "orders.events", "orders-archive", "orders"]
    assert select_topics(names, None) == ["orders", "orders-archive", "orders.events"]
    assert select_topics(names, "orders") == ["orders"]
    assert select_topics(names, r"orders\..*") == ["orders.events"]


def test_limits_and_compaction_are_translated_or_noted() -> None:
    topics = [
        TopicInfo(
            "orders.events", 3, {"retention.ms": "86400000", "retention.bytes": "1000", "cleanup.policy": "delete"}
        ),
        TopicInfo("orders.state", 2, {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "compact"}),
        TopicInfo("clicks", 1, {"retention.ms": "30000"}),
    ]
    document = import_topics(topics, "127.0.0.1:9092")
    config = load_config_text(render(document), "x", {})
    streams = {s.name: s for s in config.streams}
    assert streams["KAFKA_ORDERS_EVENTS"].max_age is not None
    assert streams["KAFKA_ORDERS_EVENTS"].max_age.days == 1
    assert streams["KAFKA_ORDERS_EVENTS"].max_bytes == 3000  # per partition x 3
    assert streams["KAFKA_ORDERS_STATE"].max_age is None
    assert streams["KAFKA_ORDERS_STATE"].max_bytes is None
    assert streams["KAFKA_CLICKS"].max_age is not None
    assert streams["KAFKA_CLICKS"].max_age.total_seconds() == 120  # 30 s retention kept 2m: the window fits
    assert [f for f in offline_checks(config) if f.severity in (Severity.ERROR, Severity.WARNING)] == []
    assert [r.name for r in config.services["orders"].routes] == ["orders-events", "orders-state"]
    comments = document.all_comments()
    assert "compaction" in comments
    assert "KV bucket" in comments
    assert "per partition" in comments
    outcome = explain_kafka(config, topic="orders.events", key=None, partition=2, offset=5, headers={}, body=b"")
    assert [m.subject for m in outcome.matches] == ["kafka.orders.events.2"]
    assert [m.streams for m in outcome.matches] == [("KAFKA_ORDERS_EVENTS",)]
    assert "${KAFKA_BOOTSTRAP:-127.0.0.1:9092}" in render(document)
