"""Reading JetStream: every stream some route needs, scanned once, each message handed to
the routes that claim it; then the dead-letter stream.

A scan delivers a stream in sequence order, one stream after another, and names the stream to
the routes it hands messages to: that is what lets them tally order (claims)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from bridge.config.model import BridgeConfig
from bridge.errors import ScanError
from bridge.headers import RECOPIED_HEADER
from bridge.verify.claims import RouteCheck
from bridge.verify.limits import FETCH_TIMEOUT, SCAN_BATCH


@dataclass(frozen=True, slots=True)
class StreamScan:
    """What a scan saw: the stream's sequences at its start, and how many messages it read."""

    first_seq: int
    last_seq: int
    scanned: int


async def scan_stream(
    js: JetStreamContext, stream: str, handle: Callable[[str, Mapping[str, str]], None]
) -> StreamScan:
    """Call `handle(subject, headers)` for every message of `stream` up to its last sequence now.

    An ephemeral, in-memory, headers-only consumer without acks (it changes nothing and
    vanishes on its own if this process dies). Each fetch asks for no more than remain
    (`num_pending`): a pull waits its whole timeout for a batch it cannot fill. Raises
    NotFoundError when the stream does not exist, ScanError when it stops delivering.
    """
    info = await js.stream_info(stream)
    state = info.state
    if state.messages == 0:
        return StreamScan(state.first_seq, state.last_seq, 0)
    last = state.last_seq
    config = js_api.ConsumerConfig(
        deliver_policy=js_api.DeliverPolicy.ALL,
        ack_policy=js_api.AckPolicy.NONE,
        headers_only=True,
        mem_storage=True,
        inactive_threshold=60.0,
    )
    consumer = await js.add_consumer(stream, config)
    subscription = await js.pull_subscribe_bind(durable=consumer.name, stream=stream)
    scanned = 0
    seen = 0
    pending = state.messages
    try:
        while pending > 0:
            try:
                messages = await subscription.fetch(min(SCAN_BATCH, pending), timeout=FETCH_TIMEOUT)
            except TimeoutError:
                # Only a removal of the rest of the range (limits, deletes) may end it early.
                now = (await js.stream_info(stream)).state
                if now.messages == 0 or now.first_seq > last or now.last_seq <= seen:
                    break
                raise ScanError(f"stream {stream} stopped delivering after sequence {seen} of {last}") from None
            for message in messages:
                metadata = message.metadata
                seen = metadata.sequence.stream
                if seen > last:
                    pending = 0
                    break
                scanned += 1
                handle(message.subject, message.headers or {})
                pending = 0 if seen >= last else metadata.num_pending
    finally:
        with contextlib.suppress(NatsError, TimeoutError):
            await subscription.unsubscribe()
        with contextlib.suppress(NatsError, TimeoutError):
            await js.delete_consumer(stream, consumer.name)
    return StreamScan(state.first_seq, last, scanned)


def dispatcher(
    checks: Sequence[RouteCheck], *, dead: bool, stream: str = ""
) -> Callable[[str, Mapping[str, str]], None]:
    """A scan handler giving each message to every route that claims it; `stream` is the one
    scanned, in sequence order (each stream's order is checked on its own)."""

    def handle(subject: str, headers: Mapping[str, str]) -> None:
        for check in checks:
            claimed = check.claim_dead_letter(subject, headers) if dead else check.claim(subject, headers)
            if claimed is not None:
                check.count(claimed, dead=dead, stream=stream, late=RECOPIED_HEADER in headers)

    return handle


async def scan_all(js: JetStreamContext, config: BridgeConfig, checks: Sequence[RouteCheck]) -> dict[str, StreamScan]:
    """Every stream some route needs, each scanned once; then the dead-letter stream."""
    scans: dict[str, StreamScan] = {}
    names = sorted({name for check in checks if check.error is None for name in check.streams})
    for name in names:
        users = [check for check in checks if check.error is None and name in check.streams]
        try:
            scans[name] = await scan_stream(js, name, dispatcher(users, dead=False, stream=name))
        except NotFoundError:
            for check in users:
                check.error = f"stream {name} does not exist on the server"
        except (ScanError, NatsError, TimeoutError) as error:
            for check in users:
                check.error = f"stream {name} could not be read: {str(error) or type(error).__name__}"
    users = [check for check in checks if check.error is None]
    if users:
        try:
            await scan_stream(
                js, config.dead_letters.stream, dispatcher(users, dead=True, stream=config.dead_letters.stream)
            )
        except NotFoundError:
            pass  # no dead-letter stream: nothing was ever dead-lettered
        except (ScanError, NatsError, TimeoutError) as error:
            for check in users:
                check.error = (
                    f"dead-letter stream {config.dead_letters.stream} could not be read: "
                    f"{str(error) or type(error).__name__}"
                )
    return scans


def stream_notes(checks: Sequence[RouteCheck], scans: Mapping[str, StreamScan]) -> None:
    """A note on each positional route one of whose streams no longer starts at sequence 1."""
    for check in checks:
        for name in check.streams:
            scan = scans.get(name)
            if scan is not None and scan.first_seq > 1 and check.kind != "rabbitmq-queue":
                check.notes.append(
                    f"stream {name} starts at sequence {scan.first_seq}: what its limits or deletions removed "
                    "shows as missing."
                )
