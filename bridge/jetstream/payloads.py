"""Payloads too large for a NATS message, kept in a JetStream object store for their dead letters.

A message over max_payload cannot be published, not even as a dead letter; dropping its
payload would lose it. The object store chunks it, and the dead letter names the object.
Objects are named by the dead letter's Msg-Id, so a redelivered message overwrites its own
object instead of adding another.
"""

from __future__ import annotations

from nats.aio.client import Client as NatsClient
from nats.js import api as js_api
from nats.js.errors import BucketNotFoundError
from nats.js.object_store import OBJ_DEFAULT_CHUNK_SIZE, ObjectStore


class ObjectStorePayloads:
    """Puts payloads into one object-store bucket, created on first use."""

    def __init__(self, nc: NatsClient, bucket: str, replicas: int = 1) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._bucket = bucket
        self._replicas = replicas
        self._store: ObjectStore | None = None

    async def put(self, name: str, payload: bytes) -> None:
        if self._store is None:
            try:
                self._store = await self._js.object_store(self._bucket)
            except BucketNotFoundError:
                config = js_api.ObjectStoreConfig(
                    bucket=self._bucket,
                    description="nats-bridge: payloads of dead letters too large for a NATS message",
                    replicas=self._replicas,
                )
                self._store = await self._js.create_object_store(self._bucket, config=config)
        # Chunks are NATS messages too: keep them well under the server's max_payload.
        chunk_size = max(1024, min(OBJ_DEFAULT_CHUNK_SIZE, self._nc.max_payload // 2))
        meta = js_api.ObjectMeta(name=name, options=js_api.ObjectMetaOptions(max_chunk_size=chunk_size))
        await self._store.put(name, payload, meta=meta)
