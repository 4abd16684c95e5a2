"""`@per_message` classes: frozen to mypy, fast plain dataclasses at run time (bridge/per_message.py).

Both halves are checked: mypy refuses an assignment to a field (so no code of the bridge can
mutate one), and at run time they compare, hash and `replace` as the frozen dataclasses they
stand in for did.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from mypy import api as mypy_api

from bridge.decide import Verdict
from bridge.jetstream.pubacks import Stored
from bridge.message import AmqpOrigin, KafkaOrigin, OutboundMessage, SourceMessage
from bridge.per_message import per_message
from bridge.routing.templates import TemplateContext
from bridge.sources.base import Received

ROOT = Path(__file__).resolve().parents[2]
HOT_CLASSES = [TemplateContext, KafkaOrigin, AmqpOrigin, SourceMessage, OutboundMessage, Verdict, Received, Stored]


@pytest.mark.parametrize("cls", HOT_CLASSES, ids=lambda cls: cls.__name__)
def test_each_hot_value_is_a_slotted_dataclass_hashed_by_its_fields(cls: type) -> None:
    assert dataclasses.is_dataclass(cls)
    assert "__slots__" in vars(cls)
    assert cls.__hash__ is not None
    assert cls.__hash__ is not object.__hash__


def test_equal_values_are_equal_and_hash_alike_as_a_frozen_dataclass_did() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Frozen:
        topic: str
        partition: int
        offset: int
        key: bytes | None = None
        timestamp_ms: int | None = None

    a, b = KafkaOrigin("t", 1, 5, b"k"), KafkaOrigin("t", 1, 5, b"k")
    assert a == b
    assert a is not b
    assert hash(a) == hash(b) == hash(Frozen("t", 1, 5, b"k"))
    assert a != KafkaOrigin("t", 1, 6, b"k")
    assert {a: 1}[b] == 1
    assert dataclasses.replace(a, offset=6) == KafkaOrigin("t", 1, 6, b"k")
    assert not hasattr(a, "__dict__")


def test_keyword_only_stays_keyword_only_at_run_time() -> None:
    with pytest.raises(TypeError):
        TemplateContext("orders")  # type: ignore[misc]
    assert TemplateContext(topic="orders").topic == "orders"


def test_a_decorated_class_without_arguments_and_with_them() -> None:
    @per_message
    class Plain:
        a: int

    @per_message(kw_only=True)
    class Keyword:
        a: int

    assert Plain(1) == Plain(1)
    assert Keyword(a=1) == Keyword(a=1)


def test_mypy_refuses_an_assignment_to_a_field(tmp_path: Path) -> None:
    snippet = tmp_path / "mutate.py"
    snippet.write_text(
        "from bridge.message import KafkaOrigin\n"
        "from bridge.routing.templates import TemplateContext\n"
        'origin = KafkaOrigin("t", 1, 2)\n'
        "origin.offset = 3\n"
        'context = TemplateContext(topic="x")\n'
        'context.topic = "y"\n'
    )
    env_path = os.environ.get("MYPYPATH")
    os.environ["MYPYPATH"] = str(ROOT)
    try:
        out, _, status = mypy_api.run(
            ["--strict", "--no-incremental", "--follow-imports=silent", "--cache-dir=/dev/null", str(snippet)]
        )
    finally:
        if env_path is None:
            os.environ.pop("MYPYPATH", None)
        else:
            os.environ["MYPYPATH"] = env_path
    assert status == 1, out
    assert f'{snippet}:4: error: Property "offset" defined in "KafkaOrigin" is read-only' in out, out
    assert f'{snippet}:6: error: Property "topic" defined in "TemplateContext" is read-only' in out, out
