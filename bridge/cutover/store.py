"""Phase records in a NATS KV bucket: one key per service, a short history kept as the audit trail.

Changes are compare-and-set on the key's revision, so when two operators (or an operator and a
bridge reporting "drained") race, one of them is told to look again instead of silently
overwriting the other.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from bridge.config.model import Phase
from bridge.cutover.phases import PhaseRecord, check_transition
from bridge.errors import BridgeError

BUCKET = "nats_bridge_phases"
HISTORY = 16  # changes kept per service: who moved it, when and why


class PhaseConflictError(BridgeError):
    """The record changed between reading and writing it."""


def phase_key(service: str) -> str:
    """Service names are limited to [A-Za-z0-9_-] by the mapping file: valid KV key tokens."""
    return f"phase.{service}"


class PhaseStore:
    """Reads and changes service phases. `create=False` (status, dry views) never makes the bucket."""

    def __init__(self, js: JetStreamContext, *, replicas: int = 1, create: bool = True) -> None:
        self._js = js
        self._replicas = replicas
        self._create = create
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue | None:
        if self._kv is None:
            try:
                self._kv = await self._js.key_value(BUCKET)
            except BucketNotFoundError:
                if not self._create:
                    return None
                config = js_api.KeyValueConfig(
                    bucket=BUCKET,
                    history=HISTORY,
                    storage=js_api.StorageType.FILE,
                    replicas=self._replicas,
                    description="nats-bridge: each service's cut-over phase",
                )
                self._kv = await self._js.create_key_value(config)
        return self._kv

    async def get(self, service: str) -> tuple[PhaseRecord, int]:
        """The service's record and its revision (a fresh shadow record and 0 if none yet)."""
        kv = await self._bucket()
        if kv is None:
            return PhaseRecord(), 0
        try:
            entry = await kv.get(phase_key(service))
        except KeyNotFoundError:
            return PhaseRecord(), 0
        if entry.value is None or entry.revision is None:
            return PhaseRecord(), 0
        return PhaseRecord.from_json(entry.value), entry.revision

    async def put(self, service: str, record: PhaseRecord, revision: int) -> int:
        """Write `record` if the key is still at `revision` (0: not yet written); the new revision."""
        kv = await self._bucket()
        assert kv is not None, "a store that writes creates its bucket"
        try:
            if revision == 0:
                return await kv.create(phase_key(service), record.to_json())
            return await kv.update(phase_key(service), record.to_json(), last=revision)
        except KeyWrongLastSequenceError:
            raise PhaseConflictError(
                f"service '{service}': its phase record changed meanwhile (another cutover, or a bridge "
                "reporting it drained); look again and retry"
            ) from None

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
        """Move a service to `wanted`, refusing transitions that are not allowed."""
        record, revision = await self.get(service)
        check_transition(service, record, wanted, force=force)
        changed = record.moved_to(wanted, by=by, reason=reason, quiet_for=quiet_for, delete_offsets=delete_offsets)
        await self.put(service, changed, revision)
        return changed

    async def history(self, service: str) -> list[PhaseRecord]:
        """Past records of the service, oldest first (at most HISTORY)."""
        kv = await self._bucket()
        if kv is None:
            return []
        try:
            entries = await kv.history(phase_key(service))
        except KeyNotFoundError:
            return []
        return [PhaseRecord.from_json(entry.value) for entry in entries if entry.value]
