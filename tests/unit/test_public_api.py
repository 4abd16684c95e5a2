"""The embedding API of `bridge/__init__.py` stays importable, and stays what it says it is."""

from __future__ import annotations

import subprocess
import sys

import pytest

import bridge

MAPPING = """
version: 1
nats: {servers: ["nats://127.0.0.1:4222"]}
streams: [{name: ORDERS, subjects: ["orders.>"]}]
sources:
  kafka: {type: kafka, bootstrap_servers: ["127.0.0.1:9092"]}
services:
  shop:
    routes:
      - {name: orders, source: kafka, from: {topics: [orders]}, to: "orders.{partition}"}
"""


@pytest.mark.parametrize("name", bridge.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(bridge, name) is not None
    assert name in dir(bridge)


def test_public_names_are_the_packages_own_objects() -> None:
    from bridge.config.loader import load_config
    from bridge.explain import explain_kafka
    from bridge.process import run_bridge
    from bridge.runner import Bridge

    assert bridge.load_config is load_config
    assert bridge.explain_kafka is explain_kafka
    assert bridge.Bridge is Bridge
    assert bridge.run_bridge is run_bridge


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'RoutePipeline'"):
        _ = bridge.RoutePipeline  # type: ignore[attr-defined]


def test_a_program_loads_a_mapping_and_explains_a_record(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "mapping.yaml"
    path.write_text(MAPPING)
    config = bridge.load_config(path)
    explanation = bridge.explain_kafka(config, topic="orders", key=b"k1", partition=2, offset=7)
    document = explanation.as_json()
    [match] = document["matches"]
    assert match["subject"] == "orders.2"
    assert match["streams"] == ["ORDERS"]
    assert match["fate"] == "publish"
    assert match["msg_id"] == "shop/orders/orders/2/7"


def test_bad_mapping_is_a_bridge_error(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "broken.yaml"
    path.write_text("version: 1\nstreams: [}\n")
    with pytest.raises(bridge.BridgeError, match=r"broken\.yaml"):
        bridge.load_config(path)


def test_importing_the_package_loads_no_broker_client() -> None:
    """`import bridge` is cheap: broker clients load with the names that need them."""
    code = "import sys, bridge; print(sorted(m for m in ('aiokafka', 'aio_pika', 'nats') if m in sys.modules))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"
