"""How one route's pipeline is tuned, and the two stores it is handed.

Declared here, below every other module of the pipeline, so that the lanes, the sender, the
settler and the loop read the same settings without importing one another; the stores are
protocols so the pipeline depends only on the calls it makes (bridge.jetstream implements them).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

from bridge.mapping import CompiledRoute
from bridge.sources.base import Lane
from bridge.stored import Checkpoint, StoredIndex


@dataclass(slots=True)
class PipelineSettings:
    """Tuning of one route's pipeline; the defaults suit a shared 2-core machine."""

    batch_size: int = 500
    fetch_timeout: float = 0.1
    max_unsettled: int = 20_000
    settle_interval: float = 0.5
    drain_timeout: float = 10.0
    retry_backoff_initial: float = 0.1
    retry_backoff_max: float = 5.0
    max_in_flight_per_lane: int = 0  # 0: bounded only by the publisher's window
    # ordering: batched — a lane sends up to this many messages as one JetStream atomic batch,
    # one batch in flight at a time (0: off). Consecutive messages for one stream go together.
    atomic_batch: int = 0
    # The route asked for `ordering: batched` itself: a stream refusing atomic batches gets its
    # messages one at a time (order kept). False (the default ordering): the route goes pipelined.
    atomic_required: bool = True
    prepare_timeout: float = 30.0  # how long new lanes may wait for their checkpoints


class PayloadStore(Protocol):
    """Where a dead letter's payload goes when it is too large for a NATS message (an object store)."""

    async def put(self, name: str, payload: bytes) -> None: ...


class Checkpointer(Protocol):
    """Where a route remembers what it stored, to resume exactly beyond the duplicate window.

    Implemented in bridge.jetstream.checkpoints; declared here so the pipeline depends only
    on the two calls it makes.
    """

    async def stored(self, scope: str, lanes: Collection[Lane], route: CompiledRoute) -> StoredIndex:
        """What `route` already stored for these lanes (checkpointed, and found after the
        checkpoint: only its own messages, never another route's copies of the same positions)."""

    async def save(self, scope: str, checkpoints: Mapping[Lane, Checkpoint]) -> None:
        """Record each lane's watermark, after its PubAcks and before the source is settled."""
