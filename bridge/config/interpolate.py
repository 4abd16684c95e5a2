"""`${VAR}`, `${VAR:-default}` and `${file:PATH}` in mapping files, so no secret has to live in one.

`${file:PATH}` is the file's content without its trailing line break (a Kubernetes or Docker
secret mounted as a file); a relative PATH is taken from the mapping file's directory.

Interpolation happens on the parsed YAML tree (scalar values only, never keys), after
parsing and before validation: a value that comes from the environment is therefore
never re-parsed as YAML, and an error can still name the line it was written on.
`$${` writes a literal `${`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

_REFERENCE = re.compile(r"\$\$\{|\$\{file:([^}]+)\}|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{[^}]*\}?")


class MissingVariableError(ValueError):
    """A `${VAR}` names a variable that is not set and has no default."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"environment variable '{name}' is not set and has no default")


class BadReferenceError(ValueError):
    """A `${...}` that is not `${NAME}` or `${NAME:-default}`."""


class SecretFileError(ValueError):
    """A `${file:PATH}` whose file cannot be read (the message names the path, never content)."""


# A secret file holds a password, a token or a key: kilobytes. The bound keeps `${file:/dev/zero}`
# (or a log file named by mistake) from being read into memory without end.
MAX_SECRET_FILE_BYTES = 64 * 1024


def read_secret_file(path: str, base: Path | None) -> str:
    file = Path(path).expanduser()
    if not file.is_absolute() and base is not None:
        file = base / file
    try:
        with file.open("rb") as stream:
            data = stream.read(MAX_SECRET_FILE_BYTES + 1)
        if len(data) > MAX_SECRET_FILE_BYTES:
            raise SecretFileError(f"secret file '{file}' is larger than {MAX_SECRET_FILE_BYTES} bytes")
        return data.decode("utf-8").rstrip("\r\n")
    except OSError as error:
        raise SecretFileError(f"cannot read secret file '{file}': {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise SecretFileError(f"secret file '{file}' is not UTF-8 text") from None


def interpolate(text: str, env: Mapping[str, str], base: Path | None = None) -> str:
    """Replace every `${VAR}` / `${VAR:-default}` / `${file:PATH}` in `text`."""
    if "$" not in text:
        return text

    def substitute(match: re.Match[str]) -> str:
        whole = match.group(0)
        if whole == "$${":
            return "${"
        if match.group(1) is not None:
            return read_secret_file(match.group(1).strip(), base)
        name = match.group(2)
        if name is None:
            raise BadReferenceError(
                f"'{whole}' is not a valid reference; write ${{NAME}}, ${{NAME:-default}} or ${{file:PATH}}"
            )
        value = env.get(name)
        if value is not None and value != "":
            return value
        default = match.group(3)
        if default is not None:
            return default
        if value is not None:
            return value
        raise MissingVariableError(name)

    return _REFERENCE.sub(substitute, text)


def is_reference(text: str) -> bool:
    """True when `text` is entirely one `${VAR}` / `${VAR:-default}` reference."""
    match = _REFERENCE.fullmatch(text.strip())
    return match is not None and (match.group(1) is not None or match.group(2) is not None)
