"""`status`'s "safe to advance" in shadow does not flap with the bridge's commit rhythm: a backlog
that grew between the two looks is a lag only when it is more than the bridge stores in a few
seconds (Kafka offsets and AMQP acks are settled after JetStream's acknowledgements, in steps)."""

from __future__ import annotations

from bridge.brokers.base import Backlog
from bridge.cutover.phases import PhaseRecord
from bridge.cutover.status import COMMIT_SLACK_SECONDS, RouteStatus, ServiceStatus, _verdict


def _status(backlog: int, backlog_rate: float | None, stored_rate: float | None) -> ServiceStatus:
    stream = {"name": "PAY", "exists": True, "messages": 10_000, "last_seq": 10_000, "rate": stored_rate}
    route = RouteStatus("pay/copy", Backlog({"pay/0": backlog}), backlog_rate, [stream], 0)
    return ServiceStatus("pay", PhaseRecord(), routes=[route])


def test_a_backlog_within_a_few_seconds_of_storing_keeps_up() -> None:
    # 100 msg/s stored; between two looks the committed backlog rose to 300: one commit step
    safe, advice = _verdict(_status(300, +150.0, 100.0))
    assert safe, advice
    assert "keeps up" in advice


def test_a_backlog_beyond_the_slack_that_grows_is_behind() -> None:
    backlog = int(100 * COMMIT_SLACK_SECONDS) + 1
    safe, advice = _verdict(_status(backlog, +10.0, 100.0))
    assert not safe
    assert "backlog growing (+10.0/s): the bridge is behind" in advice


def test_a_growing_backlog_with_nothing_stored_is_behind() -> None:
    safe, advice = _verdict(_status(5, +2.5, 0.0))
    assert not safe
    assert "the bridge is behind" in advice


def test_a_shrinking_backlog_keeps_up() -> None:
    safe, _ = _verdict(_status(50_000, -800.0, 900.0))
    assert safe
