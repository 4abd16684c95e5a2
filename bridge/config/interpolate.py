"""`${VAR}` and `${VAR:-default}` in mapping files, so no secret has to live in one.

Interpolation happens on the parsed YAML tree (scalar values only, never keys), after
parsing and before validation: a value that comes from the environment is therefore
never re-parsed as YAML, and an error can still name the line it was written on.
`$${` writes a literal `${`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{[^}]*\}?")


class MissingVariableError(ValueError):
    """A `${VAR}` names a variable that is not set and has no default."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"environment variable '{name}' is not set and has no default")


class BadReferenceError(ValueError):
    """A `${...}` that is not `${NAME}` or `${NAME:-default}`."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Replace every `${VAR}` / `${VAR:-default}` in `text` with its value from `env`."""
    if "$" not in text:
        return text

    def substitute(match: re.Match[str]) -> str:
        whole = match.group(0)
        if whole == "$${":
            return "${"
        name = match.group(1)
        if name is None:
            raise BadReferenceError(f"'{whole}' is not a valid reference; write ${{NAME}} or ${{NAME:-default}}")
        value = env.get(name)
        if value is not None and value != "":
            return value
        default = match.group(2)
        if default is not None:
            return default
        if value is not None:
            return value
        raise MissingVariableError(name)

    return _REFERENCE.sub(substitute, text)


def is_reference(text: str) -> bool:
    """True when `text` is entirely one `${VAR}` / `${VAR:-default}` reference."""
    match = _REFERENCE.fullmatch(text.strip())
    return match is not None and match.group(1) is not None
