"""The names the bridge gives on RabbitMQ: its own queue per shadow route."""

from __future__ import annotations


def shadow_queue_name(service: str, route: str) -> str:
    """The bridge's own queue for a shadow route — never a legacy consumer's queue."""
    return f"nats-bridge.{service}.{route}"
