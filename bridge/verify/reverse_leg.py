"""The reverse leg beside the forward parity: per reverse route how far it wrote to the legacy
broker and what waits, and legacy queues it still fills for consumers that moved to JetStream.

A reverse route acks a JetStream message only after the legacy broker confirmed it (reverse/
route.py), so its durable's acknowledged sequence is what was written; what lies above it is
not written yet. That is reported, not judged: the exit code stays the forward leg's.
"""

from __future__ import annotations

from nats.js import JetStreamContext

from bridge.config.model import BridgeConfig
from bridge.cutover.reverse_status import reverse_legs, unread_copies
from bridge.cutover.store import PhaseStore
from bridge.jetstream.consumer_state import consumer_places


async def reverse_lines(js: JetStreamContext, config: BridgeConfig, service: str | None) -> list[str]:
    """One line per reverse route of `service` (every service when None), then the notes."""
    lines: list[str] = []
    store = PhaseStore(js, create=False)
    for name in [service] if service is not None else list(config.services):
        if not config.services[name].reverse:
            continue
        record, _ = await store.get(name)
        legs = await reverse_legs(js, config, name, record.phase)
        for leg in legs:
            look = leg.look
            state = "runs" if leg.runs else f"stopped (phase {record.phase}, switch {leg.switch})"
            if not look.exists:
                lines.append(f"reverse {leg.route}: {state}; no durable {leg.durable}: nothing written or waiting")
                continue
            lines.append(
                f"reverse {leg.route}: {state}; written to the legacy broker through stream sequence "
                f"{look.acked_through}, {look.pending} not yet written, {look.ack_pending} in flight"
            )
        lines += await unread_copies(config, name, await consumer_places(js, config, name), legs)
    return lines
