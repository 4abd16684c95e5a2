"""Reading one source lane's records out of a stream, for the handoff's search.

The bridge stores each Kafka record with `Kafka-Topic`, `Kafka-Partition` and `Kafka-Offset`
headers, so a stream sequence tells which lane and position it holds. A probe asks JetStream for
the next message on a subject filter at or after a sequence (a direct get with `next_by_subj`),
and steps over other lanes' records when the filter holds several.
"""

from __future__ import annotations

from collections.abc import Sequence

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bridge.handoff.search import Probe

KAFKA_TOPIC = "Kafka-Topic"
KAFKA_PARTITION = "Kafka-Partition"
KAFKA_OFFSET = "Kafka-Offset"


def kafka_probe(js: JetStreamContext, stream: str, filters: Sequence[str], topic: str, partition: int) -> Probe:
    """A Probe over the records of `topic`/`partition` that `filters` (a consumer's filter
    subjects) capture in `stream`: (sequence, offset) of the first at or after a sequence."""
    wanted_partition = str(partition)

    async def next_on(subject: str, sequence: int) -> tuple[int, int] | None:
        while True:
            try:
                message = await js.get_msg(stream, seq=sequence, subject=subject, next=True)
            except NotFoundError:
                return None
            headers = message.headers or {}
            found = message.seq or sequence
            if headers.get(KAFKA_TOPIC) == topic and headers.get(KAFKA_PARTITION) == wanted_partition:
                offset = headers.get(KAFKA_OFFSET)
                if offset is not None and offset.isdigit():
                    return found, int(offset)
            sequence = found + 1

    async def probe(sequence: int) -> tuple[int, int] | None:
        found = [record for subject in filters if (record := await next_on(subject, sequence)) is not None]
        return min(found) if found else None

    return probe
