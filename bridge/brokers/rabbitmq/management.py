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


async def consumer_prefetch(api_url: str, seconds: float = 15.0) -> dict[tuple[str, str], list[int]]:
    """Per (vhost, queue), the prefetch count of each consumer the management API lists now
    (`GET /api/consumers`): what `import rabbitmq --api` sizes a JetStream consumer's
    max_ack_pending from. Raises HttpLookError with a printable line (no password)."""
    base, auth = split_credentials(api_url.rstrip("/"))
    if not base.endswith("/api"):
        base += "/api"
    async with aiohttp.ClientSession() as session:
        listed = await get_json(
            session, f"{base}/consumers", auth, f"RabbitMQ management API at {redact_url(api_url)}", seconds
        )
    found: dict[tuple[str, str], list[int]] = {}
    for item in listed or []:
        queue = item.get("queue") if isinstance(item, Mapping) else None
        count = item.get("prefetch_count") if isinstance(item, Mapping) else None
        if isinstance(queue, Mapping) and isinstance(count, int) and not isinstance(count, bool):
            found.setdefault((str(queue.get("vhost", "/")), str(queue.get("name"))), []).append(count)
    return found
