"""RabbitMQ's management API, read-only: what AMQP cannot tell (a queue's type and members, which
queues an exchange feeds). Used by the durability posture; `sources.<name>.management` says
where it is and with which login (else the AMQP URL's user)."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import aiohttp

from bridge.brokers.http import Login, get_json, split_credentials
from bridge.brokers.rabbitmq.client import amqp_url
from bridge.config.sources import RabbitMQSource
from bridge.logs import redact_url


def source_vhost(source: RabbitMQSource) -> str:
    path = urlsplit(amqp_url(source)).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def management_login(source: RabbitMQSource) -> tuple[str, Login | None, str]:
    """(API base URL without user info, the login, the URL as it may be shown)."""
    assert source.management is not None
    written = source.management.url.get_secret_value().rstrip("/")
    base, auth = split_credentials(written)
    if not base.endswith("/api"):
        base += "/api"
    management = source.management
    if management.username is not None or management.password is not None:
        password = management.password.get_secret_value() if management.password is not None else ""
        auth = Login(management.username or (auth.user if auth else "guest"), password)
    elif auth is None:
        parts = urlsplit(amqp_url(source))
        if parts.username is not None:
            auth = Login(unquote(parts.username), unquote(parts.password or ""))
    return base, auth, redact_url(written)


class ManagementApi:
    """`async with ManagementApi(source, timeout) as api:` one HTTP session for several reads in
    the source's vhost; each read raises HttpLookError with a printable line."""

    def __init__(self, source: RabbitMQSource, timeout: float) -> None:
        self._base, self._auth, shown = management_login(source)
        self._vhost = quote(source_vhost(source), safe="")
        self._what = f"RabbitMQ management API at {shown}"
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ManagementApi:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def _get(self, path: str) -> Any:
        assert self._session is not None, "use ManagementApi in `async with`"
        return await get_json(self._session, f"{self._base}{path}", self._auth, self._what, self._timeout)

    async def queues(self) -> dict[str, Mapping[str, Any]]:
        """The vhost's queues by name, with type, durability and members."""
        listed = await self._get(f"/queues/{self._vhost}?columns=name,type,durable,members,slave_nodes")
        return {str(q.get("name")): q for q in listed or [] if isinstance(q, Mapping)}

    async def exchange_bindings(self, exchange: str) -> list[Mapping[str, Any]]:
        """The bindings whose source is `exchange`."""
        found = await self._get(f"/exchanges/{self._vhost}/{quote(exchange, safe='')}/bindings/source")
        return [b for b in found or [] if isinstance(b, Mapping)]
