"""`nats-bridge consumers plan|apply` against the real nats-server, and `validate` / `dry-run`
naming what a consumer would miss of the legacy queue it replaces, as an operator runs them.

Every stream, subject and consumer is named after `unique_name`; the `jetstream` fixture deletes
the streams (and so their consumers) afterwards.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nats.js import api as js_api
from nats.js.errors import NotFoundError

if TYPE_CHECKING:
    from nats.js import JetStreamContext

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Cli:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


async def cli(*args: str) -> Cli:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return Cli(process.returncode, out.decode(), err.decode())


def write_mapping(path: Path, nats_url: str, unique: str, consumers: list[dict[str, Any]], bindings: list[str]) -> Path:
    """A mapping file with one stream, one RabbitMQ route (never run) and `consumers`."""
    document = {
        "version": 1,
        "nats": {"servers": nats_url.split(","), "connect_timeout": "5s"},
        "streams": [{"name": stream_of(unique), "subjects": [f"{unique}.orders", f"{unique}.orders.>"]}],
        "sources": {"rabbit": {"type": "rabbitmq", "url": "amqp://guest:guest@127.0.0.1:9/"}},
        "services": {
            "orders": {
                "routes": [
                    {
                        "name": "events",
                        "source": "rabbit",
                        "from": {"exchange": f"{unique}.orders", "bindings": bindings},
                        "to": f"{unique}.orders.{{rk}}",
                        "on_error": "stop",
                    }
                ],
                "consumers": consumers,
            }
        },
    }
    path.write_text(json.dumps(document, indent=2))
    return path


def stream_of(unique: str) -> str:
    return f"{unique.upper()}_ORDERS"


def worker(unique: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": "worker",
        "stream": stream_of(unique),
        "filter_subjects": [f"{unique}.orders.order.*.*"],
        "max_deliver": 4,
        "backoff": ["1s", "5s"],
        "replaces": {"queue": f"{unique}-worker"},
        **fields,
    }


def audit(unique: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": "audit",
        "stream": stream_of(unique),
        "filter_subjects": [f"{unique}.orders.order.*.*"],
        "delivery": "push",
        "deliver_subject": f"deliver.{unique}.audit",
        "queue_group": "auditors",
        **fields,
    }


async def consumer(js: JetStreamContext, stream: str, name: str) -> js_api.ConsumerInfo | None:
    try:
        return await js.consumer_info(stream, name)
    except NotFoundError:
        return None


async def test_plan_creates_apply_makes_them_and_a_second_run_has_nothing_to_do(
    tmp_path: Path, nats_url: str, jetstream: JetStreamContext, unique_name: str
) -> None:
    stream = stream_of(unique_name)
    mapping = write_mapping(
        tmp_path / "m.yaml", nats_url, unique_name, [worker(unique_name), audit(unique_name)], ["order.*.*"]
    )

    before = await cli("consumers", "plan", str(mapping), "--json")
    assert before.code == 2, before.out + before.err  # the stream is not there yet
    assert [c["action"] for c in before.json()["consumers"]] == ["refused", "refused"]
    assert "`streams apply` it first" in before.json()["consumers"][0]["refusals"][0]["reason"]

    assert (await cli("streams", "apply", str(mapping))).code == 0
    plan = await cli("consumers", "plan", str(mapping))
    assert plan.code == 1, plan.out + plan.err  # changes pending
    assert f"{stream + '/worker':<32} create" in plan.out
    assert "2 to create, 0 to update, 0 unchanged, 0 refused." in plan.out
    assert await consumer(jetstream, stream, "worker") is None  # plan changes nothing

    applied = await cli("consumers", "apply", str(mapping))
    assert applied.code == 0, applied.out + applied.err
    assert f"{stream + '/worker':<32} created" in applied.out
    pull = await consumer(jetstream, stream, "worker")
    assert pull is not None
    assert pull.config.durable_name == "worker"
    assert pull.config.filter_subject == f"{unique_name}.orders.order.*.*"
    assert (pull.config.max_deliver, pull.config.backoff, pull.config.ack_wait) == (4, [1.0, 5.0], 1.0)
    push = await consumer(jetstream, stream, "audit")
    assert push is not None
    assert (push.config.deliver_subject, push.config.deliver_group) == (f"deliver.{unique_name}.audit", "auditors")

    again = await cli("consumers", "plan", str(mapping), "--json")
    assert again.code == 0, again.out + again.err
    assert again.json()["summary"] == {"create": 0, "update": 0, "unchanged": 2, "refused": 0}
    reapplied = await cli("consumers", "apply", str(mapping), "--json")
    assert reapplied.code == 0
    assert [c["outcome"] for c in reapplied.json()["consumers"]] == ["unchanged", "unchanged"]


async def test_an_update_changes_only_those_fields_and_keeps_the_position(
    tmp_path: Path, nats_url: str, jetstream: JetStreamContext, unique_name: str
) -> None:
    stream = stream_of(unique_name)
    mapping = tmp_path / "m.yaml"
    write_mapping(mapping, nats_url, unique_name, [worker(unique_name)], ["order.*.*", "audit.#"])
    assert (await cli("streams", "apply", str(mapping))).code == 0
    assert (await cli("consumers", "apply", str(mapping))).code == 0

    for index in range(5):
        await jetstream.publish(f"{unique_name}.orders.order.eu.{index}", b"x")
    subscription = await jetstream.pull_subscribe_bind(durable="worker", stream=stream)
    for message in await subscription.fetch(3, timeout=5):
        await message.ack_sync()
    await subscription.unsubscribe()
    # An operator describes the consumer by hand; the file has no description to say otherwise.
    info = await jetstream.consumer_info(stream, "worker")
    await jetstream.add_consumer(stream, info.config.evolve(description="run by the fulfilment team"))

    filters = [f"{unique_name}.orders.order.*.*", f"{unique_name}.orders.audit", f"{unique_name}.orders.audit.>"]
    write_mapping(
        mapping,
        nats_url,
        unique_name,
        [worker(unique_name, filter_subjects=filters, max_ack_pending=10)],
        ["order.*.*", "audit.#"],
    )
    plan = await cli("consumers", "plan", str(mapping), "--json")
    assert plan.code == 1, plan.out + plan.err
    (planned,) = plan.json()["consumers"]
    assert planned["action"] == "update"
    assert [change["field"] for change in planned["changes"]] == ["filter_subjects", "max_ack_pending"]

    applied = await cli("consumers", "apply", str(mapping))
    assert applied.code == 0, applied.out + applied.err
    assert "max_ack_pending: 1000 -> 10" in applied.out
    after = await jetstream.consumer_info(stream, "worker")
    assert sorted(after.config.filter_subjects or []) == sorted(filters)
    assert after.config.max_ack_pending == 10
    assert after.config.description == "run by the fulfilment team"  # kept
    assert after.ack_floor.stream_seq == 3  # the same consumer: its position survived
    assert after.num_pending == 2
    assert (await cli("consumers", "plan", str(mapping))).code == 0


async def test_an_immutable_change_is_refused_with_the_reason_and_nothing_is_deleted(
    tmp_path: Path, nats_url: str, jetstream: JetStreamContext, unique_name: str
) -> None:
    stream = stream_of(unique_name)
    mapping = tmp_path / "m.yaml"
    write_mapping(mapping, nats_url, unique_name, [worker(unique_name)], ["order.*.*"])
    assert (await cli("streams", "apply", str(mapping))).code == 0
    assert (await cli("consumers", "apply", str(mapping))).code == 0
    # A consumer the file never names.
    await jetstream.add_consumer(
        stream, js_api.ConsumerConfig(durable_name="ops-tool", ack_policy=js_api.AckPolicy.EXPLICIT)
    )
    before = (await jetstream.consumer_info(stream, "worker")).config

    changed = [worker(unique_name, deliver_policy="new", max_deliver=9), audit(unique_name)]
    write_mapping(mapping, nats_url, unique_name, changed, ["order.*.*"])
    plan = await cli("consumers", "plan", str(mapping))
    assert plan.code == 2, plan.out + plan.err
    assert (
        "refused: deliver_policy: JetStream fixes this when a consumer is created (deliver policy can not be updated)"
        in plan.out
    )
    assert "write `deliver_policy: all`" in plan.out

    applied = await cli("consumers", "apply", str(mapping), "--json")
    assert applied.code == 2
    assert [c["outcome"] for c in applied.json()["consumers"]] == ["refused", "skipped"]
    assert (await jetstream.consumer_info(stream, "worker")).config == before  # untouched, max_deliver too
    assert await consumer(jetstream, stream, "audit") is None  # nothing applied while one is refused

    partial = await cli("consumers", "apply", str(mapping), "--partial")
    assert partial.code == 2
    assert f"{stream + '/audit':<32} created" in partial.out
    assert await consumer(jetstream, stream, "audit") is not None

    # Dropped from the file: still there. Never named: still there.
    write_mapping(mapping, nats_url, unique_name, [audit(unique_name)], ["order.*.*"])
    assert (await cli("consumers", "apply", str(mapping))).code == 0
    assert await consumer(jetstream, stream, "worker") is not None
    assert await consumer(jetstream, stream, "ops-tool") is not None


async def test_validate_and_dry_run_name_what_a_consumer_misses_of_its_legacy_queue(
    tmp_path: Path, nats_url: str, unique_name: str
) -> None:
    bindings = ["order.*.*", "order.#.refund"]
    mapping = write_mapping(tmp_path / "m.yaml", nats_url, unique_name, [worker(unique_name)], bindings)

    checked = await cli("validate", str(mapping))
    assert checked.code == 2, checked.out + checked.err
    assert "1 consumer" in checked.out
    assert (
        f"error: coverage: orders/worker: misses some of what queue '{unique_name}-worker' received through binding "
        "'order.#.refund'" in checked.out
    )
    assert f"a filter that takes it: {unique_name}.orders.order.>" in checked.out
    assert "warning: inexact: orders/worker: binding 'order.#.refund'" in checked.out

    dry = await cli("dry-run", str(mapping), "--json")
    assert dry.code == 2, dry.out + dry.err
    mine = [f for f in dry.json()["findings"] if f["subject"] == "orders/worker"]
    assert {(f["severity"], f["check"]) for f in mine} == {("error", "coverage"), ("warning", "inexact")}

    # Filters that take it: the error goes, the inexact binding stays named (exit 1).
    wide = worker(unique_name, filter_subjects=[f"{unique_name}.orders.order.>"])
    write_mapping(mapping, nats_url, unique_name, [wide], bindings)
    checked = await cli("validate", str(mapping), "--json")
    assert checked.code == 1, checked.out + checked.err
    assert [f["check"] for f in checked.json()["findings"]] == ["inexact"]
