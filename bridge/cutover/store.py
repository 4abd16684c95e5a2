"""Phase records in a NATS KV bucket: one key per service, a short history kept as the audit trail;
and, in a bucket of their own, what the bridges report about each phase.

Operators write the phase (`cutover`, key `phase.<service>` in `nats_bridge_phases`); bridges
only read it, so the bridges' NATS user needs no write permission there (deploy/). What bridges
find out — which lanes each instance saw empty, the drained verdict, what a retire removed — they
write to `report.<service>` in `nats_bridge_reports`, tagged with the revision of the phase record
it is about; `get` shows both as one record.

Changes are compare-and-set on the key's revision, so when two operators (or two bridges) race,
one of them is told to look again instead of silently overwriting the other.

Nothing read from a bucket is trusted. Each revision of a phase record is parsed against the
schema (bridge.cutover.phases.PhaseDocument) and checked against the previous valid revision
with cutover's rules (bridge.cutover.phases.refusal): `read` walks the key's history from the
revision a reader last saw (direct gets, no consumer) and returns the last valid record, with the
revisions it ignored and why. With no valid record at all (every kept revision invalid, or only
a deletion left), the service is *held*: bridges start none of its routes (see `PhaseState`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from nats.errors import NoRespondersError
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

from bridge.config.services import Phase
from bridge.cutover.phases import (
    MAX_RECORD_BYTES,
    MAX_REPORT_BYTES,
    PhaseRecord,
    check_transition,
    now_text,
)
from bridge.cutover.state import (
    FRESH,
    IGNORED_KEPT,
    REPORT,
    TRANSITION,
    BridgeReport,
    Entry,
    PhaseState,
    Rejection,
    next_state,
    with_report,
)
from bridge.errors import BridgeError, InvalidRecordError, InvalidTransitionError, PhaseConflictError

BUCKET = "nats_bridge_phases"
REPORTS_BUCKET = "nats_bridge_reports"
HISTORY = 16  # changes kept per service: who moved it, when and why
MAX_WALK = 64  # revisions of one key read in one look (a bucket made with a longer history)
STREAM_NOT_FOUND = 10059  # JetStream's error code (a 404 like "no message found", 10037)


def phase_key(service: str) -> str:
    """Service names are limited to [A-Za-z0-9_-] by the mapping file: valid KV key tokens."""
    return f"phase.{service}"


def report_key(service: str) -> str:
    return f"report.{service}"


@dataclass(frozen=True, slots=True)
class _Stream:
    name: str
    direct: bool
    history: int


class PhaseStore:
    """Reads and changes service phases. `create=False` (status, dry views) never makes a bucket;
    reading never does."""

    def __init__(self, js: JetStreamContext, *, replicas: int = 1, create: bool = True) -> None:
        self._js = js
        self._replicas = replicas
        self._create = create
        self._kv: KeyValue | None = None
        self._reports: KeyValue | None = None
        self._streams: dict[str, _Stream] = {}

    # ------------------------------------------------------------------ reading

    async def _stream(self, bucket: str) -> _Stream | None:
        found = self._streams.get(bucket)
        if found is None:
            try:
                info = await self._js.stream_info(f"KV_{bucket}")
            except NotFoundError:
                return None
            config = info.config
            found = _Stream(f"KV_{bucket}", bool(config.allow_direct), config.max_msgs_per_subject or HISTORY)
            self._streams[bucket] = found
        return found

    async def _get(self, stream: _Stream, subject: str, *, after: int | None = None) -> Entry | None:
        """The key's latest entry, or (with `after`) its first entry past revision `after`."""
        try:
            if after is None:
                message = await self._js.get_msg(stream.name, subject=subject, direct=stream.direct)
            else:
                message = await self._js.get_msg(
                    stream.name, seq=after + 1, subject=subject, next=True, direct=stream.direct
                )
        except NotFoundError as error:
            if error.err_code == STREAM_NOT_FOUND:
                self._forget(stream)
            return None
        except NoRespondersError:
            self._forget(stream)  # nobody answers direct gets: the bucket is gone (or JetStream is)
            raise
        operation = (message.headers or {}).get(KV_OP)
        return Entry(message.seq or 0, message.data, operation in (KV_DEL, KV_PURGE))

    def _forget(self, stream: _Stream) -> None:
        """Look the bucket up again next time: it was removed (and may be made again)."""
        self._streams = {bucket: known for bucket, known in self._streams.items() if known != stream}

    async def _walk(self, stream: _Stream, subject: str, after: int, latest: Entry) -> tuple[list[Entry], bool]:
        """The key's entries past revision `after` up to `latest`, oldest first; and whether they
        are all of them (False when more than MAX_WALK: then the last one is `latest`)."""
        entries: list[Entry] = []
        position = after
        while position < latest.revision:
            if len(entries) >= MAX_WALK:
                return [*entries, latest], False
            entry = await self._get(stream, subject, after=position)
            if entry is None or entry.revision > latest.revision:
                break
            entries.append(entry)
            position = entry.revision
        if not entries or entries[-1].revision != latest.revision:
            entries.append(latest)  # written meanwhile, or the walk found it removed: the newest counts
        return entries, True

    async def read(self, service: str, known: PhaseState | None = None) -> tuple[PhaseState, list[Rejection]]:
        """The service's phase, from `known` (what the caller read before) and the revisions since;
        and the revisions newly refused (for a first read, only those after the valid record)."""
        key = phase_key(service)
        where = f"{BUCKET}/{key}"
        stream = await self._stream(BUCKET)
        latest = None
        if stream is not None:
            latest = await self._get(stream, f"$KV.{BUCKET}.{key}")
        if latest is None:
            if known is None or known.latest == 0:
                return FRESH, []
            # The key (or the whole bucket) vanished: nothing cutover does. Keep what was valid.
            if any(rejection.revision == 0 for rejection in known.ignored):
                return known, []
            gone = Rejection(
                where, 0, TRANSITION, "the record is gone (bucket or key removed): cutover never does that"
            )
            return replace(known, ignored=(*known.ignored, gone)[-IGNORED_KEPT:]), [gone]
        assert stream is not None
        if known is not None and latest.revision == known.latest:
            return known, []
        subject = f"$KV.{BUCKET}.{key}"
        if known is None:
            entries, complete = await self._walk(stream, subject, 0, latest)
            # A history shorter than the bucket keeps starts with the key's first record, whose
            # predecessor is the fresh shadow record; otherwise (or after a purge) it is unknown.
            whole = complete and len(entries) < stream.history and not entries[0].removed
            state = PhaseState(PhaseRecord() if whole else None)
        else:
            # Revisions going backwards: the bucket was made again. Its records are still
            # checked against the last valid one.
            after = known.latest if latest.revision > known.latest else 0
            entries, _ = await self._walk(stream, subject, after, latest)
            state = known
        first_read = known is None
        rejections: list[Rejection] = []
        for entry in entries:
            state, rejection = next_state(state, where, entry)
            if rejection is not None:
                rejections.append(rejection)
            elif first_read:
                rejections.clear()  # superseded by a valid record: old news
        return state, rejections

    async def report(self, service: str) -> tuple[BridgeReport | None, int, Rejection | None]:
        """The bridges' report on the service, its revision (0: none) and, when it is not a
        valid report, why (it is then treated as no report: the next one written replaces it)."""
        stream = await self._stream(REPORTS_BUCKET)
        if stream is None:
            return None, 0, None
        key = report_key(service)
        entry = await self._get(stream, f"$KV.{REPORTS_BUCKET}.{key}")
        if entry is None:
            return None, 0, None
        if entry.removed:
            return None, entry.revision, None
        try:
            return BridgeReport.from_json(entry.value), entry.revision, None
        except InvalidRecordError as error:
            return None, entry.revision, Rejection(f"{REPORTS_BUCKET}/{key}", entry.revision, REPORT, str(error))

    async def view(self, service: str) -> tuple[PhaseState, PhaseRecord | None]:
        """The phase state and the record as readers see it (with the bridges' report; None when held)."""
        state, _ = await self.read(service)
        if state.record is None:
            return state, None
        report, _, _ = await self.report(service) if state.since else (None, 0, None)
        return state, with_report(state.record, state.since, report)

    async def get(self, service: str) -> tuple[PhaseRecord, int]:
        """The service's record as readers see it and the key's latest revision (a fresh shadow
        record and 0 if none yet; a held service reads as a fresh record too: use `view`)."""
        state, record = await self.view(service)
        return record if record is not None else PhaseRecord(), state.latest

    async def history(self, service: str) -> list[PhaseRecord]:
        """The valid records of the service's history, oldest first (at most HISTORY)."""
        stream = await self._stream(BUCKET)
        if stream is None:
            return []
        subject = f"$KV.{BUCKET}.{phase_key(service)}"
        latest = await self._get(stream, subject)
        if latest is None:
            return []
        entries, _ = await self._walk(stream, subject, 0, latest)
        records = []
        for entry in entries:
            if entry.removed:
                continue
            try:
                records.append(PhaseRecord.from_json(entry.value))
            except InvalidRecordError:
                continue
        return records

    async def latest(self, key: str) -> Entry | None:
        """The latest entry of any key of the phase bucket (None: never written, or no bucket)."""
        stream = await self._stream(BUCKET)
        if stream is None:
            return None
        return await self._get(stream, f"$KV.{BUCKET}.{key}")

    # ------------------------------------------------------------------ writing

    async def put_key(self, key: str, data: bytes, revision: int) -> int:
        """Write `data` under `key` of the phase bucket if the key is still at `revision` (0: absent)."""
        kv = await self._bucket()
        try:
            if revision == 0:
                return await kv.create(key, data)
            return await kv.update(key, data, last=revision)
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            raise PhaseConflictError(f"{key} changed meanwhile (another operator); look again and retry") from None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self._open(
                BUCKET, HISTORY, MAX_RECORD_BYTES, "nats-bridge: each service's cut-over phase (written by operators)"
            )
        return self._kv

    async def _report_bucket(self) -> KeyValue:
        if self._reports is None:
            self._reports = await self._open(
                REPORTS_BUCKET, 1, MAX_REPORT_BYTES, "nats-bridge: what bridges report about each service's phase"
            )
        return self._reports

    async def _open(self, bucket: str, history: int, max_value_size: int, description: str) -> KeyValue:
        try:
            return await self._js.key_value(bucket)
        except BucketNotFoundError:
            if not self._create:
                raise BridgeError(f"the KV bucket {bucket} does not exist") from None
            config = js_api.KeyValueConfig(
                bucket=bucket,
                history=history,
                storage=js_api.StorageType.FILE,
                replicas=self._replicas,
                max_value_size=max_value_size,
                description=description,
            )
            return await self._js.create_key_value(config)

    async def put(self, service: str, record: PhaseRecord, revision: int) -> int:
        """Write `record` if the key is still at `revision` (0: not yet written); the new revision.
        A record the bridges would not read (a --reason too long, say) is refused here."""
        data = record.to_json()
        try:
            PhaseRecord.from_json(data)
        except InvalidRecordError as error:
            raise BridgeError(f"service '{service}': the phase record would be invalid: {error}") from None
        kv = await self._bucket()
        try:
            if revision == 0:
                return await kv.create(phase_key(service), data)
            return await kv.update(phase_key(service), data, last=revision)
        except KeyWrongLastSequenceError:
            raise PhaseConflictError(
                f"service '{service}': its phase record changed meanwhile (another cutover); look again and retry"
            ) from None

    async def put_report(self, service: str, report: BridgeReport, revision: int) -> int:
        """Write the bridges' report if its key is still at `revision` (0: none yet); the new revision."""
        kv = await self._report_bucket()
        try:
            if revision == 0:
                return await kv.create(report_key(service), report.to_json())
            return await kv.update(report_key(service), report.to_json(), last=revision)
        except KeyWrongLastSequenceError:
            raise PhaseConflictError(
                f"service '{service}': the bridges' report changed meanwhile (another instance); look again"
            ) from None
        except KeyNotFoundError:  # nats-py: a create over a deleted key, raced
            raise PhaseConflictError(f"service '{service}': the bridges' report changed meanwhile") from None

    async def change(
        self,
        service: str,
        wanted: Phase,
        *,
        by: str,
        reason: str,
        quiet_for: float | None = None,
        delete_offsets: bool = False,
        force: bool = False,
    ) -> PhaseRecord:
        """Move a service to `wanted`, refusing transitions that are not allowed. Invalid
        revisions after the last valid one are overwritten (the move is made from the valid one);
        a held service (no valid record) is written afresh only with `force`."""
        state, record = await self.view(service)
        if record is None:
            if not force:
                why = "; ".join(rejection.text() for rejection in state.ignored[-3:]) or "no valid revision kept"
                raise InvalidTransitionError(
                    f"service '{service}': its phase record holds no valid revision ({why}), so its phase is "
                    "unknown and bridges run none of its routes; look at `nats kv history "
                    f"{BUCKET} {phase_key(service)}` and write the phase it should have with --force"
                )
            changed = PhaseRecord(
                phase=wanted,
                changed_by=by,
                changed_at=now_text(),
                reason=reason,
                quiet_for=PhaseRecord().quiet_for if quiet_for is None else quiet_for,
                delete_offsets=delete_offsets,
                forced=True,
            )
        else:
            check_transition(service, record, wanted, force=force)
            changed = record.moved_to(
                wanted, by=by, reason=reason, quiet_for=quiet_for, delete_offsets=delete_offsets, forced=force
            )
        await self.put(service, changed, state.latest)
        return changed
