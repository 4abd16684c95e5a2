"""bridge.routing is used through its package: everything public is exported there."""

from __future__ import annotations

import bridge.routing


def test_every_exported_name_exists_and_is_listed_once() -> None:
    exported = bridge.routing.__all__
    assert len(exported) == len(set(exported))
    for name in exported:
        assert hasattr(bridge.routing, name), name
