"""(4') SETTLE, reverse direction: a JetStream durable consumer -> a legacy broker, acked after its confirm.

For legacy consumers that have not moved yet while their service's producers already publish
to NATS. One `ReverseRoute` runs per reverse route of the mapping file:

    fetch a batch -> per message: written by a forward route? ack, count, never write back
                                  key template renders?       no: term (a retry cannot help)
                  -> write the rest to the legacy broker (pipelined, every confirm awaited)
                  -> ack each JetStream message whose legacy confirm came back

A message is acknowledged only once the legacy broker confirmed it, so a crash or a lost
connection at any point re-delivers it; what it costs is a possible duplicate on the legacy
side (a confirm that arrived and an ack that did not), never a loss. RabbitMQ messages carry
the Nats-Msg-Id (or `<stream>:<seq>` without one) as message_id so legacy consumers can
drop such duplicates.

A failed write is retried by the route itself, not left to JetStream's redelivery: the failed
messages stay un-acked (`num_ack_pending` shows them), are kept alive with in-progress acks,
and are written again — in order, after a back-off from 0.1 s doubling to 5 s, on a fresh
legacy connection — before anything newer is fetched. Only one batch is in flight, so order
per subject holds as far as the legacy broker keeps it; messages confirmed in a batch where
an earlier one failed are acked (they are stored), which is the one way a retry can land
after a later message. `stop()` lets the batch in flight finish; a batch still being retried
at that point is nak'ed so JetStream redelivers it at once to whoever runs next.

A message the legacy broker refuses for good (too large for the Kafka topic, a write it is
not authorized for, a RabbitMQ 403 or 406) would be retried forever and hold up everything
behind it. It goes to the dead-letter stream instead (`<dead_letters.subject_prefix>.<service>.
<route>`, `Bridge-Dlq-Reason: refused` with the broker's answer), and only once JetStream
stored it is the message acked. A refusal is taken as the message's own only when it was
written alone: a refused batch (RabbitMQ closes the channel on every publish in flight, Kafka
refuses a whole record batch) is written again one message at a time, in order, so that only
the message at fault is dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from bridge.brokers import reverse_target
from bridge.config.model import DeadLetterConfig
from bridge.config.services import ReverseRouteConfig
from bridge.config.sources import KafkaSource, RabbitMQSource
from bridge.deadletters import ERROR_HEADER, REASON_HEADER, ROUTE_HEADER, SUBJECT_HEADER, DeadLetterReason
from bridge.errors import TargetUnavailableError
from bridge.headers import FORWARDED_HEADERS, STREAM_POSITION_HEADER
from bridge.jetstream.declare import declare_streams
from bridge.reverse.acks import keep_alive, settle
from bridge.reverse.consumer import PullSubscription, bind_consumer, consumer_config, durable_name
from bridge.reverse.lease import RouteLease, lease_key
from bridge.routing.key_template import KeyTemplate, TemplateRenderError
from bridge.targets import LegacyMessage, legacy_headers

log = logging.getLogger(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"
TARGET_HEADER = "Bridge-Dlq-Target"  # a reverse route's dead letter: the legacy target that refused it
_MAX_ERROR_TEXT = 1000  # a header value is one line; a broker's long answer is cut here


@dataclass(slots=True)
class ReverseStats:
    """Running totals for one reverse route; metrics and /status read these."""

    received: int = 0  # JetStream messages fetched (redeliveries included)
    written: int = 0  # confirmed by the legacy broker and acked
    filtered_forwarded: int = 0  # written by a forward route: acked, never written back
    unrenderable: int = 0  # key template could not render: terminated
    dead_lettered: int = 0  # refused for good by the legacy broker: stored as dead letters, acked
    failures: int = 0  # messages in failed write attempts (one message may fail many times)
    retries: int = 0  # write attempts repeated after a failure
    last_error: str = ""
    # Under the route's lease (bridge.reverse.lease): whether this bridge writes it now, and who
    # does as this bridge last saw it (itself, another bridge's holder name, or "" before it knew).
    writing: bool = False
    writer: str = ""

    @property
    def settled(self) -> int:
        """Messages done with, however: progress is this number going up."""
        return self.written + self.filtered_forwarded + self.unrenderable + self.dead_lettered


class ReverseRoute:
    """One reverse route: its durable consumer, its legacy target, and the loop between them."""

    def __init__(
        self,
        service: str,
        config: ReverseRouteConfig,
        target_source: RabbitMQSource | KafkaSource,
        js: JetStreamContext,
        *,
        batch: int = 256,
        fetch_timeout: float = 1.0,
        ack_wait: float = 60.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        error_log_interval: float = 30.0,
        dead_letters: DeadLetterConfig | None = None,
        state_replicas: int = 1,
        lease: RouteLease | None = None,
    ) -> None:
        self.service = service
        self.config = config
        self._js = js
        self.dead_letters = dead_letters or DeadLetterConfig()
        self._state_replicas = state_replicas  # of the dead-letter stream, when this route declares it
        self._dead_letter_stream_checked = False
        self._batch = max(1, min(batch, config.max_ack_pending))
        self._fetch_timeout = fetch_timeout
        self._ack_wait = ack_wait
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._error_log_interval = error_log_interval
        to = config.to
        self._template: KeyTemplate | None = to.key_template
        self.target = reverse_target(target_source, to, label=self.key)
        self.durable = durable_name(service, config)
        self.lease = lease or RouteLease(js, lease_key(config.stream, self.durable), replicas=state_replicas)
        self.stats = ReverseStats()
        self._stopping = asyncio.Event()
        self._logged_reason = ""
        self._logged_at = 0.0

    @property
    def key(self) -> str:
        return f"{self.service}/{self.config.name}"

    def stop(self) -> None:
        """Ask `run()` to return once the batch in flight is settled; safe from any task."""
        self._stopping.set()

    async def run(self) -> None:
        """Copy messages until `stop()`. Raises ReverseConsumerError when JetStream refuses the
        consumer (missing stream, clashing config); legacy outages are waited out, not raised."""
        if self._stopping.is_set():
            return
        config = consumer_config(self.durable, self.config, ack_wait=self._ack_wait)
        subscription = await bind_consumer(self._js, self.config.stream, config)
        log.info(
            "reverse route %s: consumer '%s' on stream '%s' -> %s",
            self.key,
            self.durable,
            self.config.stream,
            self.target.description,
        )
        try:
            await self._check_target()
            while not self._stopping.is_set():
                if not self.lease.held:
                    self.stats.writing = False
                    if not await self.lease.acquire(self._stopping, self._standing_by):
                        break
                    self.stats.writing, self.stats.writer = True, self.lease.holder
                messages = await self._fetch(subscription)
                if messages:
                    await self._process(messages)
        finally:
            self.stats.writing = False
            await self.lease.release()
            await self.target.close()
            with contextlib.suppress(NatsError, TimeoutError):
                await subscription.unsubscribe()
            log.info("reverse route %s: stopped (%d written)", self.key, self.stats.written)

    def _standing_by(self, holder: str) -> None:
        self.stats.writer = holder
        log.info("reverse route %s: written by %s; this bridge stands by to take over", self.key, holder)

    # ------------------------------------------------------------------ reading

    async def _check_target(self) -> None:
        """Connect early so a missing exchange or topic is reported at start, not at the first message."""
        try:
            await self.target.connect()
        except TargetUnavailableError as error:
            self.stats.last_error = str(error)
            self._log_failure(str(error), "messages for it stay un-acked in JetStream until it is available")

    async def _fetch(self, subscription: PullSubscription) -> list[Msg]:
        try:
            return await subscription.fetch(self._batch, timeout=self._fetch_timeout)
        except TimeoutError:
            return []  # nothing new (nats-py's own timeout errors are TimeoutErrors too)
        except NatsError as error:
            # NATS reconnects by itself; wait a moment instead of spinning on a dead connection.
            self._log_failure(f"fetching from JetStream failed: {str(error) or type(error).__name__}", "retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._fetch_timeout)
            return []

    async def _process(self, messages: Sequence[Msg]) -> None:
        stats = self.stats
        stats.received += len(messages)
        pending: list[tuple[Msg, LegacyMessage]] = []
        done: list[Msg] = []
        for msg in messages:
            headers = msg.headers
            if headers and _forwarded(headers):
                stats.filtered_forwarded += 1
                done.append(msg)
                continue
            try:
                pending.append((msg, self._legacy(msg)))
            except TemplateRenderError as error:
                stats.unrenderable += 1
                stats.last_error = str(error)
                log.error(  # noqa: TRY400  (the reason is the message; a traceback adds nothing)
                    "reverse route %s: no %s for the message on subject '%s' (stream seq %d): %s; "
                    "terminated, it will not be redelivered",
                    self.key,
                    self.target.key_name,
                    msg.subject,
                    msg.metadata.sequence.stream,
                    error,
                )
                await settle(self.key, [msg], "term")
        if done:
            await settle(self.key, done, "ack")
        if pending:
            await self._deliver(pending)

    def _legacy(self, msg: Msg) -> LegacyMessage:
        """The message as the legacy broker gets it; TemplateRenderError if it cannot be addressed."""
        headers = msg.headers
        key = self._template.render(msg.subject, headers) if self._template is not None else None
        problem = self.target.key_problem(key)
        if problem is not None:
            raise TemplateRenderError(f"{problem}: {key!r:.80}", self._template.text if self._template else "")
        metadata = msg.metadata
        position = f"{metadata.stream}:{metadata.sequence.stream}"  # the same on every redelivery
        msg_id = headers.get(MSG_ID_HEADER) if headers else None
        written = legacy_headers(headers)
        written[STREAM_POSITION_HEADER] = position
        return LegacyMessage(key=key, payload=msg.data, headers=written, msg_id=msg_id or position)

    # ------------------------------------------------------------------ writing

    async def _deliver(self, pending: list[tuple[Msg, LegacyMessage]]) -> None:
        """Write until every message is confirmed or dead-lettered (acking each as that happens),
        or until `stop()` during a retry (then nak what is left)."""
        held = [msg for msg, _ in pending]
        keepalive = asyncio.create_task(
            keep_alive(self.key, held, self._ack_wait), name=f"reverse {self.key} keepalive"
        )
        backoff = 0.0
        alone = False  # a batch was refused for good: whose fault it was shows one message at a time
        try:
            while pending:
                batch, rest = (pending[:1], pending[1:]) if alone else (pending, [])
                outcomes = await self.target.write([legacy for _, legacy in batch])
                done: list[Msg] = []  # confirmed by the legacy broker, or stored as a dead letter
                failed: list[tuple[Msg, LegacyMessage]] = []
                reason = ""
                refused_in_batch = False
                for (msg, legacy), outcome in zip(batch, outcomes, strict=True):
                    if outcome is None:
                        done.append(msg)
                        self.stats.written += 1
                    elif outcome.permanent and len(batch) == 1 and await self._dead_letter(msg, outcome.reason):
                        done.append(msg)
                        self.stats.dead_lettered += 1
                    else:
                        failed.append((msg, legacy))
                        reason = reason or outcome.reason
                        refused_in_batch = refused_in_batch or (outcome.permanent and len(batch) > 1)
                await settle(self.key, done, "ack")
                pending = failed + rest
                held[:] = [msg for msg, _ in pending]
                if not failed:
                    if backoff and not pending:
                        log.info("reverse route %s: %s accepts messages again", self.key, self.target.description)
                        self._logged_reason = ""
                    continue
                self.stats.failures += len(failed)
                self.stats.last_error = reason
                if refused_in_batch and not alone:
                    alone = True
                    log.warning(
                        "reverse route %s: %s refused a message for good (%s); writing the %d failed one(s) "
                        "one at a time to find it",
                        self.key,
                        self.target.description,
                        reason,
                        len(failed),
                    )
                    continue
                backoff = min(self._backoff_max, max(self._backoff_initial, backoff * 2))
                self._log_failure(
                    reason, f"{len(pending)} message(s) stay un-acked in JetStream; retrying in {backoff:.1f}s"
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                if self._stopping.is_set():
                    log.warning(
                        "reverse route %s: stopping with %d unwritten message(s); handed back to JetStream",
                        self.key,
                        len(pending),
                    )
                    await settle(self.key, held, "nak")
                    return
                self.stats.retries += 1
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive

    async def _dead_letter(self, msg: Msg, error: str) -> bool:
        """Store a message the legacy broker refused for good in the dead-letter stream; True once
        JetStream has it (then it may be acked). Its Msg-Id comes from the message's place in its
        stream, so a redelivered copy is stored once."""
        metadata = msg.metadata
        stream, seq = metadata.stream, metadata.sequence.stream
        subject = self.dead_letters.subject_for(self.service, self.config.name)
        headers = {name: value for name, value in (msg.headers or {}).items() if name[:5].lower() != "nats-"}
        headers[REASON_HEADER] = DeadLetterReason.REFUSED.value
        headers[ERROR_HEADER] = " ".join(error.split())[:_MAX_ERROR_TEXT]
        headers[ROUTE_HEADER] = self.key
        headers[SUBJECT_HEADER] = msg.subject  # where it was read from: republish there to replay it
        headers[TARGET_HEADER] = self.target.description
        headers[MSG_ID_HEADER] = f"dlq:{self.key}/{stream}/{seq}"
        try:
            await self._ensure_dead_letter_stream()
            await self._js.publish(subject, msg.data, headers=headers)
        except (NatsError, TimeoutError) as dead:
            self._log_failure(
                f"dead letter for stream seq {seq} not stored: {dead or type(dead).__name__}",
                "the message stays un-acked; retrying",
            )
            return False
        log.error(
            "reverse route %s: %s refused the message on subject '%s' (stream %s seq %d) for good: %s; "
            "dead-lettered to %s",
            self.key,
            self.target.description,
            msg.subject,
            stream,
            seq,
            error,
            subject,
        )
        return True

    async def _ensure_dead_letter_stream(self) -> None:
        """The dead-letter stream exists: `run` declares it when a forward route dead-letters, which
        not every mapping file has; declared here like there otherwise."""
        if self._dead_letter_stream_checked:
            return
        await declare_streams(self._js, [self.dead_letters.stream_config(self._state_replicas)])
        self._dead_letter_stream_checked = True

    def _log_failure(self, reason: str, consequence: str) -> None:
        """Log a legacy or NATS problem as an error once, then again only when it changes or
        every `error_log_interval` seconds: an outage is one line every half minute, not a flood."""
        now = time.monotonic()
        if reason != self._logged_reason or now - self._logged_at >= self._error_log_interval:
            log.error("reverse route %s: %s; %s", self.key, reason, consequence)
            self._logged_reason = reason
            self._logged_at = now
        else:
            log.debug("reverse route %s: %s; %s", self.key, reason, consequence)


def _forwarded(headers: Mapping[str, str]) -> bool:
    """Written into NATS by a forward route: writing it back would make a loop."""
    return any(name in headers for name in FORWARDED_HEADERS)
