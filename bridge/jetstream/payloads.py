"""Payloads too large for a NATS message, kept in a JetStream object store for their dead letters.

A message over max_payload cannot be published, not even as a dead letter; dropping its
payload would lose it. The object store chunks it, and the dead letter names the object.
Objects are named by the dead letter's Msg-Id, so a redelivered message overwrites its own
object instead of adding another.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BucketNotFoundError
from nats.js.object_store import ObjectStore


class ObjectStorePayloads:
    """Puts payloads into one object-store bucket, created on first use."""

    def __init__(self, js: JetStreamContext, bucket: str, replicas: int = 1) -> None:
        self._js = js
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
        await self._store.put(name, payload)
