"""Checkpoints in NATS KV, so a restart long after a crash stores nothing twice.

JetStream's de-duplication only remembers Nats-Msg-Ids for the stream's duplicate_window.
Kafka's committed offset lags what is stored (commits follow PubAcks), so a bridge that
restarts later than the window would re-read and store again whatever it had stored but
not yet committed. So, before each settle, the pipeline writes each lane's watermark and
the stream sequence of its last stored message to a KV bucket. On (re)assignment of a
lane, the bridge reads that checkpoint and scans the stream's tail after it (headers
only) for the lane's messages. Everything at or below the checkpoint, and every position
found in the scan, is known stored and is skipped when read again.

The scan starts a publisher window before the checkpoint's sequence: a message of the lane
stored out of order (see bridge.pipeline) can sit at most that far behind it.

Several routes may store the same positions into one stream (two services reading one topic
through their own groups): a scan counts only the route's own messages, named by their
`Bridge-Route` header (dead letters: `Bridge-Dlq-Route`). Messages stored by a bridge older
than that header carry neither; they count for a route whose subjects they fit, as they did
then, so an upgrade stores nothing twice.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Collection, Mapping

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NoKeysError, NotFoundError
from nats.js.kv import KeyValue

from bridge.deadletters import ROUTE_HEADER as DEAD_LETTER_ROUTE_HEADER
from bridge.mapping import ROUTE_NAME_HEADER, CompiledRoute
from bridge.route_shapes import SubjectFit
from bridge.sources.base import Lane, lane_label
from bridge.stored import Checkpoint, StoredIndex

log = logging.getLogger(__name__)

BUCKET = "nats_bridge_checkpoints"
SCAN_BATCH = 1000


def checkpoint_key(scope: str, lane: Lane) -> str:
    """KV key of a lane's checkpoint; KV keys allow few characters, so both parts are base64url."""
    return f"{_b64(scope)}.{_b64(lane_label(lane))}"


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def lane_position_from_headers(headers: Mapping[str, str] | None) -> tuple[Lane, int] | None:
    """(lane, position) of a stored message, read back from the bridge's own headers.

    Only sources with stable positions have them: Kafka (topic, partition) and offset, and
    RabbitMQ stream queues (queue name) and stream offset.
    """
    if not headers:
        return None
    try:
        topic = headers.get("Kafka-Topic")
        if topic is not None:
            return (topic, int(headers["Kafka-Partition"])), int(headers["Kafka-Offset"])
        queue = headers.get("Amqp-Queue")
        offset = headers.get("Amqp-Stream-Offset")
        if queue is not None and offset is not None:
            return queue, int(offset)
    except (KeyError, ValueError):
        return None
    return None


class RouteClaim:
    """Whether a stored message is one a given route stored."""

    def __init__(self, route: CompiledRoute) -> None:
        self.key = route.key
        self._fits = SubjectFit.for_route(route.service, route.config)

    def __call__(self, subject: str, headers: Mapping[str, str]) -> bool:
        named = headers.get(ROUTE_NAME_HEADER) or headers.get(DEAD_LETTER_ROUTE_HEADER)
        if named is not None:
            return named == self.key
        return self._fits(subject)  # stored before messages named their route


def _resume_summary(lane: Lane, checkpoint: Checkpoint, found: set[int] | None) -> str:
    """One lane's resume point for the log: what an operator (or a failing test) needs to
    tell where a restart picked up."""
    scan = ",".join(f"{stream}@{seq}" for stream, seq in sorted(checkpoint.scan_from.items()))
    after = f"{len(found)} found {min(found)}..{max(found)}" if found else "none found"
    return f"{lane_label(lane)} through {checkpoint.position}, scan from {scan or '-'}, {after}"


class JetStreamCheckpoints:
    """Checkpointer backed by a KV bucket and a scan of the streams' tails.

    `streams` names the streams the routes publish into. A lane seen for the first time
    gets a marker checkpoint (position -1, each stream's next sequence) *before* any of its
    messages is published, so even a run that dies before its first real checkpoint leaves
    behind where to look.
    """

    def __init__(
        self, js: JetStreamContext, streams: Collection[str], *, scan_margin: int = 4096, replicas: int = 1
    ) -> None:
        self._js = js
        self._replicas = replicas
        self._streams = list(streams)
        self._kv: KeyValue | None = None
        self._scan_margin = scan_margin
        # From a disconnect until the reconnect's check that JetStream kept what it acknowledged
        # (bridge.jetstream.lost_writes): a watermark over records it may have forgotten must not
        # become a checkpoint. Commits go on meanwhile; the next assignment checks them against
        # the streams, so what a held save leaves out only makes that scan longer.
        self.held = False

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            try:
                self._kv = await self._js.key_value(BUCKET)
            except BucketNotFoundError:
                config = js_api.KeyValueConfig(
                    bucket=BUCKET,
                    history=1,
                    storage=js_api.StorageType.FILE,
                    replicas=self._replicas,
                    description="nats-bridge: per-lane watermarks",
                )
                self._kv = await self._js.create_key_value(config)
        return self._kv

    async def save(self, scope: str, checkpoints: Mapping[Lane, Checkpoint]) -> None:
        if self.held:
            return
        kv = await self._bucket()
        # One KV write per lane (instances sharing a route own different lanes), all at once.
        await asyncio.gather(
            *(
                kv.put(
                    checkpoint_key(scope, lane),
                    json.dumps({"position": cp.position, "scan_from": dict(cp.scan_from)}).encode("utf-8"),
                )
                for lane, cp in checkpoints.items()
            )
        )

    async def forget(self, scope: str) -> int:
        """Delete every lane's checkpoint of `scope` (a retired route whose group was deleted:
        a group recreated under that name must start afresh, not skip "already stored" offsets)."""
        kv = await self._bucket()
        prefix = f"{_b64(scope)}."
        try:
            keys = [key for key in await kv.keys() if key.startswith(prefix)]
        except NoKeysError:
            return 0
        for key in keys:
            await kv.purge(key)
        return len(keys)

    async def load(self, scope: str, lanes: Collection[Lane]) -> dict[Lane, Checkpoint]:
        kv = await self._bucket()
        found: dict[Lane, Checkpoint] = {}
        for lane in lanes:
            try:
                entry = await kv.get(checkpoint_key(scope, lane))
            except KeyNotFoundError:
                continue
            if entry.value is None:
                continue
            value = json.loads(entry.value)
            scan_from = {str(stream): int(seq) for stream, seq in value["scan_from"].items()}
            found[lane] = Checkpoint(int(value["position"]), scan_from)
        return found

    async def stored(self, scope: str, lanes: Collection[Lane], route: CompiledRoute) -> StoredIndex:
        checkpoints = await self.load(scope, lanes)
        new_lanes = [lane for lane in lanes if lane not in checkpoints]
        if new_lanes:
            markers = await self._markers()
            await self.save(scope, dict.fromkeys(new_lanes, Checkpoint(-1, markers)))
        index = StoredIndex(
            through={lane: cp.position for lane, cp in checkpoints.items()},
            scan_from={lane: dict(cp.scan_from) for lane, cp in checkpoints.items()},
        )
        for lane in new_lanes:
            index.scan_from[lane] = dict(markers)
            index.ends[lane] = {stream: marker - 1 for stream, marker in markers.items()}
        starts: dict[str, int] = {}
        for checkpoint in checkpoints.values():
            for stream, seq in checkpoint.scan_from.items():
                start = max(1, seq - self._scan_margin)
                starts[stream] = min(starts.get(stream, start), start)
        claim = RouteClaim(route)
        for stream, start in starts.items():
            last = await self._scan(stream, start, checkpoints, index, claim)
            for lane in checkpoints:
                index.ends.setdefault(lane, {})[stream] = last
        if checkpoints:
            log.info(
                "%s: resuming %d lane(s) from checkpoints; %d message(s) found stored after them (%s)",
                scope,
                len(checkpoints),
                sum(len(found) for found in index.positions.values()),
                "; ".join(_resume_summary(lane, cp, index.positions.get(lane)) for lane, cp in checkpoints.items()),
            )
        return index

    async def _markers(self) -> dict[str, int]:
        """Each stream's next sequence: no message published from now on sits below it."""
        markers: dict[str, int] = {}
        for stream in self._streams:
            try:
                info = await self._js.stream_info(stream)
            except NotFoundError:
                continue
            markers[stream] = info.state.last_seq + 1
        return markers

    async def _scan(
        self,
        stream: str,
        start: int,
        checkpoints: Mapping[Lane, Checkpoint],
        index: StoredIndex,
        claim: RouteClaim,
    ) -> int:
        """Add the route's messages stored after their lanes' checkpoints to `index`; return
        the stream's last sequence, up to which the lanes' messages are now known."""
        try:
            info = await self._js.stream_info(stream)
        except NotFoundError:
            return 0
        last = info.state.last_seq
        if last < start:
            return last
        config = js_api.ConsumerConfig(
            deliver_policy=js_api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            ack_policy=js_api.AckPolicy.NONE,
            headers_only=True,
            inactive_threshold=30.0,
            max_ack_pending=-1,
        )
        consumer = await self._js.add_consumer(stream, config)
        subscription = await self._js.pull_subscribe_bind(durable=consumer.name, stream=stream)
        scanned = 0
        try:
            seq = start - 1
            while seq < last:
                try:
                    # Ask for no more than remain: a pull waits its full timeout for a batch
                    # it cannot fill.
                    messages = await subscription.fetch(min(SCAN_BATCH, last - seq), timeout=2.0)
                except TimeoutError:
                    # Either the rest of the range was removed (limits) while scanning, or the
                    # server is slow. Only the first may end the scan: a scan that stops short
                    # would let the lane store again what it missed.
                    first = (await self._js.stream_info(stream)).state.first_seq
                    if first > last:
                        break
                    raise
                scanned += len(messages)
                for message in messages:
                    seq = message.metadata.sequence.stream
                    found = lane_position_from_headers(message.headers)
                    if found is None:
                        continue
                    lane, position = found
                    checkpoint = checkpoints.get(lane)
                    if (
                        checkpoint is not None
                        and position > checkpoint.position
                        and claim(message.subject, message.headers or {})
                    ):
                        index.positions.setdefault(lane, set()).add(position)
        finally:
            log.info("scanned stream %s from sequence %d to %d: %d message(s)", stream, start, last, scanned)
            await subscription.unsubscribe()
            with contextlib.suppress(NotFoundError):
                await self._js.delete_consumer(stream, consumer.name)
        return last
