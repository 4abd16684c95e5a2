"""The pure half of `nats-bridge verify`: tallies, ranges, classification, attribution, report.

No broker is involved: stored messages are given as (subject, headers) the way a stream scan
hands them over, and source messages as the bridge's own SourceMessage values.
"""

from __future__ import annotations

import json
import textwrap

import pytest
from rich.console import Console

from bridge.config import BridgeConfig, load_config_text
from bridge.errors import BridgeError
from bridge.mapping import CompiledRoute
from bridge.message import AmqpOrigin, KafkaOrigin, SourceMessage
from bridge.verify import (
    DoubledRun,
    IdCounts,
    LaneComparer,
    LaneParity,
    PositionCounts,
    RouteCheck,
    RouteParity,
    RunBuilder,
    VerifyReport,
    build_checks,
    compress,
    dispatcher,
    doubled_runs,
    expectation,
    format_ranges,
    render,
    unchecked_lane,
)

# --------------------------------------------------------------------------- ranges


def test_positions_compress_into_sorted_runs_and_print_like_the_issue_asks() -> None:
    positions = [145, *range(120, 131), 120, 7]
    assert compress(positions) == [(7, 7), (120, 130), (145, 145)]
    assert format_ranges(compress(positions)) == "7, 120-130, 145"
    assert format_ranges([]) == ""


def test_format_ranges_with_a_limit_says_how_many_runs_it_left_out() -> None:
    runs = [(i * 10, i * 10) for i in range(5)]
    assert format_ranges(runs, limit=2) == "0, 10, … (+3 more)"
    assert format_ranges(runs, limit=5) == "0, 10, 20, 30, 40"


def test_run_builder_merges_out_of_order_and_overlapping_runs() -> None:
    builder = RunBuilder()
    for position in (5, 6, 7, 1, 2, 8, 3, 20):
        builder.add(position)
    assert builder.runs() == [(1, 3), (5, 8), (20, 20)]
    assert builder.count == 8
    assert RunBuilder().runs() == []


# --------------------------------------------------------------------------- tallies


def test_position_counts_count_copies_across_blocks_and_negative_positions() -> None:
    counts = PositionCounts()
    for position in (3, 3, 5000, 10_000_000, -2, 3):
        counts.add(position)
    assert counts[3] == 3
    assert counts[5000] == 1
    assert counts[4] == 0
    assert counts[123_456_789] == 0  # a block never touched
    assert counts.total == 6
    assert counts.distinct == 4
    assert counts.lowest() == -2
    assert counts.highest() == 10_000_000
    assert list(counts.items()) == [(-2, 1), (3, 3), (5000, 1), (10_000_000, 1)]
    assert list(counts.repeated()) == [(3, 3)]
    assert counts.distinct_between(0, 5000) == 2
    assert counts.distinct_between(4, 4999) == 0
    assert counts.distinct_between(-10, 10**9) == 4
    assert counts.distinct_between(10, 5) == 0


def test_position_counts_saturate_instead_of_wrapping() -> None:
    counts = PositionCounts()
    for _ in range(300):
        counts.add(1)
    assert counts[1] == 255
    assert counts.total == 300
    assert str(doubled_runs(counts.repeated())[0]) == "1 x255+"


def test_empty_position_counts_have_no_bounds() -> None:
    counts = PositionCounts()
    assert counts.lowest() is None
    assert counts.highest() is None
    assert list(counts.items()) == []
    assert list(counts.repeated()) == []


def test_position_counts_bounds_at_block_edges() -> None:
    counts = PositionCounts()
    for position in (4095, 4096, 8191, 0):
        counts.add(position)
    counts.add(8191)
    assert (counts.lowest(), counts.highest()) == (0, 8191)
    assert list(counts.repeated()) == [(8191, 2)]
    assert counts.distinct_between(4095, 4096) == 2


def test_doubled_runs_group_consecutive_positions_with_the_same_count() -> None:
    copies = [(1, 1), (2, 2), (3, 2), (4, 3), (5, 1), (7, 2), (8, 2)]
    assert doubled_runs(copies) == [DoubledRun(2, 3, 2), DoubledRun(4, 4, 3), DoubledRun(7, 8, 2)]
    assert [str(run) for run in doubled_runs(copies)] == ["2-3 x2", "4 x3", "7-8 x2"]


def test_id_counts_report_each_id_seen_more_than_once_with_its_count() -> None:
    ids = IdCounts()
    for msg_id in ("a", "b", "a", "c", "a", "b"):
        ids.add(msg_id)
    assert ids.total == 6
    assert ids.distinct == 3
    assert ids.doubled() == [("a", 3), ("b", 2)]


# --------------------------------------------------------------------------- comparing a lane


def _counts(*positions: int) -> PositionCounts:
    counts = PositionCounts()
    for position in positions:
        counts.add(position)
    return counts


def test_lane_comparer_sorts_every_source_message_into_exactly_one_bucket() -> None:
    # Stored: 0-9 without 3, 5 twice, 7 only as a dead letter, 9 though the route filters it,
    # 4 that the source no longer has (compacted), and 12 beyond the committed range.
    copies = _counts(0, 1, 2, 4, 5, 5, 6, 7, 9, 12)
    dead = _counts(7)
    comparer = LaneComparer("orders/0", 0, 9, copies, dead)
    for position in (0, 1, 2, 3, 5, 6, 7, 8, 9):  # the source: no 4 (compacted)
        comparer.see(position, expected=position not in (8, 9))
    comparer.see(2, expected=True)  # a re-fetch is ignored
    comparer.see(15, expected=True)  # beyond the range: ignored
    lane = comparer.finish("a note")
    assert lane.lane == "orders/0"
    assert (lane.first, lane.last) == (0, 9)
    assert lane.expected == 7  # 0 1 2 3 5 6 7
    assert lane.stored_once == 4  # 0 1 2 6
    assert lane.dead_lettered == 1  # 7
    assert lane.missing == [(3, 3)]
    assert lane.missing_count == 1
    assert lane.doubled == [DoubledRun(5, 5, 2)]
    assert lane.doubled_count == 1
    assert lane.not_expected == 2  # 8 9
    assert lane.unmatched == 1  # 4
    assert lane.outside == 1  # 12
    assert lane.note == "a note"
    assert lane.stored_once + lane.dead_lettered + lane.missing_count + 1 == lane.expected  # + 5, doubled


def test_a_record_both_stored_and_dead_lettered_is_doubled() -> None:
    comparer = LaneComparer("t/0", 0, 0, _counts(0, 0), _counts(0))
    comparer.see(0, expected=True)
    lane = comparer.finish()
    assert lane.doubled == [DoubledRun(0, 0, 2)]
    assert lane.stored_once == 0
    assert lane.dead_lettered == 0
    assert lane.missing == []


def test_doubles_outside_the_range_are_reported_too() -> None:
    comparer = LaneComparer("t/0", 0, 1, _counts(0, 1, 50, 50), PositionCounts())
    comparer.see(0, expected=True)
    comparer.see(1, expected=True)
    lane = comparer.finish()
    assert lane.missing == []
    assert lane.doubled == [DoubledRun(50, 50, 2)]
    assert lane.outside == 1


def test_a_lane_without_a_range_counts_everything_as_outside_but_still_finds_doubles() -> None:
    lane = unchecked_lane("t/1", _counts(4, 4, 5), "no committed offset")
    assert (lane.first, lane.last) == (None, None)
    assert lane.range_text == "—"
    assert lane.outside == 2
    assert lane.doubled == [DoubledRun(4, 4, 2)]
    assert lane.note == "no committed offset"


# --------------------------------------------------------------------------- what the route would do


def _config(routes: str, *, streams: str = '["s.>"]', sources: str = "") -> BridgeConfig:
    text = textwrap.dedent("""\
        nats: {servers: ["nats://127.0.0.1:4222"]}
        streams:
          - {name: S, subjects: STREAMS}
          - {name: OTHER, subjects: ["other.>"]}
        sources:
          kafka: {type: kafka, bootstrap_servers: ["127.0.0.1:9092"]}
          rabbit: {type: rabbitmq, url: "amqp://guest:guest@127.0.0.1/"}
        """).replace("STREAMS", streams)
    text += textwrap.indent(textwrap.dedent(sources), "  ")
    text += "services:\n  svc:\n    routes:\n" + textwrap.indent(textwrap.dedent(routes), "      ")
    return load_config_text(text, "test.yaml", {})


def _compiled(config: BridgeConfig, index: int = 0) -> CompiledRoute:
    service, route = config.routes()[index]
    return CompiledRoute.compile(service, route)


def _record(offset: int, key: bytes | None = b"k", body: bytes | None = b"v") -> SourceMessage:
    return SourceMessage(KafkaOrigin("orders", 0, offset, key=key), body)


def _kafka_route(extra: str = "", on_error: str = "dead-letter", to: str = "s.{key}") -> CompiledRoute:
    config = _config(
        f'- {{name: r, source: kafka, from: {{topics: [orders]{extra}}}, to: "{to}", on_error: {on_error}}}\n'
    )
    return _compiled(config)


def test_a_mappable_record_is_expected_as_published() -> None:
    streams = _config('- {name: r, source: kafka, from: {topics: [orders]}, to: "s.x"}\n').streams
    judged = expectation(_kafka_route(), _record(1), streams, 1 << 20)
    assert judged.expected
    assert judged.reason == "published"


def test_filtered_tombstones_are_not_expected_and_forwarded_ones_are() -> None:
    streams = _config('- {name: r, source: kafka, from: {topics: [orders]}, to: "s.x"}\n').streams
    skipping = _kafka_route(", tombstones: skip")
    assert not expectation(skipping, None, streams, 1 << 20).expected
    judged = expectation(skipping, _record(1, body=None), streams, 1 << 20)
    assert not judged.expected
    assert "tombstones: skip" in judged.reason
    assert expectation(_kafka_route(), _record(1, body=None), streams, 1 << 20).expected


@pytest.mark.parametrize(
    ("on_error", "expected", "said"),
    [("dead-letter", True, "dead-lettered"), ("skip", False, "on_error: skip"), ("stop", True, "stops at it")],
)
def test_an_unmappable_record_follows_on_error(on_error: str, expected: bool, said: str) -> None:
    route = _kafka_route(on_error=on_error)
    streams = _config('- {name: r, source: kafka, from: {topics: [orders]}, to: "s.x"}\n').streams
    judged = expectation(route, _record(1, key=None), streams, 1 << 20)  # {key} of a keyless record
    assert judged.expected is expected
    assert "unmappable" in judged.reason
    assert said in judged.reason


def test_a_subject_no_declared_stream_captures_or_a_payload_too_large_follow_on_error() -> None:
    streams = _config('- {name: r, source: kafka, from: {topics: [orders]}, to: "s.x"}\n').streams
    nowhere = _kafka_route(on_error="skip", to="elsewhere.{key}")
    judged = expectation(nowhere, _record(1), streams, 1 << 20)
    assert not judged.expected
    assert "no-stream: no stream captures subject 'elsewhere.k'" in judged.reason
    dead_lettering = _kafka_route(on_error="dead-letter", to="elsewhere.{key}")
    assert expectation(dead_lettering, _record(1), streams, 1 << 20).expected
    big = SourceMessage(KafkaOrigin("orders", 0, 1, key=b"k"), b"x" * 2000)
    judged = expectation(_kafka_route(on_error="skip"), big, streams, 1000)
    assert not judged.expected
    assert "max_payload 1000" in judged.reason


# --------------------------------------------------------------------------- whose stored message


def _kafka_headers(topic: str, partition: int, offset: int, **extra: str) -> dict[str, str]:
    return {
        "Kafka-Topic": topic,
        "Kafka-Partition": str(partition),
        "Kafka-Offset": str(offset),
        "Nats-Msg-Id": f"{topic}/{partition}/{offset}",
        **extra,
    }


def _checks(config: BridgeConfig, service: str | None = None) -> dict[str, RouteCheck]:
    return {check.route.config.name: check for check in build_checks(config, service)}


def test_kafka_messages_belong_to_the_route_reading_their_topic_into_its_subjects() -> None:
    config = _config("""\
        - {name: a, source: kafka, from: {topics: [orders]}, to: "s.a.{partition}"}
        - {name: b, source: kafka, from: {topics: [orders]}, to: "s.b.{partition}"}
        - {name: p, source: kafka, from: {topic_pattern: 'pay\\..*'}, to: "s.p.{partition}"}
        """)
    checks = _checks(config)
    a, b, p = checks["a"], checks["b"], checks["p"]
    assert a.kind == "kafka"
    assert a.streams == ["S"]
    assert a.claim("s.a.3", _kafka_headers("orders", 3, 17)) == (("orders", 3), 17)
    assert b.claim("s.a.3", _kafka_headers("orders", 3, 17)) is None  # same topic, other route's subject
    assert a.claim("s.a.3", _kafka_headers("refunds", 3, 17)) is None  # a topic it does not read
    assert p.claim("s.p.0", _kafka_headers("pay.eu", 0, 1)) == (("pay.eu", 0), 1)
    assert p.claim("s.p.0", _kafka_headers("pay", 0, 1)) is None  # the pattern must match the whole name
    assert a.claim("s.a.3", {"Kafka-Topic": "orders", "Kafka-Partition": "x"}) is None  # broken headers


def test_a_cluster_named_source_claims_only_its_own_msg_id_prefix() -> None:
    config = _config(
        '- {name: a, source: eu, from: {topics: [orders]}, to: "s.a.{partition}"}\n',
        sources='eu: {type: kafka, bootstrap_servers: ["h:9092"], cluster_name: eu}\n',
    )
    check = _checks(config)["a"]
    assert check.route.cluster_name == "eu"
    mine = _kafka_headers("orders", 0, 5, **{"Nats-Msg-Id": "eu/orders/0/5"})
    theirs = _kafka_headers("orders", 0, 5, **{"Nats-Msg-Id": "us/orders/0/5"})
    assert check.claim("s.a.0", mine) == (("orders", 0), 5)
    assert check.claim("s.a.0", theirs) is None
    # A dead letter's id is `dlq:<id>`; it names its route, which is enough.
    letter = {**mine, "Nats-Msg-Id": "dlq:eu/orders/0/6", "Kafka-Offset": "6", "Bridge-Dlq-Route": "svc/a"}
    assert check.claim_dead_letter("nats-bridge.dlq.svc.a", letter) == (("orders", 0), 6)


def test_stream_queue_and_queue_routes_claim_by_their_own_identity() -> None:
    config = _config("""\
        - {name: st, source: rabbit, from: {queue: events, mode: stream}, to: "s.events"}
        - {name: q, source: rabbit, from: {queue: work}, to: "s.work.{rk}"}
        - {name: k, source: kafka, from: {topics: [orders]}, to: "s.work.{partition}"}
        """)
    checks = _checks(config)
    stream, queue = checks["st"], checks["q"]
    assert (stream.kind, queue.kind) == ("rabbitmq-stream", "rabbitmq-queue")
    amqp = {"Amqp-Exchange": "", "Amqp-Routing-Key": "a.b", "Nats-Msg-Id": "m-1"}
    in_stream = {**amqp, "Amqp-Queue": "events", "Amqp-Stream-Offset": "41", "Nats-Msg-Id": "events/41"}
    assert stream.claim("s.events", in_stream) == ("events", 41)
    assert stream.claim("s.events", {**in_stream, "Amqp-Queue": "other"}) is None
    assert queue.claim("s.work.a.b", amqp) == "m-1"
    # A Kafka route writes into the same subjects: its messages are not the queue route's.
    assert queue.claim("s.work.0", _kafka_headers("orders", 0, 1)) is None
    assert queue.claim("s.work.a.b", in_stream) is None
    assert queue.claim("s.work.a.b", {"Nats-Msg-Id": "m-1"}) is None  # not published by the bridge


def test_dead_letters_belong_to_the_route_named_in_them() -> None:
    config = _config("""\
        - {name: k, source: kafka, from: {topics: [orders]}, to: "s.k.{key}"}
        - {name: q, source: rabbit, from: {queue: work}, to: "s.q"}
        """)
    checks = _checks(config)
    kafka, queue = checks["k"], checks["q"]
    letter = _kafka_headers("orders", 2, 9, **{"Bridge-Dlq-Route": "svc/k", "Nats-Msg-Id": "dlq:orders/2/9"})
    assert kafka.claim_dead_letter("nats-bridge.dlq.svc.k", letter) == (("orders", 2), 9)
    assert kafka.claim_dead_letter("nats-bridge.dlq.svc.q", letter) is None
    assert queue.claim_dead_letter("nats-bridge.dlq.svc.k", letter) is None
    amqp_letter = {"Bridge-Dlq-Route": "svc/q", "Nats-Msg-Id": "dlq:m-7", "Amqp-Routing-Key": ""}
    assert queue.claim_dead_letter("nats-bridge.dlq.svc.q", amqp_letter) == "m-7"


def test_the_dispatcher_tallies_copies_dead_letters_and_ids() -> None:
    config = _config("""\
        - {name: k, source: kafka, from: {topics: [orders]}, to: "s.k.{partition}"}
        - {name: q, source: rabbit, from: {queue: work}, to: "s.q"}
        """)
    checks = build_checks(config)
    stored = dispatcher(checks, dead=False)
    for offset in (0, 1, 1, 2):
        stored("s.k.0", _kafka_headers("orders", 0, offset))
    for msg_id in ("m-1", "m-2", "m-2"):
        stored("s.q", {"Amqp-Routing-Key": "", "Nats-Msg-Id": msg_id})
    stored("s.unrelated", {"Nats-Msg-Id": "x"})
    dispatcher(checks, dead=True)(
        "nats-bridge.dlq.svc.k", _kafka_headers("orders", 0, 3, **{"Bridge-Dlq-Route": "svc/k"})
    )
    kafka, queue = checks
    assert (kafka.stored, kafka.dead_lettered) == (4, 1)
    copies, dead = kafka.lane_counts(("orders", 0))
    assert list(copies.items()) == [(0, 1), (1, 2), (2, 1), (3, 1)]
    assert list(dead.items()) == [(3, 1)]
    assert (queue.stored, queue.ids.doubled()) == (3, [("m-2", 2)])


def test_build_checks_picks_the_capturing_streams_and_knows_the_services() -> None:
    config = _config(
        """\
        - {name: in-s, source: kafka, from: {topics: [orders]}, to: "s.{partition}"}
        - {name: in-other, source: kafka, from: {topics: [orders]}, to: "other.{partition}"}
        - {name: nowhere, source: kafka, from: {topics: [orders]}, to: "nowhere.{partition}"}
        """,
    )
    checks = _checks(config)
    assert checks["in-s"].streams == ["S"]
    assert checks["in-other"].streams == ["OTHER"]
    assert checks["nowhere"].streams == []
    assert checks["nowhere"].error is not None
    assert "no declared stream" in checks["nowhere"].error
    assert set(_checks(config, "svc")) == {"in-s", "in-other", "nowhere"}
    with pytest.raises(BridgeError, match=r"no service 'billing'.*services: svc"):
        build_checks(config, "billing")


def test_a_kafka_route_with_an_amqp_origin_is_never_given_a_stream_message() -> None:
    # Guard for expectation(): a RabbitMQ stream message is judged by the route's mapping.
    config = _config('- {name: st, source: rabbit, from: {queue: events, mode: stream}, to: "s.{rk}"}\n')
    route = _compiled(config)
    message = SourceMessage(AmqpOrigin("", "a.b", queue="events", stream_offset=3), b"x")
    assert expectation(route, message, config.streams, 1 << 20).expected


# --------------------------------------------------------------------------- the report


def _report(*routes: RouteParity, errors: tuple[str, ...] = ()) -> VerifyReport:
    return VerifyReport("m.yaml", list(routes), list(errors))


def _lane(**fields: object) -> LaneParity:
    lane = LaneParity("orders/0", 0, 9, expected=10, stored_once=10)
    for name, value in fields.items():
        setattr(lane, name, value)
    return lane


def test_exit_codes_clean_differs_and_unchecked_which_wins() -> None:
    clean = RouteParity("svc/k", "kafka", lanes=[_lane()])
    missing = RouteParity("svc/k", "kafka", lanes=[_lane(missing=[(3, 3)], missing_count=1, stored_once=9)])
    doubled_ids = RouteParity("svc/q", "rabbitmq-queue", doubled_ids=[("m-1", 2)])
    broken = RouteParity("svc/x", "kafka", error="stream S does not exist on the server")
    assert _report(clean).ok
    assert _report(clean).exit_code == 0
    assert _report(clean, missing).exit_code == 1
    assert _report(doubled_ids).exit_code == 1
    assert not _report(doubled_ids).ok
    assert _report(missing, broken).exit_code == 2
    assert _report(clean, errors=("cannot connect to NATS",)).exit_code == 2
    assert not _report(clean, errors=("cannot connect to NATS",)).ok


def test_the_json_report_names_every_missing_and_doubled_position() -> None:
    lane = _lane(
        missing=[(3, 3), (120, 130)], missing_count=12, doubled=[DoubledRun(5, 5, 2)], stored_once=0, outside=4
    )
    route = RouteParity("svc/k", "kafka", streams=["S"], lanes=[lane], stored=11, notes=["first", "second"])
    document = json.loads(json.dumps(_report(route).as_json()))
    assert document["ok"] is False
    assert document["exit_code"] == 1
    (route_json,) = document["routes"]
    assert route_json["route"] == "svc/k"
    assert route_json["missing_count"] == 12
    assert route_json["doubled_count"] == 1
    assert route_json["note"] == "first second"
    (lane_json,) = route_json["lanes"]
    assert lane_json["missing"] == "3, 120-130"
    assert lane_json["missing_ranges"] == [[3, 3], [120, 130]]
    assert lane_json["doubled"] == [{"first": 5, "last": 5, "copies": 2}]
    assert (lane_json["first"], lane_json["last"], lane_json["outside"]) == (0, 9, 4)


def test_render_shows_the_problems_notes_errors_and_a_verdict() -> None:
    lane = _lane(missing=[(3, 3), (120, 130)], missing_count=12, doubled=[DoubledRun(5, 5, 2)], note="lane note")
    kafka = RouteParity("svc/k", "kafka", lanes=[lane])
    queue = RouteParity("svc/q", "rabbitmq-queue", stored=3, distinct_ids=2, doubled_ids=[("m-2", 2)])
    broken = RouteParity("svc/x", "kafka", error="stream S does not exist on the server")
    console = Console(record=True, width=250, color_system=None)
    render(_report(kafka, queue, broken), console)
    text = console.export_text()
    assert "3, 120-130" in text
    assert "5 x2" in text
    assert "m-2 x2" in text
    assert "svc/x: stream S does not exist on the server" in text
    assert "svc/k orders/0: lane note" in text
    assert "not fully checked" in text

    console = Console(record=True, width=250, color_system=None)
    render(_report(RouteParity("svc/k", "kafka", lanes=[_lane()])), console)
    assert "clean" in console.export_text()


def test_service_filter_keeps_only_that_services_routes() -> None:
    config = load_config_text(
        textwrap.dedent("""\
            streams: [{name: S, subjects: ["s.>"]}]
            sources: {kafka: {type: kafka, bootstrap_servers: ["h:9092"]}}
            services:
              orders: {routes: [{name: a, source: kafka, from: {topics: [o]}, to: "s.o"}]}
              billing: {routes: [{name: b, source: kafka, from: {topics: [b]}, to: "s.b"}]}
            """),
        "two.yaml",
        {},
    )
    assert [check.key for check in build_checks(config)] == ["orders/a", "billing/b"]
    assert [check.key for check in build_checks(config, "billing")] == ["billing/b"]
    (billing,) = build_checks(config, "billing")
    assert billing.dead_letter_subject == "nats-bridge.dlq.billing.b"
