"""`nats-bridge verify` checks order too (issue 20, item 1): the pure tally and its report.

Within one lane and one stream, a scan (stream-sequence order) must see positions increase. A
record whose first copy is stored after a higher position of its lane, in the same stream, is
out of order; a second copy is doubled and only that; dead letters keep no order. Stored
messages are given as (subject, headers), the way a stream scan hands them to the dispatcher.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable

from rich.console import Console

from bridge.config import BridgeConfig, load_config_text
from bridge.verify import (
    LaneParity,
    RouteCheck,
    RouteParity,
    RunBuilder,
    VerifyReport,
    build_checks,
    dispatcher,
    render,
)


def _config(routes: str) -> BridgeConfig:
    text = textwrap.dedent("""\
        nats: {servers: ["nats://127.0.0.1:4222"]}
        streams:
          - {name: A, subjects: ["a.>"]}
          - {name: B, subjects: ["b.>"]}
        sources:
          kafka: {type: kafka, bootstrap_servers: ["127.0.0.1:9092"]}
          rabbit: {type: rabbitmq, url: "amqp://guest:guest@127.0.0.1/"}
        """)
    text += "services:\n  svc:\n    routes:\n" + textwrap.indent(textwrap.dedent(routes), "      ")
    return load_config_text(text, "order.yaml", {})


def _kafka_check() -> RouteCheck:
    (check,) = build_checks(_config('- {name: k, source: kafka, from: {topics: [orders]}, to: "a.{partition}"}\n'))
    return check


def _headers(partition: int, offset: int, **extra: str) -> dict[str, str]:
    return {
        "Kafka-Topic": "orders",
        "Kafka-Partition": str(partition),
        "Kafka-Offset": str(offset),
        "Nats-Msg-Id": f"svc/k/orders/{partition}/{offset}",
        "Bridge-Route": "svc/k",
        **extra,
    }


def _scan(check: RouteCheck, stream: str, offsets: Iterable[int], partition: int = 0, prefix: str = "a") -> None:
    """A stream holding `offsets` of one partition, in that sequence order."""
    handle = dispatcher([check], dead=False, stream=stream)
    for offset in offsets:
        handle(f"{prefix}.{partition}", _headers(partition, offset))


def test_lanes_stored_in_increasing_order_have_nothing_out_of_order() -> None:
    check = _kafka_check()
    handle = dispatcher([check], dead=False, stream="A")
    for offset in range(10):  # two partitions interleaved, 1's offsets below 0's: each lane's own order counts
        handle("a.0", _headers(0, 100 + offset))
        handle("a.1", _headers(1, offset))
    assert check.out_of_order(("orders", 0)) == []
    assert check.out_of_order(("orders", 1)) == []
    assert check.out_of_order_by_label() == {}
    gaps = _kafka_check()
    _scan(gaps, "A", [0, 1, 5, 9, 200])  # gaps are missing, not out of order
    assert gaps.out_of_order(("orders", 0)) == []
    assert gaps.stored == 5


def test_the_issues_reorder_reports_the_sixteen_records_stored_after_a_higher_offset() -> None:
    check = _kafka_check()
    _scan(check, "A", [34566, 34583, *range(34567, 34583), 34584, 34585])
    assert check.out_of_order(("orders", 0)) == [(34567, 34582)]
    assert check.out_of_order_by_label() == {"orders/0": [(34567, 34582)]}  # as LaneParity names it
    copies, _ = check.lane_counts(("orders", 0))
    assert list(copies.repeated()) == []  # each record once: the order is the only fault
    assert copies.distinct == 20


def test_a_second_copy_is_doubled_and_not_also_out_of_order() -> None:
    check = _kafka_check()
    _scan(check, "A", [0, 1, 2, 3, 2, 4, 7, 5, 5, 6])  # 2 again (a resend), 5 late and then again
    copies, _ = check.lane_counts(("orders", 0))
    assert list(copies.repeated()) == [(2, 2), (5, 2)]
    assert check.out_of_order(("orders", 0)) == [(5, 6)]  # 5 and 6 came after 7; 2's copy is doubled only


def test_a_late_doubled_copy_still_raises_the_mark_for_the_records_after_it() -> None:
    check = _kafka_check()
    _scan(check, "A", [0, 1, 2, 9, 3])  # 9 first
    _scan(check, "B", [9, 4], prefix="b")  # B: 9 (a double), then 4 after it
    copies, _ = check.lane_counts(("orders", 0))
    assert list(copies.repeated()) == [(9, 2)]
    assert check.out_of_order(("orders", 0)) == [(3, 4)]


def test_each_stream_is_ordered_on_its_own() -> None:
    (check,) = build_checks(_config('- {name: k, source: kafka, from: {topics: [orders]}, to: "{key}.{partition}"}\n'))
    assert check.streams == ["A", "B"]
    # The route's subjects land in two streams; A is scanned first and holds the higher offsets.
    _scan(check, "A", range(10, 20))
    _scan(check, "B", range(10), prefix="b")
    assert check.out_of_order(("orders", 0)) == []
    # Within B, a lower offset after a higher one is out of order, whatever A held.
    _scan(check, "B", [30, 25], prefix="b")
    assert check.out_of_order(("orders", 0)) == [(25, 25)]
    assert check.stored == 22


def test_dead_letters_are_not_order_checked() -> None:
    check = _kafka_check()
    _scan(check, "A", [0, 1, 2, 5, 6])
    dead = dispatcher([check], dead=True, stream="DLQ")
    for offset in (4, 3):  # dead-lettered, in reverse order, after higher offsets were stored
        dead("nats-bridge.dlq.svc.k", _headers(0, offset, **{"Bridge-Dlq-Route": "svc/k"}))
    assert check.dead_lettered == 2
    assert check.out_of_order(("orders", 0)) == []
    # A dead letter is no stored copy either: the record stored after it is only out of order
    # when a higher position was *stored* before it.
    assert check.highest == {("A", ("orders", 0)): 6}


def test_queue_routes_have_no_positions_to_order() -> None:
    (check,) = build_checks(_config('- {name: q, source: rabbit, from: {queue: work}, to: "a.q"}\n'))
    handle = dispatcher([check], dead=False, stream="A")
    for msg_id in ("m-9", "m-1", "m-5"):
        handle("a.q", {"Amqp-Routing-Key": "", "Nats-Msg-Id": msg_id, "Bridge-Route": "svc/q"})
    assert check.stored == 3
    assert check.disorder == {}
    assert check.out_of_order_by_label() == {}


def test_a_lane_stored_backwards_stays_one_run() -> None:
    builder = RunBuilder()
    for position in range(1000, 0, -1):
        builder.add(position)
    assert builder.runs() == [(1, 1000)]
    assert builder.count == 1000


# --------------------------------------------------------------------------- the report


def _route(*lanes: LaneParity) -> RouteParity:
    return RouteParity("svc/k", "kafka", streams=["A"], lanes=list(lanes), stored=20)


def test_out_of_order_makes_the_report_differ_in_json_and_exit_code() -> None:
    lane = LaneParity("orders/0", 34566, 34585, expected=20, stored_once=20, out_of_order=[(34567, 34582)])
    assert lane.out_of_order_count == 16
    route = _route(lane)
    assert (route.missing_count, route.doubled_count, route.out_of_order_count) == (0, 0, 16)
    assert not route.ok
    report = VerifyReport("m.yaml", [route])
    assert report.exit_code == 1
    document = json.loads(json.dumps(report.as_json()))
    assert document["ok"] is False
    (route_json,) = document["routes"]
    assert route_json["out_of_order_count"] == 16
    (lane_json,) = route_json["lanes"]
    assert lane_json["out_of_order"] == "34567-34582"
    assert lane_json["out_of_order_ranges"] == [[34567, 34582]]
    assert lane_json["out_of_order_count"] == 16
    assert (lane_json["missing_count"], lane_json["doubled_count"]) == (0, 0)

    clean = VerifyReport("m.yaml", [_route(LaneParity("orders/0", 0, 9, expected=10, stored_once=10))])
    assert clean.exit_code == 0
    assert clean.as_json()["routes"][0]["lanes"][0]["out_of_order"] == ""


def test_render_names_the_out_of_order_ranges_and_counts_them_in_the_verdict() -> None:
    lane = LaneParity(
        "orders/0", 34566, 34585, expected=20, stored_once=20, out_of_order=[(34567, 34582), (40000, 40000)]
    )
    console = Console(record=True, width=250, color_system=None)
    render(VerifyReport("m.yaml", [_route(lane)]), console)
    text = console.export_text()
    assert "out of order svc/k orders/0: 34567-34582, 40000" in text
    (header,) = [line.split() for line in text.splitlines() if "expected" in line]
    assert header[header.index("doubled") + 1] == "order"  # the table's column
    assert "0 missing, 0 doubled, 17 out of order" in text

    console = Console(record=True, width=250, color_system=None)
    render(VerifyReport("m.yaml", [_route(LaneParity("orders/0", 0, 9, expected=10, stored_once=10))]), console)
    assert "clean: every expected message is stored exactly once, each lane in order" in console.export_text()


def test_a_lane_with_nothing_to_check_yet_is_not_called_clean() -> None:
    """verify once said "clean" right under a note that a lane had nothing settled to check."""
    checked = LaneParity("orders/0", 0, 9, expected=10, stored_once=10)
    unsettled = LaneParity("orders/1", note="group g has no committed offset here: nothing is settled yet")
    report = VerifyReport("m.yaml", [_route(checked, unsettled)])
    console = Console(record=True, width=250, color_system=None)
    render(report, console)
    text = console.export_text()
    assert "clean where checked" in text
    assert "1 lane(s) have no range to check yet" in text
    assert "clean: every expected message" not in text
    assert report.as_json()["unchecked_lanes"] == ["svc/k orders/1"]
