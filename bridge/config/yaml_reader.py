"""YAML read within bounds (bridge.config.limits), keeping ruamel's round-trip tree so every
problem can be shown at its line and column.

The composer refuses nesting deeper than MAX_YAML_DEPTH, aliases that would add more than
MAX_ALIAS_NODES nodes ("billion laughs": each level of nested aliases multiplies the size) and
an alias inside the node it names (`&r [1, *r]`), each at its line, before anything expands;
the scanner bounds flow nesting (`[[[[...`) where it is scanned.
"""

from __future__ import annotations

import warnings
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, ScalarEvent
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode
from ruamel.yaml.scanner import RoundTripScanner

from bridge.config.limits import MAX_ALIAS_NODES, MAX_YAML_DEPTH, has_surrogate
from bridge.errors import ConfigError, ConfigIssue


class _LimitExceededError(YAMLError):
    """A bound of bridge.config.limits, hit at `mark` (a ruamel Mark: 0-based line and column)."""

    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


class _BoundedScanner(RoundTripScanner):
    """Flow nesting (`[[[[...`) bounded where it is scanned: the scanner looks ahead over every
    open bracket before the composer sees the first, and its cost grows with their number."""

    def fetch_flow_collection_start(self, TokenClass: Any, to_push: str) -> None:  # noqa: N803 - ruamel's name
        if self.flow_level >= MAX_YAML_DEPTH:
            raise _LimitExceededError(f"nested deeper than {MAX_YAML_DEPTH} levels", self.reader.get_mark())
        super().fetch_flow_collection_start(TokenClass, to_push)


class _BoundedComposer(Composer):
    """ruamel's composer with bounds, checked on the node graph, where an alias is one node.

    Each composed node's expanded size (itself plus its children, aliases counted at the size
    of what they name) is kept, so the size after expansion is known without expanding it.
    """

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self.warn_double_anchors = False  # re-defining an anchor is legal YAML
        self._sizes: dict[int, int] = {}
        self._written = 0
        self._added = 0
        self._nesting = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:
                size = self._sizes.get(id(target))
                if size is None:  # still being composed: the alias is inside what it names
                    raise _LimitExceededError(
                        f"alias '*{event.anchor}' is inside the node it refers to (a recursive alias)",
                        event.start_mark,
                    )
                self._added += size
                if self._added > MAX_ALIAS_NODES:
                    raise _LimitExceededError(
                        f"aliases expand to more than {MAX_ALIAS_NODES} nodes (here '*{event.anchor}'); "
                        "write the repeated parts out, or use fewer nested aliases",
                        event.start_mark,
                    )
            return super().compose_node(parent, index)
        if self._nesting >= MAX_YAML_DEPTH:
            raise _LimitExceededError(f"nested deeper than {MAX_YAML_DEPTH} levels", event.start_mark)
        if isinstance(event, ScalarEvent) and has_surrogate(event.value):
            raise _LimitExceededError("a lone surrogate escape (such as \\ud800) is not UTF-8 text", event.start_mark)
        self._nesting += 1
        node = super().compose_node(parent, index)
        self._nesting -= 1
        self._written += 1
        size = 1 + sum(self._sizes.get(id(child), 1) for child in _children(node))
        self._sizes[id(node)] = min(size, MAX_ALIAS_NODES + self._written + 1)
        if size - self._written > MAX_ALIAS_NODES:
            raise _LimitExceededError(
                f"aliases expand this node to more than {MAX_ALIAS_NODES} nodes beyond those written",
                node.start_mark,
            )
        return node


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [child for pair in node.value for child in pair]
    return []


class _MarkedConstructor(RoundTripConstructor):
    """Python's own limits hit while building a value (an integer of 5,000 digits) at their line."""

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError, TypeError) as error:
            raise _LimitExceededError(f"cannot read this value: {error}", node.start_mark) from None


def parse_yaml(text: str, filename: str) -> Any:
    """The round-trip tree of `text`, within the bounds; any problem is a ConfigError at its line."""
    yaml = YAML(typ="rt")
    yaml.Scanner = _BoundedScanner
    yaml.Composer = _BoundedComposer
    yaml.Constructor = _MarkedConstructor
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ruamel warns on stderr about what it then reads anyway
            return yaml.load(text)
    except _LimitExceededError as error:
        line, column = (error.mark.line + 1, error.mark.column + 1) if error.mark is not None else (1, 1)
        raise ConfigError([ConfigIssue(filename, line, column, "", error.message)]) from None
    except RecursionError:  # unreachable within MAX_YAML_DEPTH; kept so that no input shows a traceback
        raise ConfigError([ConfigIssue(filename, 1, 1, "", "the YAML is nested too deeply")]) from None
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = error.problem or error.context or "invalid YAML"
        raise ConfigError([ConfigIssue(filename, line, column, "", f"YAML syntax error: {problem}")]) from None
    except YAMLError as error:
        raise ConfigError([ConfigIssue(filename, 1, 1, "", f"YAML error: {error}")]) from None
