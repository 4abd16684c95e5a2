"""Pure: the workers' answers as the supervisor's — one /metrics text, one /healthz or /readyz verdict.

/metrics: each worker's Prometheus text is parsed back into metric families (prometheus-client's
own parser) and written out again (its own exposition), every sample labelled `worker="K"`, so a
family's HELP and TYPE lines come once however many workers export it, and a dashboard can sum
over workers or tell them apart. Parsing and writing with the same library that wrote the text
keeps names, escaping and value formats exactly as a single bridge exports them.

/healthz and /readyz: 200 only when every worker answered 200; otherwise one `- worker K: ...`
line per problem the worker named (its own `- ` lines), or per worker that did not answer at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

WORKER_LABEL = "worker"


@dataclass(frozen=True, slots=True)
class WorkerReply:
    """What one worker's endpoint answered: its HTTP status and body; status None when it gave no
    answer (not running, no port yet, refused, timed out), the body then saying why."""

    status: int | None
    body: str

    @property
    def ok(self) -> bool:
        return self.status == 200


def merge_metrics(texts: Mapping[int, str], extra: Iterable[Metric] = ()) -> bytes:
    """The workers' /metrics texts (by worker index) as one text, each sample labelled with its
    worker; `extra` families (the supervisor's own) are appended as they are. A text that does
    not parse is left out rather than failing the whole scrape."""
    families: dict[str, Metric] = {}
    for worker, text in sorted(texts.items()):
        try:
            parsed = list(text_string_to_metric_families(text))
        except ValueError:  # not Prometheus text: this worker's samples are missing, the rest are not
            continue
        for family in parsed:
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            label = str(worker)
            merged.samples.extend(
                sample._replace(labels={**sample.labels, WORKER_LABEL: label}) for sample in family.samples
            )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([*families.values(), *extra]))
    return generate_latest(registry)


class _Families(Collector):
    """Metric families already made, for prometheus-client's writer."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def health_problems(replies: Mapping[int, WorkerReply]) -> list[str]:
    """The problems of the workers that did not answer 200, each naming its worker; none: healthy."""
    problems: list[str] = []
    for worker, reply in sorted(replies.items()):
        if reply.ok:
            continue
        if reply.status is None:
            problems.append(f"worker {worker}: {reply.body}")
            continue
        named = [line[2:] for line in reply.body.splitlines() if line.startswith("- ")]
        if not named:
            first = next((line for line in reply.body.splitlines() if line.strip()), "no reason given")
            named = [f"answered {reply.status}: {first}"]
        problems.extend(f"worker {worker}: {problem}" for problem in named)
    return problems
