"""Read a mapping file into a validated `BridgeConfig`, or explain every problem in it.

The loader keeps ruamel.yaml's round-trip tree beside the plain data given to pydantic so
that each validation error can be traced back to a line and column: a person fixing a
200-route file needs `orders.yaml:42:7`, not a pydantic location tuple.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from bridge.config.interpolate import interpolate, is_reference
from bridge.config.model import LOCATE_REFERENCES_LATER, BridgeConfig
from bridge.errors import ConfigError, ConfigIssue

# Keys whose values are secrets: they must be `${VAR}` references, never literals.
SECRET_KEYS = frozenset({"password", "token", "sasl_password", "ssl_key_password"})

Loc = tuple[int | str, ...]


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> BridgeConfig:
    """Load and validate the mapping file at `path`; raise ConfigError listing every issue."""
    filename = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([ConfigIssue(filename, 1, 1, "", f"cannot read the file: {error.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigIssue(filename, 1, 1, "", "the file is not UTF-8 text")]) from None
    return load_config_text(text, filename, os.environ if env is None else env)


def load_config_text(text: str, filename: str, env: Mapping[str, str]) -> BridgeConfig:
    """Validate mapping-file `text`; `filename` is only used in error messages."""
    tree = _parse_yaml(text, filename)
    if not isinstance(tree, CommentedMap):
        raise ConfigError([ConfigIssue(filename, 1, 1, "", "the file must be a mapping of keys to values")])
    reader = _TreeReader(tree, filename, env)
    data = reader.resolve(tree, ())
    issues = reader.issues
    try:
        config = BridgeConfig.model_validate(data, context={LOCATE_REFERENCES_LATER: True})
    except ValidationError as error:
        issues.extend(_issue_from_error(detail, tree, filename) for detail in error.errors())
        raise ConfigError(_sorted_unique(issues)) from None
    for loc, message in config.reference_problems():
        line, column = _position(tree, loc)
        issues.append(ConfigIssue(filename, line, column, _path(loc), message))
    if issues:
        raise ConfigError(_sorted_unique(issues))
    return config


def _parse_yaml(text: str, filename: str) -> Any:
    yaml = YAML(typ="rt")
    try:
        return yaml.load(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = error.problem or error.context or "invalid YAML"
        raise ConfigError([ConfigIssue(filename, line, column, "", f"YAML syntax error: {problem}")]) from None
    except YAMLError as error:
        raise ConfigError([ConfigIssue(filename, 1, 1, "", f"YAML error: {error}")]) from None


class _TreeReader:
    """Turns the YAML tree into plain data, interpolating and collecting issues as it goes."""

    def __init__(self, tree: CommentedMap, filename: str, env: Mapping[str, str]) -> None:
        self.tree = tree
        self.filename = filename
        self.env = env
        # `${file:PATH}` relative paths are taken from the mapping file's directory.
        self.base = Path(filename).resolve().parent if filename and Path(filename).exists() else None
        self.issues: list[ConfigIssue] = []

    def resolve(self, node: Any, loc: Loc) -> Any:
        if isinstance(node, dict):
            return {str(key): self.resolve(value, (*loc, str(key))) for key, value in node.items()}
        if isinstance(node, list):
            return [self.resolve(value, (*loc, index)) for index, value in enumerate(node)]
        if isinstance(node, str):
            return self._scalar(str(node), loc)
        if isinstance(node, bool) or node is None:
            return node
        if isinstance(node, int):
            return int(node)
        if isinstance(node, float):
            return float(node)
        return node

    def _scalar(self, text: str, loc: Loc) -> str:
        key = str(loc[-1]) if loc else ""
        if key in SECRET_KEYS and not is_reference(text):
            self._add(
                loc,
                "a secret must not be written in the file",
                f"write a reference instead, e.g. {key}: ${{{key.upper()}}} or {key}: ${{file:/run/secrets/{key}}}",
            )
        try:
            value = interpolate(text, self.env, self.base)
        except ValueError as error:
            self._add(loc, str(error))
            return text
        if key.endswith("_file") and value and self.base is not None and not Path(value).expanduser().is_absolute():
            # Certificates, keys, seeds and .creds named relative to the mapping file, as
            # `${file:PATH}` references are: the file works from any working directory.
            return str(self.base / value)
        return value

    def _add(self, loc: Loc, message: str, hint: str = "") -> None:
        line, column = _position(self.tree, loc)
        self.issues.append(ConfigIssue(self.filename, line, column, _path(loc), message, hint))


def _position(tree: Any, loc: Loc) -> tuple[int, int]:
    """1-based line and column of the node at `loc`, or of its nearest existing parent."""
    line, column = 1, 1
    node = tree
    for index, segment in enumerate(loc):
        last = index == len(loc) - 1
        if isinstance(node, CommentedMap) and segment in node:
            key_line, key_column = node.lc.key(segment)
            value_line, value_column = node.lc.value(segment)
            line, column = (key_line + 1, key_column + 1) if last else (value_line + 1, value_column + 1)
            node = node[segment]
        elif isinstance(node, CommentedSeq) and isinstance(segment, int) and 0 <= segment < len(node):
            item_line, item_column = node.lc.item(segment)
            line, column = item_line + 1, item_column + 1
            node = node[segment]
        elif isinstance(node, CommentedMap | CommentedSeq) and index == 0 and line == 1:
            line, column = node.lc.line + 1, node.lc.col + 1
    return line, column


def _existing(tree: Any, loc: Loc) -> Iterator[int | str]:
    """The segments of `loc` that name real places in the YAML tree (tags dropped)."""
    node = tree
    for index, segment in enumerate(loc):
        in_map = isinstance(node, dict) and segment in node
        in_list = isinstance(node, list) and isinstance(segment, int) and 0 <= segment < len(node)
        if in_map or in_list:
            node = node[segment]
            yield segment
        elif index == len(loc) - 1 and isinstance(segment, str) and not segment.startswith("function-"):
            yield segment  # a missing key is still worth naming


def _path(loc: Loc) -> str:
    text = ""
    for segment in loc:
        text += f"[{segment}]" if isinstance(segment, int) else (f".{segment}" if text else str(segment))
    return text


def _issue_from_error(detail: ErrorDetails, tree: Any, filename: str) -> ConfigIssue:
    raw_loc: Loc = tuple(detail["loc"])
    is_key_error = bool(raw_loc) and raw_loc[-1] == "[key]"
    if is_key_error:
        raw_loc = raw_loc[:-1]
    loc = tuple(_existing(tree, raw_loc))
    kind = detail["type"]
    message = detail["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    hint = ""
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        message = f"unknown key '{key}'"
        known = _known_keys(raw_loc[:-1])
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        if close:
            hint = f"did you mean '{close[0]}'?"
        elif known:
            hint = "expected one of: " + ", ".join(sorted(known))
    elif kind == "missing":
        message = f"missing required key '{raw_loc[-1]}'" if raw_loc else "missing required key"
        loc = loc[:-1] if loc and loc[-1] == raw_loc[-1] else loc
    line, column = _position(tree, loc)
    if kind == "missing" and raw_loc:
        loc = (*loc, raw_loc[-1])
    return ConfigIssue(filename, line, column, _path(loc), message, hint)


def _known_keys(loc: Loc) -> list[str]:
    """The keys the model accepts at `loc`, for 'did you mean' hints."""
    model = _model_at(BridgeConfig, loc)
    if model is None:
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


def _model_at(annotation: Any, loc: Loc) -> type[BaseModel] | None:
    candidates = _unwrap(annotation)
    for segment in loc:
        next_candidates: list[Any] = []
        for candidate in candidates:
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                for name, field in candidate.model_fields.items():
                    if segment in (name, field.alias):
                        next_candidates.extend(_unwrap(field.annotation))
            elif isinstance(candidate, tuple) and candidate[0] == "tagged":
                _, tag, inner = candidate
                if segment == tag:
                    next_candidates.extend(_unwrap(inner))
            elif isinstance(candidate, tuple) and candidate[0] == "container":
                next_candidates.extend(_unwrap(candidate[1]))
        if next_candidates:
            candidates = next_candidates
        # else: a segment the models do not name (e.g. a function-after tag); stay put.
    models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
    return models[0] if len(models) == 1 else None


def _unwrap(annotation: Any) -> list[Any]:
    """Flatten Optional / Union / Annotated / list / dict into what the next key selects."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        inner, *metadata = typing.get_args(annotation)
        tags = [getattr(meta, "tag", None) for meta in metadata if type(meta).__name__ == "Tag"]
        if tags and isinstance(tags[0], str):
            return [("tagged", tags[0], inner)]
        return _unwrap(inner)
    if origin in (typing.Union, types.UnionType):
        return [item for arg in typing.get_args(annotation) for item in _unwrap(arg)]
    if origin in (list, dict):
        return [("container", typing.get_args(annotation)[-1])]
    return [annotation]


def _sorted_unique(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    return sorted(set(issues), key=lambda issue: (issue.line, issue.column, issue.path, issue.message))
