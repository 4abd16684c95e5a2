"""Where each declared consumer runs now: on JetStream (its durable made by `handoff`), or still on
the legacy broker. `status` lists it; `cutover --to retired` refuses while a consumer that
replaces a legacy one has not been handed off, since retiring stops what feeds the legacy side."""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bridge.config.model import BridgeConfig
from bridge.jetstream.consumer_plan import HANDOFF_METADATA


@dataclass(frozen=True, slots=True)
class ConsumerPlace:
    """One declared consumer: `runs` is "jetstream", "legacy" (what it replaces still reads the
    legacy broker) or "not made" (a new consumer with no legacy one); `detail` says how it is known."""

    service: str
    name: str
    stream: str
    replaces: str | None  # "queue 'x'" / "group 'y'"
    runs: str
    detail: str

    @property
    def moved(self) -> bool:
        return self.runs == "jetstream"

    def as_json(self) -> dict[str, object]:
        return {
            "consumer": self.name,
            "stream": self.stream,
            "replaces": self.replaces,
            "runs": self.runs,
            "detail": self.detail,
        }


async def consumer_places(js: JetStreamContext, config: BridgeConfig, service: str) -> list[ConsumerPlace]:
    """Each consumer `service` declares, and where it runs (read from the durables' metadata)."""
    places = []
    for consumer in config.services[service].consumers:
        replaces = consumer.replaces.describe() if consumer.replaces is not None else None
        try:
            info = await js.consumer_info(consumer.stream, consumer.name)
        except NotFoundError:
            runs, detail = (
                ("legacy", "no durable yet (consumers apply)") if replaces else ("not made", "consumers apply")
            )
        else:
            handed = (info.config.metadata or {}).get(HANDOFF_METADATA)
            if handed is not None:
                runs, detail = "jetstream", f"handed off from {handed}"
            elif replaces is None:
                runs, detail = "jetstream", "made by consumers apply"
            else:
                runs, detail = "legacy", "durable made, not handed off (handoff)"
        places.append(ConsumerPlace(service, consumer.name, consumer.stream, replaces, runs, detail))
    return places
