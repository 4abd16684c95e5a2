"""JSON over HTTP from a broker's monitoring side (RabbitMQ's management API, nats-server's
/varz), with the login in a header: a URL with user info is split first, so the password is
never in a text that quotes the URL. Every request is bounded; a failure is one printable line."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp


class HttpLookError(Exception):
    """A request that failed; the text is safe to print (no password)."""


@dataclass(frozen=True, slots=True)
class Login:
    """A user and password for HTTP basic authentication (aiohttp's BasicAuth is deprecated)."""

    user: str
    password: str = field(repr=False)

    def headers(self) -> dict[str, str]:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}


def split_credentials(url: str) -> tuple[str, Login | None]:
    """(the URL without user info, its user and password), so the password is sent in a header
    and never appears in an error text that quotes the URL."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return bare, Login(unquote(parts.username), unquote(parts.password or ""))


async def get_json(session: aiohttp.ClientSession, url: str, auth: Login | None, what: str, seconds: float) -> Any:
    """The JSON document at `url` (None for a 404); `what` names the endpoint in the error."""
    try:
        headers = auth.headers() if auth is not None else {}
        async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=seconds)) as response:
            if response.status == 404:
                return None
            if response.status in (401, 403):
                raise HttpLookError(f"{what}: HTTP {response.status} (the login was refused)")
            if response.status != 200:
                raise HttpLookError(f"{what}: HTTP {response.status}")
            return await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        raise HttpLookError(f"{what}: {str(error) or type(error).__name__}") from None
