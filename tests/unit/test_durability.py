"""The durability posture's pure logic (bridge.durability): what each legacy setting promises,
what a stream keeps, and when the second is weaker than the first."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from bridge.brokers.kafka.legacy import legacy_from_kafka
from bridge.brokers.legacy import LegacyKind, LegacySource, LegacyView
from bridge.brokers.rabbitmq.legacy import legacy_from_management
from bridge.durability.assess import Advice, assess, build_report
from bridge.durability.legacy import DEFAULT_SYNC_INTERVAL, NOT_REVEALED, Level
from bridge.durability.sync import StreamPosture, SyncSetting, stream_sync, sync_from_varz, weakest

ALWAYS = SyncSetting(True)
DEFAULT = SyncSetting(False, DEFAULT_SYNC_INTERVAL)
UNKNOWN = SyncSetting(None)

QUORUM = LegacySource(LegacyKind.QUORUM, "orders", copies=3)
RMQ_STREAM = LegacySource(LegacyKind.STREAM, "events", copies=3)
CLASSIC = LegacySource(LegacyKind.CLASSIC, "audit", copies=1)
TRANSIENT = LegacySource(LegacyKind.CLASSIC, "tmp", durable=False, copies=1)
KAFKA_RF3 = LegacySource(LegacyKind.KAFKA, "payments", copies=3, min_insync=2)
KAFKA_RF1 = LegacySource(LegacyKind.KAFKA, "clicks", copies=1, min_insync=1)


def stream(replicas: int = 1, storage: str = "file", sync: SyncSetting = UNKNOWN) -> StreamPosture:
    return StreamPosture("ORDERS", replicas, storage, sync)


def levels(advice: list[Advice]) -> list[tuple[str, str]]:
    return [(item.level.value, item.setting) for item in advice]


# --- sync_interval from /varz ---------------------------------------------------------------------


def test_varz_default_interval_is_two_minutes() -> None:
    varz = {"jetstream": {"config": {"sync_interval": 120_000_000_000, "store_dir": "/x"}}}
    setting = sync_from_varz(varz)
    assert setting == SyncSetting(False, timedelta(minutes=2))
    assert setting.text() == "2m (the default)"


def test_varz_sync_always_and_a_custom_interval() -> None:
    assert sync_from_varz({"jetstream": {"config": {"sync_interval": 120_000_000_000, "sync_always": True}}}) == ALWAYS
    assert ALWAYS.text() == "always"
    ten = sync_from_varz({"jetstream": {"config": {"sync_interval": 10_000_000_000}}})
    assert ten.interval == timedelta(seconds=10)
    assert ten.text() == "10s"


def test_varz_without_an_interval_means_the_default_and_without_jetstream_unknown() -> None:
    assert sync_from_varz({"jetstream": {"config": {}}}) == DEFAULT
    unknown = sync_from_varz({"server_name": "n1"})
    assert not unknown.known
    assert "no JetStream" in unknown.text()


def test_the_weakest_server_decides() -> None:
    assert weakest([ALWAYS, ALWAYS]) == ALWAYS
    assert weakest([ALWAYS, SyncSetting(False, timedelta(seconds=10)), DEFAULT]) == DEFAULT
    assert not weakest([ALWAYS, UNKNOWN]).known
    assert not weakest([]).known


def test_stream_sync_uses_the_servers_holding_the_stream() -> None:
    by_server = {"n1": ALWAYS, "n2": ALWAYS, "n3": DEFAULT}
    assert stream_sync(["n1", "n2"], by_server, NOT_REVEALED) == ALWAYS
    assert stream_sync(["n1", "n3"], by_server, NOT_REVEALED) == DEFAULT
    assert stream_sync(None, by_server, NOT_REVEALED) == DEFAULT  # peers unknown: every server asked
    missing = stream_sync(["n1", "n4"], by_server, NOT_REVEALED)
    assert not missing.known
    assert "n4" in missing.text()
    assert stream_sync(["n1"], {}, NOT_REVEALED).text() == "unknown (not revealed to clients)"


# --- the legacy side ------------------------------------------------------------------------------


def test_management_api_queues() -> None:
    quorum = legacy_from_management(
        {"name": "q", "type": "quorum", "durable": True, "members": ["r1@a", "r2@b", "r3@c"]}
    )
    assert (quorum.kind, quorum.copies, quorum.replicated, quorum.fsyncs) == (LegacyKind.QUORUM, 3, True, True)
    single = legacy_from_management({"name": "q", "type": "quorum", "durable": True, "members": ["r1@a"]})
    assert single.replicated  # the type is the promise, even on a single node
    stream_queue = legacy_from_management({"name": "s", "type": "stream", "durable": True, "members": ["a", "b"]})
    assert (stream_queue.kind, stream_queue.replicated, stream_queue.fsyncs) == (LegacyKind.STREAM, True, False)
    classic = legacy_from_management({"name": "c", "type": "classic", "durable": True})
    assert (classic.kind, classic.copies, classic.replicated, classic.fsyncs) == (LegacyKind.CLASSIC, 1, False, True)
    mirrored = legacy_from_management({"name": "m", "type": "classic", "durable": True, "slave_nodes": ["b", "c"]})
    assert (mirrored.copies, mirrored.replicated) == (3, True)
    transient = legacy_from_management({"name": "t", "type": "classic", "durable": False})
    assert not transient.durable
    assert not transient.fsyncs


def test_kafka_topics() -> None:
    partitions = [{"partition": 0, "replicas": [1, 2, 3]}, {"partition": 1, "replicas": [2, 3]}]
    topic = legacy_from_kafka("t", partitions, {"min.insync.replicas": "2", "flush.messages": "9223372036854775807"})
    assert (topic.copies, topic.min_insync, topic.fsync_each, topic.replicated) == (2, 2, False, True)
    assert not topic.fsyncs
    assert "replication factor 2, min.insync.replicas 2" in topic.describe()
    flushing = legacy_from_kafka("t", [{"replicas": [1]}], {"flush.messages": "1"})
    assert flushing.fsyncs
    assert not flushing.replicated


# --- assess: warnings and notes --------------------------------------------------------------------


def test_quorum_queue_onto_r1_warns_and_names_route_settings_and_fix() -> None:
    advice = assess("orders/shadow", LegacyView((QUORUM,)), stream(1, "file", UNKNOWN))
    assert levels(advice) == [("warning", "replicas 1"), ("note", "sync_interval unknown (not revealed to clients)")]
    warning = advice[0]
    assert warning.route == "orders/shadow"
    assert "quorum queue 'orders'" in warning.text()
    assert "stream ORDERS replicas 1" in warning.text()
    assert "`replicas: 3`" in warning.fix
    assert "sync_interval: always" in advice[1].fix


def test_quorum_queue_onto_r3_with_a_known_interval_warns_about_fsync_only() -> None:
    advice = assess("orders/shadow", LegacyView((QUORUM,)), stream(3, "file", DEFAULT))
    assert levels(advice) == [("warning", "on servers with sync_interval 2m (the default)")]
    assert "acknowledges before fsync" in advice[0].text()
    assert "sync_interval: always" in advice[0].fix


def test_quorum_queue_onto_r3_with_sync_always_is_kept() -> None:
    assert assess("orders/shadow", LegacyView((QUORUM,)), stream(3, "file", ALWAYS)) == []


@pytest.mark.parametrize("legacy", [QUORUM, RMQ_STREAM, KAFKA_RF3, CLASSIC, KAFKA_RF1])
def test_memory_storage_warns_for_every_durable_legacy_source(legacy: LegacySource) -> None:
    advice = assess("svc/route", LegacyView((legacy,)), stream(3, "memory", ALWAYS))
    assert levels(advice) == [("warning", "storage memory")]
    assert "`storage: file`" in advice[0].fix
    assert legacy.name in advice[0].legacy


def test_memory_storage_with_an_unknown_legacy_side_warns_and_with_a_transient_one_not() -> None:
    unknown = assess("svc/route", LegacyView(unknown="no management API"), stream(1, "memory"))
    assert levels(unknown) == [("warning", "storage memory")]
    assert "no management API" in unknown[0].legacy
    assert assess("svc/route", LegacyView((TRANSIENT,)), stream(1, "memory")) == []
    assert assess("svc/route", LegacyView(), stream(1, "memory")) == []  # no legacy queue: nothing promised


@pytest.mark.parametrize("legacy", [RMQ_STREAM, KAFKA_RF3])
def test_replicated_without_fsync_needs_r3_and_not_sync_always(legacy: LegacySource) -> None:
    assert levels(assess("svc/route", LegacyView((legacy,)), stream(1, "file", DEFAULT))) == [("warning", "replicas 1")]
    assert assess("svc/route", LegacyView((legacy,)), stream(3, "file", DEFAULT)) == []


def test_kafka_rf1_onto_r1_file_is_no_downgrade() -> None:
    assert assess("svc/route", LegacyView((KAFKA_RF1,)), stream(1, "file", DEFAULT)) == []


def test_classic_durable_queue_gets_a_note_never_a_warning() -> None:
    for sync in (UNKNOWN, DEFAULT):
        advice = assess("svc/route", LegacyView((CLASSIC,)), stream(1, "file", sync))
        assert [item.level for item in advice] == [Level.NOTE]
        assert "confirm-after-fsync" in advice[0].fix
    assert assess("svc/route", LegacyView((CLASSIC,)), stream(1, "file", ALWAYS)) == []


def test_unknown_legacy_side_on_a_file_stream_gives_nothing_to_warn_about() -> None:
    assert assess("svc/route", LegacyView(unknown="AMQP cannot tell"), stream(1, "file")) == []


def test_shadowed_exchange_with_several_legacy_queues_names_the_strong_ones() -> None:
    advice = assess("svc/route", LegacyView((CLASSIC, QUORUM, TRANSIENT)), stream(1, "file", DEFAULT))
    warnings = [item for item in advice if item.level is Level.WARNING]
    assert [item.setting for item in warnings] == ["replicas 1", "on servers with sync_interval 2m (the default)"]
    assert all("'orders'" in item.legacy and "'audit'" not in item.legacy for item in warnings)
    notes = [item for item in advice if item.level is Level.NOTE]
    assert len(notes) == 1
    assert "'audit'" in notes[0].legacy


def test_kafka_flush_every_record_counts_as_fsync_before_ack() -> None:
    flushing = LegacySource(LegacyKind.KAFKA, "ledger", copies=3, min_insync=2, fsync_each=True)
    advice = assess("svc/route", LegacyView((flushing,)), stream(3, "file", DEFAULT))
    assert levels(advice) == [("warning", "on servers with sync_interval 2m (the default)")]


# --- the report -----------------------------------------------------------------------------------


def test_report_per_route_and_as_json() -> None:
    streams = {
        "ORDERS": StreamPosture("ORDERS", 1, "file", UNKNOWN),
        "AUDIT": StreamPosture("AUDIT", 1, "file", UNKNOWN, origin="file"),
    }
    routes = {
        "orders/shadow": (LegacyView((QUORUM,)), ["ORDERS"]),
        "audit/shadow": (LegacyView((CLASSIC,)), ["AUDIT", "MISSING"]),
    }
    report = build_report(streams, routes, ["NATS monitoring at http://n1:8222/varz: HTTP 500"])
    assert [item.route for item in report.warnings] == ["orders/shadow"]
    assert report.routes["audit/shadow"][1] == ["AUDIT"]  # a stream neither server nor file knows is skipped
    document = json.loads(json.dumps(report.as_json()))
    assert [s["stream"] for s in document["streams"]] == ["ORDERS", "AUDIT"]
    assert document["streams"][0]["sync_interval"] == {
        "known": False,
        "always": None,
        "interval_seconds": None,
        "text": "unknown (not revealed to clients)",
    }
    assert "not read from the server" in document["streams"][1]["line"]
    assert document["warnings"][0]["route"] == "orders/shadow"
    assert document["warnings"][0]["fix"].startswith("`replicas: 3`")
    assert {note["route"] for note in document["notes"]} == {"orders/shadow", "audit/shadow"}
    part = report.for_routes(["audit/shadow"])
    assert list(part.streams) == ["AUDIT"]
    assert part.warnings == []


# --- secrets of the new settings ----------------------------------------------------------------


def test_management_and_monitoring_credentials_are_secrets_and_travel_in_headers() -> None:
    from bridge.brokers.http import split_credentials
    from bridge.brokers.rabbitmq.management import management_login
    from bridge.config import load_config_text
    from bridge.logs import config_secrets

    text = """
version: 1
nats:
  servers: ["nats://127.0.0.1:4222"]
  monitor_urls: ["http://mon:${MON_PASSWORD}@nats-1:8222"]
streams: [{name: S, subjects: ["s.>"]}]
sources:
  rabbit:
    type: rabbitmq
    url: "amqp://bridge:${AMQP_PASSWORD}@rabbit:5672/"
    management: {url: "http://rabbit:15672/", username: monitor, password: "${API_PASSWORD}"}
services:
  svc:
    routes:
      - {name: r, source: rabbit, from: {exchange: x, bindings: ["#"]}, to: "s.{rk}"}
"""
    env = {"MON_PASSWORD": "mon-secret", "AMQP_PASSWORD": "amqp-secret", "API_PASSWORD": "api-secret"}
    config = load_config_text(text, "m.yaml", env)
    secrets = config_secrets(config)
    assert {"mon-secret", "amqp-secret", "api-secret"} <= set(secrets)
    source = config.sources["rabbit"]
    base, auth, shown = management_login(source)  # type: ignore[arg-type]
    assert base == "http://rabbit:15672/api"
    assert auth is not None
    assert (auth.user, auth.password) == ("monitor", "api-secret")
    assert auth.headers() == {"Authorization": "Basic bW9uaXRvcjphcGktc2VjcmV0"}
    assert "api-secret" not in repr(auth)
    assert "secret" not in shown
    bare, basic = split_credentials("http://mon:mon-secret@nats-1:8222/varz")
    assert bare == "http://nats-1:8222/varz"
    assert basic is not None
    assert basic.password == "mon-secret"


def test_a_literal_password_in_a_management_url_is_refused() -> None:
    from bridge.config import load_config_text
    from bridge.errors import ConfigError

    text = """
version: 1
nats: {servers: ["nats://127.0.0.1:4222"]}
streams: [{name: S, subjects: ["s.>"]}]
sources:
  rabbit: {type: rabbitmq, url: "amqp://rabbit/", management: {url: "http://admin:hunter2@rabbit:15672/"}}
services:
  svc:
    routes:
      - {name: r, source: rabbit, from: {exchange: x, bindings: ["#"]}, to: "s.{rk}"}
"""
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "m.yaml", {})
    assert any("password must not be written in a URL" in issue.message for issue in caught.value.issues)
