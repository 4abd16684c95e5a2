"""A mapping file compiled: the one boundary between what the user wrote and what runs.

The model (`bridge.config`) is what the file says, validated; a `Plan` is what the bridge does
with it: every route compiled once (templates parsed, the source's Msg-Id qualifier applied,
see `CompiledRoute.of`), beside the streams that store them. The runner, explain, dry-run and
verify all start from `compile_plan(config)`, so a route is prepared one way for all of them,
and a command that handles many messages (a dry-run replay, a sample) compiles its routes once
rather than per message.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from bridge.config.model import BridgeConfig
from bridge.config.streams import StreamConfig
from bridge.errors import BridgeError
from bridge.mapping import CompiledRoute


@dataclass(frozen=True, slots=True)
class Plan:
    """Every route of a mapping file compiled, in file order, and the streams they store into."""

    config: BridgeConfig
    routes: tuple[CompiledRoute, ...]

    @property
    def streams(self) -> tuple[StreamConfig, ...]:
        return tuple(self.config.streams)

    def __iter__(self) -> Iterator[CompiledRoute]:
        return iter(self.routes)

    def route(self, key: str) -> CompiledRoute:
        """The route named `service/route`; KeyError for an unknown one."""
        for route in self.routes:
            if route.key == key:
                return route
        raise KeyError(key)

    def of_service(self, service: str | None) -> tuple[CompiledRoute, ...]:
        """The routes of `service` (every route when None); BridgeError for an unknown service."""
        if service is None:
            return self.routes
        if service not in self.config.services:
            known = ", ".join(sorted(self.config.services)) or "none"
            raise BridgeError(f"no service '{service}' in the mapping file (services: {known})")
        return tuple(route for route in self.routes if route.service == service)


def compile_plan(config: BridgeConfig | Plan) -> Plan:
    """`config` compiled; a Plan is returned as it is, so callers may hand either."""
    if isinstance(config, Plan):
        return config
    return Plan(config, tuple(CompiledRoute.of(config, service, route) for service, route in config.routes()))
