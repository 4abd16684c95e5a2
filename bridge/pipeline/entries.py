"""One message of a lane, from the moment it is read until the source is settled past it.

`LaneEntry` is the publisher's `InFlight` with the pipeline's own bookkeeping added (settled,
dead letter, floor): one object per message carries both, and the publisher, which knows only
`InFlight`, hands the same object back to its lane. Nothing here is known to the publisher.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bridge.headers import RECOPIED_HEADER
from bridge.jetstream.publish_types import InFlight
from bridge.message import OutboundMessage

# The outbound message of an entry that is not to be sent: filtered, already stored, or one whose
# fate (dead letter or stop) is being decided. Compared by identity.
SKIPPED = OutboundMessage(subject="", payload=b"", msg_id="")


@dataclass(slots=True, eq=False)
class LaneEntry(InFlight):
    """A message read from a lane and not yet settled past, with what the pipeline knows of it."""

    settled: bool = False
    dead_letter: str = ""  # the reason, when this is a dead letter standing in for the message
    floor: int = 0  # the stream's highest known sequence when first sent: it is stored above it
    floor_stream: str = ""  # ... and that stream
    duplicate: bool = False  # the PubAck said it was stored already (by an earlier attempt or run)


def stored_by_this_run(entry: LaneEntry) -> bool:
    """Whether `entry`'s sequence tells about this run's order: stored now, or a duplicate of
    an earlier attempt of this run (sent above a known floor, stored above it). A duplicate on
    the first attempt was stored before (a restart, a redelivery): its old sequence says
    nothing about order now."""
    if not entry.duplicate:
        return True
    return entry.attempts > 1 and entry.floor > 0 and entry.seq > entry.floor and entry.stream != ""


def mark_recopied(outbound: OutboundMessage) -> OutboundMessage:
    """A record copied again after JetStream lost it says so (verify's order check then knows
    it is late on purpose)."""
    return dataclasses.replace(outbound, headers={**outbound.headers, RECOPIED_HEADER: "lost"})
