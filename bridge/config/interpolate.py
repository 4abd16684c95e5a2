"""`${VAR}`, `${VAR:-default}` and `${file:PATH}` in mapping files, so no secret has to live in one.

`${file:PATH}` is the file's content without its trailing line break (a Kubernetes or Docker
secret mounted as a file); a relative PATH is taken from the mapping file's directory.

Interpolation happens on the parsed YAML tree (scalar values only, never keys), after
parsing and before validation: a value that comes from the environment is therefore
never re-parsed as YAML, and an error can still name the line it was written on.
`$${` writes a literal `${`.

What is written in the file — literal text and the defaults of `${VAR:-default}` — is what
`as_written` and `url_secret` look at: a password in a URL or in a default is a secret in the
file just as much as `password: hunter2` is, while the value of a reference is not.
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


# Stands for the value of a reference in `as_written`: unknown, and not in the file.
REFERENCE_VALUE = "\x00"
_URL_USERINFO = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<userinfo>[^/?#@\s]*)@(?P<host>\[[^\]/]*\]|[^/?#:\s]*)"
)
_NATS_SCHEMES = frozenset({"nats", "tls", "ws", "wss"})  # nats://TOKEN@host is token authentication
_LOOPBACK = re.compile(r"^(localhost|127(\.\d{1,3}){3}|\[::1\])$", re.IGNORECASE)


def as_written(text: str) -> str:
    """`text` as the file holds it: each reference's value replaced by REFERENCE_VALUE, except
    that a `${VAR:-default}` stands for its default, which is written in the file."""
    if "$" not in text:
        return text

    def written(match: re.Match[str]) -> str:
        whole = match.group(0)
        if whole == "$${":
            return "${"
        if match.group(1) is not None:
            return REFERENCE_VALUE
        if match.group(2) is None:
            return whole
        default = match.group(3)
        return REFERENCE_VALUE if default is None else default

    return _REFERENCE.sub(written, text)


def reference_default(text: str) -> str | None:
    """The default of a `${VAR:-default}` that is all of `text`, or None (no default, or not a reference)."""
    match = _REFERENCE.fullmatch(text.strip())
    if match is None or match.group(2) is None:
        return None
    return match.group(3)


def url_secret(text: str) -> tuple[str, str] | None:
    """(what, scheme) when `text` as written holds a URL with a literal password — or, for the
    NATS schemes, a literal token as the URL's user — else None.

    `amqp://bridge:${AMQP_PASSWORD}@rabbit/` and `${AMQP_URL}` are references and pass;
    `amqp://bridge:hunter2@rabbit/` and `${AMQP_URL:-amqp://bridge:hunter2@rabbit/}` do not.
    The one exception is RabbitMQ's built-in `guest:guest` on a loopback host, the local test
    broker's account: RabbitMQ admits `guest` only from loopback, so it guards nothing.
    """
    written = as_written(text)
    if "@" not in written:
        return None
    for match in _URL_USERINFO.finditer(written):
        scheme = match.group("scheme").lower()
        user, colon, password = match.group("userinfo").partition(":")
        if colon:
            literal = password.replace(REFERENCE_VALUE, "")
            guest = user == "guest" and password == "guest" and _LOOPBACK.match(match.group("host")) is not None
            if literal and not guest:
                return "password", scheme
        elif scheme in _NATS_SCHEMES and user.replace(REFERENCE_VALUE, ""):
            return "token", scheme
    return None
