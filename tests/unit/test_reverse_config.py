"""Reverse routes in the mapping file: what loads, and the errors that name the line."""

from __future__ import annotations

import pytest

from bridge.config import load_config_text
from bridge.config.services import Phase
from bridge.errors import ConfigError

HEAD = """
sources:
  r: {type: rabbitmq, url: "amqp://x/"}
  k: {type: kafka, bootstrap_servers: ["k:9092"]}
services:
  s:
    routes:
      - {name: a, source: r, from: {exchange: x, bindings: ["#"]}, to: "x.{rk}"}
    reverse:
"""


def test_a_reverse_route_loads_with_its_defaults() -> None:
    config = load_config_text(
        HEAD + "      - {name: back, stream: X, to: {source: k, topic: t, key: '{header:Account}'}}\n", "m.yaml", {}
    )
    ((service, route),) = config.reverse_routes()
    assert service == "s"
    assert route.during == [Phase.DRAIN, Phase.RETIRED]
    assert (route.to.kind, route.to.topic, route.to.key) == ("kafka", "t", "{header:Account}")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{name: b, stream: X, to: {source: k, exchange: x}}", "source 'k' is kafka, but 'to' names an exchange"),
        ("{name: b, stream: X, to: {source: r, exchange: x, topic: t}}", "exactly one of 'exchange'"),
        ("{name: b, stream: X, to: {source: nope, exchange: x}}", "source 'nope' is not defined"),
        ("{name: a, stream: X, to: {source: r, exchange: x}}", "two routes are named 'a'"),
        ("{name: b, stream: X, to: {source: r, exchange: x, routing_key: '{subjct}'}}", "did you mean '{subject}'"),
        ("{name: b, stream: X, filter_subjects: ['a.>.b'], to: {source: r, exchange: x}}", "not a valid NATS subject"),
        ("{name: b, stream: X, during: [], to: {source: r, exchange: x}}", "during"),
    ],
)
def test_a_broken_reverse_route_is_an_error_on_its_line(entry: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config_text(HEAD + f"      - {entry}\n", "m.yaml", {})
    text = str(raised.value) + " ".join(str(issue) for issue in raised.value.issues)
    assert message in text
    assert "m.yaml:" in text
