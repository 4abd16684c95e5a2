"""Read a mapping file into a validated `BridgeConfig`, or explain every problem in it.

The loader keeps ruamel.yaml's round-trip tree beside the plain data given to pydantic so
that each validation error can be traced back to a line and column: a person fixing a
200-route file needs `orders.yaml:42:7`, not a pydantic location tuple.

Parsing is bounded (bridge.config.limits): the file is read up to its size limit, and the YAML
is read by bridge.config.yaml_reader, which refuses deep nesting and alias bombs at their line.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from bridge.config.base import LOCATE_REFERENCES_LATER
from bridge.config.interpolate import interpolate, is_reference, reference_default, url_secret
from bridge.config.limits import (
    MAX_MAPPING_FILE_BYTES,
    InputLimitError,
    read_bounded,
    size_limit,
)
from bridge.config.model import BridgeConfig
from bridge.config.yaml_reader import parse_yaml
from bridge.errors import ConfigError, ConfigIssue

log = logging.getLogger(__name__)

# Keys whose values are secrets: they must be `${VAR}` references, never literals.
SECRET_KEYS = frozenset({"password", "token", "sasl_password", "ssl_key_password"})
# Where a `${file:PATH}` may be read: secrets, and the connection settings that can hold one
# (a URL with a password, a user name mounted beside it). Anywhere else a file reference would
# let whoever writes the mapping copy a file of the host into every message or error.
FILE_REFERENCE_KEYS = SECRET_KEYS | frozenset(
    {"url", "servers", "bootstrap_servers", "username", "user", "sasl_username"}
)
# Files that hold a key or a credential: readable by group or others, they earn a warning (as
# ssh does); NATS_BRIDGE_ALLOW_READABLE_SECRETS=1 silences it.
PRIVATE_FILE_KEYS = frozenset({"credentials_file", "nkey_seed_file", "tls_key_file", "ssl_key_file"})
ALLOW_READABLE_SECRETS = "NATS_BRIDGE_ALLOW_READABLE_SECRETS"

Loc = tuple[int | str, ...]


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> BridgeConfig:
    """Load and validate the mapping file at `path`; raise ConfigError listing every issue."""
    filename = str(path)
    environment = os.environ if env is None else env
    try:
        limit = size_limit(MAX_MAPPING_FILE_BYTES, environment)
        with Path(path).open("rb") as stream:
            text = read_bounded(stream, limit, "the file").decode("utf-8")
    except InputLimitError as error:
        raise ConfigError([ConfigIssue(filename, 1, 1, "", str(error))]) from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError([ConfigIssue(filename, 1, 1, "", f"cannot read the file: {reason}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigIssue(filename, 1, 1, "", "the file is not UTF-8 text")]) from None
    return load_config_text(text, filename, environment)


def load_config_text(text: str, filename: str, env: Mapping[str, str]) -> BridgeConfig:
    """Validate mapping-file `text`; `filename` is only used in error messages."""
    tree = parse_yaml(text, filename)
    if not isinstance(tree, CommentedMap):
        raise ConfigError([ConfigIssue(filename, 1, 1, "", "the file must be a mapping of keys to values")])
    reader = _TreeReader(tree, filename, env)
    data = reader.resolve(tree, ())
    issues = reader.issues
    try:
        config = BridgeConfig.model_validate(data, context={LOCATE_REFERENCES_LATER: True})
    except ValidationError as error:
        issues.extend(_issue_from_error(detail, tree, filename) for detail in error.errors())
        raise ConfigError(_sorted_unique([reader.as_written(issue) for issue in issues])) from None
    for loc, message in config.reference_problems():
        line, column = _position(tree, loc)
        issues.append(ConfigIssue(filename, line, column, _path(loc), message))
    if issues:
        raise ConfigError(_sorted_unique([reader.as_written(issue) for issue in issues]))
    if not env.get(ALLOW_READABLE_SECRETS):
        for where, path in reader.private_files:
            _warn_if_readable(where, path)
    return config


def _warn_if_readable(where: str, path: str) -> None:
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return  # a missing file is the connection's error to report, with its context
    if mode & 0o077:
        log.warning(
            "%s: '%s' can be read by group or others (mode %o): chmod 600 it (or set %s=1 where that is intended)",
            where,
            path,
            mode & 0o777,
            ALLOW_READABLE_SECRETS,
        )


class _TreeReader:
    """Turns the YAML tree into plain data, interpolating and collecting issues as it goes."""

    def __init__(self, tree: CommentedMap, filename: str, env: Mapping[str, str]) -> None:
        self.tree = tree
        self.filename = filename
        self.env = env
        # `${file:PATH}` relative paths are taken from the mapping file's directory.
        self.base = Path(filename).resolve().parent if filename and Path(filename).exists() else None
        self.issues: list[ConfigIssue] = []
        self.expanded: dict[str, str] = {}  # interpolated value -> the reference as written
        self.private_files: list[tuple[str, str]] = []  # (key path, file) of keys and credentials

    def as_written(self, issue: ConfigIssue) -> ConfigIssue:
        """`issue` with every value that came from a reference shown as the reference: an error
        about `${HOME}` must not print the home directory, nor one about a file its content."""
        message = issue.message
        for value, written in self.expanded.items():
            for quote in ("'", '"'):
                message = message.replace(f"{quote}{value}{quote}", f"{quote}{written}{quote}")
        return dataclasses.replace(issue, message=message) if message != issue.message else issue

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
        instead = f"e.g. {key}: ${{{key.upper()}}} or {key}: ${{file:/run/secrets/{key}}}"
        if key in SECRET_KEYS and not is_reference(text):
            self._add(loc, "a secret must not be written in the file", f"write a reference instead, {instead}")
        elif key in SECRET_KEYS and reference_default(text):
            self._add(
                loc,
                "a secret must not be written in the file, not even as the default of ${VAR:-default}",
                f"drop the default, {instead}",
            )
        secret = url_secret(text)
        if secret is not None:
            self._add(loc, *_url_secret_problem(*secret))
        field = next((str(segment) for segment in reversed(loc) if isinstance(segment, str)), "")
        if "${file:" in text and field not in FILE_REFERENCE_KEYS and not field.endswith("_file"):
            self._add(
                loc,
                "a ${file:PATH} reference is read only into a secret or a connection setting "
                f"({', '.join(sorted(FILE_REFERENCE_KEYS))} or a *_file path)",
                "write the value itself here, or ${VAR} for one that changes per environment",
            )
            return text
        try:
            value = interpolate(text, self.env, self.base)
        except ValueError as error:
            self._add(loc, str(error))
            return text
        if value != text and value:
            self.expanded[value] = text
        if key in PRIVATE_FILE_KEYS and value:
            self.private_files.append((_path(loc), str(self.base / value) if self.base else value))
        if key.endswith("_file") and value and self.base is not None and not Path(value).expanduser().is_absolute():
            # Certificates, keys, seeds and .creds named relative to the mapping file, as
            # `${file:PATH}` references are: the file works from any working directory.
            return str(self.base / value)
        return value

    def _add(self, loc: Loc, message: str, hint: str = "") -> None:
        line, column = _position(self.tree, loc)
        self.issues.append(ConfigIssue(self.filename, line, column, _path(loc), message, hint))


def _url_secret_problem(what: str, scheme: str) -> tuple[str, str]:
    """The message and the fix for a password (or NATS token) written in a URL."""
    nats = scheme in ("nats", "tls", "ws", "wss")
    name = "NATS" if nats else "AMQP" if scheme.startswith("amqp") else "BROKER"
    whole = f"or the whole URL as ${{{name}_URL}}"
    if what == "token":
        return (
            f"a token must not be written in a URL ({scheme}://...) in the file",
            f"write token: ${{{name}_TOKEN}} beside a URL without it, {whole}",
        )
    fields = "user" if nats else "username"
    return (
        f"a password must not be written in a URL ({scheme}://...) in the file, nor in a ${{VAR:-default}} default",
        f"take it from the environment: {scheme}://USER:${{{name}_PASSWORD}}@HOST/, {whole}, "
        f"or {fields} and password: ${{{name}_PASSWORD}} beside a URL without it",
    )


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
