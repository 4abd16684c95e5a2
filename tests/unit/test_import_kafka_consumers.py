"""`import kafka` writes one durable consumer per legacy group with committed offsets: topics a group
reads together share a stream, the consumer filters each of them, and comments give its offsets and lag."""

from __future__ import annotations

from bridge.brokers.kafka.groups import GroupPosition
from bridge.config import load_config_text
from bridge.config.model import BridgeConfig
from bridge.dryrun.checks import offline_checks
from bridge.dryrun.report import Severity
from bridge.importers import MappingDocument, TopicInfo, import_topics, render
from bridge.importers.kafka_consumers import topic_clusters

TOPICS = [
    TopicInfo("orders.events", 2, {"retention.ms": "86400000", "retention.bytes": "1000"}),
    TopicInfo("payments", 1, {"retention.ms": "172800000", "retention.bytes": "500"}),
    TopicInfo("clicks", 1, {"retention.ms": "-1"}),
    TopicInfo("orders.state", 1, {}),
]
LEDGER = GroupPosition(
    group="ledger",
    state="Empty",
    members=(),
    committed={("orders.events", 0): 10, ("orders.events", 1): 7, ("payments", 0): 3},
    ends={("orders.events", 0): 12, ("orders.events", 1): 7, ("payments", 0): 8},
)
CLICKERS = GroupPosition(
    group="click.counter",
    state="Stable",
    members=("counter-1",),
    committed={("clicks", 0): 40},
    ends={("clicks", 0): 40},
)


def _imported() -> tuple[MappingDocument, BridgeConfig]:
    document = import_topics(TOPICS, "127.0.0.1:9092", [LEDGER, CLICKERS])
    return document, load_config_text(render(document), "kafka.yaml", {})


def test_topics_one_group_reads_share_a_stream_and_a_route() -> None:
    _, config = _imported()
    shared = next(s for s in config.streams if "kafka.payments.*" in s.subjects)
    assert shared.subjects == ["kafka.orders.events.*", "kafka.payments.*"]
    assert shared.max_age is not None
    assert shared.max_age.days == 2  # the longer of the two
    assert shared.max_bytes == 2 * 1000 + 500  # each topic's share, added up
    route = config.services["orders"].routes[0]
    assert route.from_.topics == ["orders.events", "payments"]  # type: ignore[union-attr]
    assert [s.name for s in config.streams if s.name == "KAFKA_ORDERS_STATE"]  # not read by a group: its own


def test_one_consumer_per_group_filtering_each_topic() -> None:
    _, config = _imported()
    [ledger] = config.services["orders"].consumers
    assert ledger.name == "ledger"
    assert ledger.stream == "KAFKA_ORDERS_EVENTS"
    assert ledger.filter_subjects == ["kafka.orders.events.*", "kafka.payments.*"]
    assert ledger.replaces is not None
    assert ledger.replaces.group == "ledger"
    assert ledger.replaces.route == "orders-events"  # the service has another route (orders.state)
    [clicks] = config.services["clicks"].consumers
    assert clicks.name == "click-counter"
    assert clicks.filter_subjects == ["kafka.clicks.*"]


def test_comments_give_offsets_lag_and_active_members() -> None:
    document, _ = _imported()
    notes = "\n".join(document.comments[("services", "orders", "consumers", 0, "filter_subjects")])
    assert "topic 'orders.events': committed offsets p0 10 (lag 2), p1 7 (lag 0); lag 2 in all." in notes
    assert "topic 'payments': committed offsets p0 3 (lag 5); lag 5 in all." in notes
    members = "\n".join(document.comments[("services", "clicks", "consumers", 0)])
    assert "1 active member(s) (counter-1)" in members


def test_the_file_dry_runs_without_consumer_errors() -> None:
    _, config = _imported()
    findings = offline_checks(config)
    assert [f for f in findings if f.severity in (Severity.ERROR, Severity.WARNING)] == []


def test_clusters_join_topics_transitively_and_keep_their_order() -> None:
    a_b = GroupPosition("g1", "Empty", (), {("a", 0): 1, ("b", 0): 1})
    b_c = GroupPosition("g2", "Empty", (), {("b", 0): 1, ("c", 0): 1})
    assert topic_clusters(["c", "a", "b", "d"], [a_b, b_c]) == [["c", "a", "b"], ["d"]]


def test_a_group_reading_part_of_a_shared_stream_names_its_topics() -> None:
    payer = GroupPosition("payer", "Empty", (), {("payments", 0): 8}, ends={("payments", 0): 8})
    document = import_topics(TOPICS, "127.0.0.1:9092", [LEDGER, payer])
    config = load_config_text(render(document), "kafka.yaml", {})
    consumers = {c.name: c for c in config.services["orders"].consumers}
    assert sorted(consumers) == ["ledger", "payer"]
    assert consumers["payer"].stream == consumers["ledger"].stream
    assert consumers["payer"].filter_subjects == ["kafka.payments.*"]
    assert consumers["payer"].replaces is not None
    assert consumers["payer"].replaces.topics == ["payments"]
    assert [f for f in offline_checks(config) if f.severity in (Severity.ERROR, Severity.WARNING)] == []
