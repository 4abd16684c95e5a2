"""`nats-bridge dry-run` offline: each check finds its problem in a small mapping, and the examples pass."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bridge.commands import app
from bridge.config import BridgeConfig
from bridge.config.loader import load_config_text
from bridge.dryrun.checks import offline_checks
from bridge.dryrun.report import Finding, Severity
from bridge.route_shapes import route_shapes
from bridge.routing.shapes import ONE, Lit, contained_in_filter, filter_shape, intersects

ROOT = Path(__file__).resolve().parents[2]

HEAD = """
version: 1
nats: {servers: ["nats://127.0.0.1:4222"]}
sources:
  rabbit: {type: rabbitmq, url: "amqp://guest@127.0.0.1:5672/"}
  kafka: {type: kafka, bootstrap_servers: ["127.0.0.1:9092"]}
  kafka2: {type: kafka, bootstrap_servers: ["127.0.0.2:9092"]}
"""


def _config(body: str) -> BridgeConfig:
    return load_config_text(HEAD + body, "test.yaml", {})


def _found(findings: list[Finding], check: str, severity: Severity) -> list[Finding]:
    return [f for f in findings if f.check == check and f.severity is severity]


@pytest.mark.parametrize("example", ["mappings/shop.yaml", "mappings/kafka-orders.yaml"])
def test_example_mappings_pass_clean(example: str) -> None:
    result = CliRunner().invoke(app, ["dry-run", str(ROOT / example), "--json"])
    document = json.loads(result.output)
    assert result.exit_code == 0, document
    assert document["errors"] == document["warnings"] == 0


def test_subject_no_stream_captures_is_an_error() -> None:
    config = _config("""
streams: [{name: A, subjects: ["a.>"]}]
services:
  s:
    routes:
      - {name: r, source: kafka, from: {topics: [t]}, to: "b.{key}", on_error: skip}
""")
    (finding,) = _found(offline_checks(config), "capture", Severity.ERROR)
    assert "captured by no stream" in finding.message
    assert finding.subject == "s/r"


def test_subjects_only_partly_captured_warn() -> None:
    config = _config("""
streams: [{name: A, subjects: ["x.a.>"]}]
services:
  s:
    routes:
      - {name: r, source: rabbit, from: {exchange: e, bindings: ["#"]}, to: "x.{rk}", on_error: skip}
""")
    (finding,) = _found(offline_checks(config), "capture", Severity.WARNING)
    assert "partly captured" in finding.message


def test_binding_words_make_capture_precise() -> None:
    config = _config("""
streams: [{name: A, subjects: ["x.order.>"]}]
services:
  s:
    routes:
      - {name: r, source: rabbit, from: {exchange: e, bindings: ["order.*"]}, to: "x.{rk}", on_error: skip}
""")
    assert not _found(offline_checks(config), "capture", Severity.WARNING)


def test_a_stream_with_several_filters_captures_what_they_take_together() -> None:
    # `#` matches the empty routing key too: `rmq.x` and `rmq.x.>` are both needed, and together
    # they capture every subject the route can produce.
    config = _config("""
streams: [{name: X, subjects: ["rmq.x", "rmq.x.>"]}]
services:
  s:
    routes:
      - {name: r, source: rabbit, from: {exchange: x, bindings: ["#"]}, to: "rmq.x.{rk}"}
""")
    assert _found(offline_checks(config), "capture", Severity.WARNING) == []
    alone = _config("""
streams: [{name: X, subjects: ["rmq.x.>"]}]
services:
  s:
    routes:
      - {name: r, source: rabbit, from: {exchange: x, bindings: ["#"]}, to: "rmq.x.{rk}"}
""")
    (finding,) = _found(offline_checks(alone), "capture", Severity.WARNING)
    assert "only partly captured" in finding.message


def test_overlapping_streams_are_an_error() -> None:
    config = _config("""
streams: [{name: A, subjects: ["a.>"]}, {name: B, subjects: ["a.b"]}]
services:
  s:
    routes:
      - {name: r, source: kafka, from: {topics: [t]}, to: "a.b", on_error: skip}
""")
    (finding,) = _found(offline_checks(config), "overlap", Severity.ERROR)
    assert "'a.>' of stream 'A' overlaps 'a.b'" in finding.message


def test_two_kafka_routes_on_one_topic_publish_twice() -> None:
    config = _config("""
streams: [{name: A, subjects: ["a.>"]}]
services:
  s:
    routes:
      - {name: r1, source: kafka, from: {topics: [orders]}, to: "a.one", on_error: skip}
      - {name: r2, source: kafka, from: {topic_pattern: "ord.*"}, to: "a.two", on_error: skip}
""")
    (finding,) = _found(offline_checks(config), "duplicates", Severity.WARNING)
    assert "published twice" in finding.message
    assert "orders" in finding.message


def test_shadow_routes_with_overlapping_bindings_warn() -> None:
    config = _config("""
streams: [{name: A, subjects: ["a.>"]}]
services:
  s:
    routes:
      - {name: r1, source: rabbit, from: {exchange: e, bindings: ["order.#"]}, to: "a.one.{rk}", on_error: skip}
      - {name: r2, source: rabbit, from: {exchange: e, bindings: ["*.eu"]}, to: "a.two.{rk}", on_error: skip}
      - {name: r3, source: rabbit, from: {exchange: e, bindings: ["invoice.*"]}, to: "a.three.{rk}", on_error: skip}
""")
    findings = _found(offline_checks(config), "duplicates", Severity.WARNING)
    assert [f.subject for f in findings] == ["s/r1, s/r2", "s/r2, s/r3"]


def test_duplicate_window_shorter_than_outage_budget_warns() -> None:
    config = _config("""
streams: [{name: A, subjects: ["a.>"], duplicate_window: 30s}]
services:
  s:
    routes:
      - {name: r, source: kafka, from: {topics: [t]}, to: "a.{key}", on_error: skip}
""")
    (finding,) = _found(offline_checks(config), "window", Severity.WARNING)
    assert "30s" in finding.message
    assert "2m" in finding.message
    assert not _found(offline_checks(config, outage_budget=timedelta(seconds=20)), "window", Severity.WARNING)


def test_multi_topic_route_without_topic_in_subject_collides() -> None:
    config = _config("""
streams: [{name: A, subjects: ["a.>"]}]
services:
  s:
    routes:
      - {name: r, source: kafka, from: {topics: [x.one, y.one]}, to: "a.{topic[1]}", on_error: skip}
""")
    (finding,) = _found(offline_checks(config), "collision", Severity.WARNING)
    assert "topic 'x.one' and topic 'y.one'" in finding.message


def test_two_kafka_clusters_with_default_ids_never_collide_on_msg_ids() -> None:
    config = _config("""
streams: [{name: A, subjects: ["a.>"]}]
services:
  s:
    routes:
      - {name: r1, source: kafka, from: {topics: [t]}, to: "a.{topic}", on_error: skip}
      - {name: r2, source: kafka2, from: {topics: [t]}, to: "a.{topic}", on_error: skip}
""")
    findings = offline_checks(config)
    assert _found(findings, "msg-id", Severity.ERROR) == []
    assert _found(findings, "msg-id", Severity.WARNING) == []
    (collision,) = _found(findings, "collision", Severity.WARNING)  # the subjects still meet
    assert "cannot tell them apart" in collision.message


def test_two_clusters_with_one_offset_template_collide_on_msg_ids() -> None:
    config = _config("""
streams: [{name: A, subjects: ["a.>"]}]
services:
  s:
    routes:
      - {name: r1, source: kafka, from: {topics: [t]}, to: "a.{topic}", msg_id: "{topic}/{partition}/{offset}"}
      - {name: r2, source: kafka2, from: {topics: [t]}, to: "a.{topic}", msg_id: "{topic}/{partition}/{offset}"}
""")
    (finding,) = _found(offline_checks(config), "msg-id", Severity.ERROR)
    assert finding.subject == "s/r1, s/r2"
    assert "stream A" in finding.message


def test_two_routes_on_one_topic_into_one_stream_with_one_template_collide() -> None:
    # The topology: two services, each through its own group, into one stream.
    config = _config("""
streams: [{name: A, subjects: ["a.>", "b.>"]}]
services:
  one:
    routes:
      - {name: r, source: kafka, from: {topics: [t]}, to: "a.{partition}", msg_id: "{topic}/{partition}/{offset}"}
  two:
    routes:
      - {name: r, source: kafka, from: {topics: [t]}, to: "b.{partition}", msg_id: "{topic}/{partition}/{offset}"}
""")
    (finding,) = _found(offline_checks(config), "msg-id", Severity.ERROR)
    assert finding.subject == "one/r, two/r"


def test_templates_that_start_apart_never_collide() -> None:
    config = _config("""
streams: [{name: A, subjects: ["a.>", "b.>"]}]
services:
  one:
    routes:
      - {name: r, source: kafka, from: {topics: [t]}, to: "a.{partition}", msg_id: "a/{partition}/{offset}"}
  two:
    routes:
      - {name: r, source: kafka, from: {topics: [t]}, to: "b.{partition}", msg_id: "b/{partition}/{offset}"}
      - {name: auto, source: kafka, from: {topics: [t]}, to: "b.x.{partition}"}
""")
    assert [f for f in offline_checks(config) if f.check == "msg-id"] == []


def test_reserved_headers_are_reported() -> None:
    config = _config("""
streams: [{name: A, subjects: ["a.>"]}]
services:
  s:
    routes:
      - name: r
        source: kafka
        from: {topics: [t]}
        to: "a.b"
        on_error: skip
        headers: {rename: {trace: Kafka-Topic}}
""")
    findings = offline_checks(config)
    assert "Source-<name>" in _found(findings, "headers", Severity.INFO)[0].message
    (warning,) = _found(findings, "headers", Severity.WARNING)
    assert "Kafka-Topic" in warning.message


def test_shapes_follow_nats_wildcards() -> None:
    assert intersects(filter_shape("a.>"), filter_shape("a.*"))
    assert not intersects(filter_shape("a.b"), filter_shape("a.*.c"))
    assert not contained_in_filter((Lit("a"),), "a.>")  # `>` needs one more token
    assert contained_in_filter((Lit("a"), ONE), "a.>")


def test_kafka_topic_list_gives_one_shape_per_topic() -> None:
    config = _config("""
streams: [{name: A, subjects: ["a.>"]}]
services:
  s:
    routes:
      - {name: r, source: kafka, from: {topics: [x.one, y]}, to: "a.{topic[0:]}.{partition}", on_error: skip}
""")
    service, route = config.routes()[0]
    shapes = [shape.shape for shape in route_shapes(service, route)]
    assert shapes == [(Lit("a"), Lit("x"), Lit("one"), ONE), (Lit("a"), Lit("y"), ONE)]


def test_cli_exit_codes(tmp_path: Path) -> None:
    errors = tmp_path / "errors.yaml"
    errors.write_text(
        HEAD
        + """
streams: [{name: A, subjects: ["a.>"]}]
services:
  s:
    routes:
      - {name: r, source: kafka, from: {topics: [t]}, to: "b.c", on_error: skip}
"""
    )
    warnings = tmp_path / "warnings.yaml"
    warnings.write_text(
        HEAD
        + """
streams: [{name: A, subjects: ["a.>"], duplicate_window: 10s}]
services:
  s:
    routes:
      - {name: r, source: kafka, from: {topics: [t]}, to: "a.c", on_error: skip}
"""
    )
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("version: 1\nsources: {}\n")
    runner = CliRunner()
    assert runner.invoke(app, ["dry-run", str(errors)]).exit_code == 2
    assert runner.invoke(app, ["dry-run", str(warnings)]).exit_code == 1
    assert runner.invoke(app, ["dry-run", str(invalid)]).exit_code == 2


def test_interest_and_workqueue_streams_a_route_publishes_into_warn() -> None:
    config = _config("""
streams:
  - {name: I, subjects: ["i.>"], retention: interest}
  - {name: W, subjects: ["w.>"], retention: workqueue}
  - {name: L, subjects: ["l.>"]}
  - {name: UNUSED, subjects: ["u.>"], retention: workqueue}
services:
  s:
    routes:
      - {name: a, source: kafka, from: {topics: [t]}, to: "i.{partition}", on_error: skip}
      - {name: b, source: kafka, from: {topics: [t2]}, to: "w.{partition}", on_error: skip}
      - {name: c, source: kafka, from: {topics: [t3]}, to: "l.{partition}", on_error: skip}
""")
    found = {f.subject: f.message for f in _found(offline_checks(config), "retention", Severity.WARNING)}
    assert set(found) == {"I", "W"}
    assert "dropped at once" in found["I"]
    assert "s/a" in found["I"]
    assert "cannot read the stream back" in found["W"]
    assert "s/b" in found["W"]
