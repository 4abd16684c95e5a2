"""What the mapping file's streams hold right now: counts, sizes and the newest message.

Backs `nats-bridge streams FILE`, the quickest way to see the bridge's work land in
JetStream (and, with `--wait-for`, to wait until it has).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from bridge.brokers.nats.client import connect_nats
from bridge.config.model import BridgeConfig


@dataclass(frozen=True, slots=True)
class StreamState:
    name: str
    exists: bool
    messages: int = 0
    size: int = 0
    last_seq: int = 0
    last_subject: str = ""
    last_headers: dict[str, str] = field(default_factory=dict)
    last_payload: bytes = b""


async def stream_states(config: BridgeConfig, *, wait_for: int = 0, seconds: float = 30.0) -> list[StreamState]:
    """The state of every declared stream; with `wait_for`, first wait until they hold that many in all."""
    nc = await connect_nats(config.nats)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + seconds
        while True:
            states = []
            for stream in config.streams:
                try:
                    info = await js.stream_info(stream.name)
                except NotFoundError:
                    states.append(StreamState(stream.name, exists=False))
                    continue
                state = info.state
                last = await js.get_msg(stream.name, state.last_seq) if state.messages else None
                states.append(
                    StreamState(
                        stream.name,
                        True,
                        state.messages,
                        state.bytes,
                        state.last_seq,
                        (last.subject or "") if last else "",
                        dict(last.headers or {}) if last else {},
                        (last.data or b"") if last else b"",
                    )
                )
            if sum(s.messages for s in states) >= wait_for or time.monotonic() >= deadline:
                return states
            await asyncio.sleep(0.2)
    finally:
        with contextlib.suppress(NatsError):
            await nc.close()


def format_states(states: list[StreamState]) -> str:
    lines = [f"{'stream':<20} {'messages':>10} {'bytes':>12}  newest message"]
    for state in states:
        if not state.exists:
            lines.append(f"{state.name:<20} {'(not created yet)':>23}")
            continue
        lines.append(f"{state.name:<20} {state.messages:>10} {state.size:>12}  {state.last_subject}")
        for name, value in state.last_headers.items():
            lines.append(f"{'':<46}{name}: {value}")
        if state.last_payload:
            preview = state.last_payload[:120].decode("utf-8", "replace")
            lines.append(f"{'':<46}payload: {preview}")
    return "\n".join(lines) + "\n"
