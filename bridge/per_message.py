"""`@per_message`: the dataclass for values the bridge makes once per message or more.

A frozen dataclass sets each field in `__init__` through `object.__setattr__`, which makes it
2.5x as slow to build as a plain one (a 12-field TemplateContext: 2.6 µs against 0.9), and the
bridge builds six to eight of them per message (origin, source message, template context,
outbound message, verdict, PubAck...): about 5 µs of a Kafka message's 36. These classes are
frozen for the type checker (mypy strict refuses an assignment to a field, so the code never
mutates one) and plain slotted classes at run time, hashed and compared by their fields as a
frozen dataclass is (`unsafe_hash` gives the same `__hash__`). tests/unit/test_per_message.py
holds both halves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeVar, dataclass_transform, overload

_T = TypeVar("_T")


@overload
def per_message(cls: type[_T], /) -> type[_T]: ...


@overload
def per_message(*, kw_only: bool = False) -> Callable[[type[_T]], type[_T]]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def per_message(cls: type[_T] | None = None, /, *, kw_only: bool = False) -> type[_T] | Callable[[type[_T]], type[_T]]:
    """A slotted dataclass, frozen to mypy, unfrozen at run time (see the module's docstring)."""

    def wrap(klass: type[_T]) -> type[_T]:
        return dataclasses.dataclass(slots=True, unsafe_hash=True, kw_only=kw_only)(klass)

    return wrap if cls is None else wrap(cls)
