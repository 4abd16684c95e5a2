"""`nats-bridge streams plan|apply` against a real nats-server, as an operator runs them.

The module runs its own nats-server (tests/private_nats.py) and overrides `nats_url` with it,
so the shared test broker is not needed and the conftest fixtures (`nats_client`,
`jetstream`, which deletes every stream named after `unique_name`) work against it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from nats.js import api as js_api
from nats.js.errors import NotFoundError
from private_nats import PrivateNatsServer

if TYPE_CHECKING:
    from nats.aio.client import Client as NATSClient
    from nats.js import JetStreamContext

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's own nats-server (overrides the shared broker's URL from conftest)."""
    server = PrivateNatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@dataclass(frozen=True)
class Cli:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


async def cli(*args: str) -> Cli:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Cli(process.returncode, out.decode(), err.decode())


def write_mapping(
    path: Path, nats_url: str, unique: str, streams: list[dict[str, Any]], *, dead_letters: bool = False
) -> Path:
    """A mapping file (JSON is YAML) with `streams` and one Kafka route that is never run."""
    document: dict[str, Any] = {
        "version": 1,
        "nats": {"servers": [nats_url], "connect_timeout": "5s"},
        "streams": streams,
        "sources": {"k": {"type": "kafka", "bootstrap_servers": ["127.0.0.1:9"]}},
        "services": {
            "s": {
                "routes": [
                    {
                        "name": "r",
                        "source": "k",
                        "from": {"topics": ["t"]},
                        "to": f"{unique}.orders.{{partition}}",
                        "on_error": "dead-letter" if dead_letters else "stop",
                    }
                ]
            }
        },
    }
    if dead_letters:
        document["dead_letters"] = {"stream": f"{unique.upper()}_DLQ", "subject_prefix": f"{unique}.dlq"}
    path.write_text(json.dumps(document, indent=2))
    return path


def orders(unique: str, **fields: Any) -> dict[str, Any]:
    return {"name": f"{unique.upper()}_ORDERS", "subjects": [f"{unique}.orders.>"], **fields}


async def raw_config(nc: NATSClient, stream: str) -> dict[str, Any]:
    """The stream's config exactly as the server reports it (not through nats-py's dataclass)."""
    reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5)
    document = json.loads(reply.data)
    assert "error" not in document, document
    config: dict[str, Any] = document["config"]
    return config


def differing(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    return {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}


async def exists(js: JetStreamContext, stream: str) -> bool:
    try:
        await js.stream_info(stream)
    except NotFoundError:
        return False
    return True


async def test_plan_says_create_apply_creates_and_then_all_is_unchanged(
    tmp_path: Path, nats_url: str, jetstream: JetStreamContext, unique_name: str
) -> None:
    stream, dlq = f"{unique_name.upper()}_ORDERS", f"{unique_name.upper()}_DLQ"
    mapping = write_mapping(
        tmp_path / "m.yaml", nats_url, unique_name, [orders(unique_name, max_age="7d")], dead_letters=True
    )

    plan = await cli("streams", "plan", str(mapping), "--json")
    assert plan.code == 1, plan.err  # changes pending
    assert [(s["stream"], s["action"]) for s in plan.json()["streams"]] == [(stream, "create"), (dlq, "create")]
    assert not await exists(jetstream, stream)  # plan changes nothing

    table = await cli("streams", "plan", str(mapping))
    assert table.code == 1
    assert f"{stream:<24} create" in table.out
    assert "2 to create, 0 to update, 0 unchanged, 0 refused." in table.out

    applied = await cli("streams", "apply", str(mapping))
    assert applied.code == 0, applied.out + applied.err
    assert f"{stream:<24} created" in applied.out
    info = await jetstream.stream_info(stream)
    assert info.config.subjects == [f"{unique_name}.orders.>"]
    assert info.config.max_age == 7 * 86400
    assert info.config.storage == js_api.StorageType.FILE
    assert (await jetstream.stream_info(dlq)).config.subjects == [f"{unique_name}.dlq.>"]

    again = await cli("streams", "plan", str(mapping), "--json")
    assert again.code == 0, again.out + again.err  # nothing to do
    assert again.json()["summary"] == {"create": 0, "update": 0, "unchanged": 2, "refused": 0}
    reapplied = await cli("streams", "apply", str(mapping), "--json")
    assert reapplied.code == 0
    assert [s["outcome"] for s in reapplied.json()["streams"]] == ["unchanged", "unchanged"]

    # `streams FILE` still shows what the streams hold.
    shown = await cli("streams", str(mapping), "--json")
    assert shown.code == 0, shown.err
    assert shown.json()[0] == {
        "stream": stream,
        "exists": True,
        "messages": 0,
        "bytes": 0,
        "last_subject": "",
        "last_headers": {},
    }


async def test_changed_limits_update_only_those_fields_and_keep_what_the_server_set(
    tmp_path: Path, nats_url: str, nats_client: NATSClient, jetstream: JetStreamContext, unique_name: str
) -> None:
    stream = f"{unique_name.upper()}_ORDERS"
    mapping = tmp_path / "m.yaml"
    write_mapping(mapping, nats_url, unique_name, [orders(unique_name, max_age="1d")])
    assert (await cli("streams", "apply", str(mapping))).code == 0

    # An operator tunes the stream by hand, in ways the mapping file cannot express.
    info = await jetstream.stream_info(stream)
    await jetstream.update_stream(
        info.config.evolve(
            allow_direct=True,
            description="tuned by ops",
            max_msgs_per_subject=50,
            metadata={**(info.config.metadata or {}), "owner": "ops"},
        )
    )
    for index in range(5):
        await jetstream.publish(f"{unique_name}.orders.{index}", b"x")
    before = await raw_config(nats_client, stream)
    assert before["allow_direct"] is True

    write_mapping(mapping, nats_url, unique_name, [orders(unique_name, max_age="7d", max_msgs=1000)])
    plan = await cli("streams", "plan", str(mapping), "--json")
    assert plan.code == 1, plan.out + plan.err
    (planned,) = plan.json()["streams"]
    assert planned["action"] == "update"
    assert planned["changes"] == [
        {"field": "max_msgs", "server": -1, "file": 1000},
        {"field": "max_age", "server": 86400.0, "file": 604800.0},
    ]
    table = await cli("streams", "plan", str(mapping))
    assert f"{stream:<24} update     max_msgs          unlimited          1000" in table.out
    assert "max_age           1d                 7d" in table.out

    applied = await cli("streams", "apply", str(mapping))
    assert applied.code == 0, applied.out + applied.err
    assert "max_age: 1d -> 7d" in applied.out

    after = await raw_config(nats_client, stream)
    assert differing(before, after) == {"max_msgs", "max_age"}
    assert (after["max_msgs"], after["max_age"]) == (1000, 7 * 86400 * 10**9)
    assert after["allow_direct"] is True
    assert after["description"] == "tuned by ops"
    assert after["max_msgs_per_subject"] == 50
    assert after["metadata"]["owner"] == "ops"
    assert (await jetstream.stream_info(stream)).state.messages == 5  # an update keeps the messages

    assert (await cli("streams", "plan", str(mapping))).code == 0


async def test_storage_change_is_refused_and_nothing_changes(
    tmp_path: Path, nats_url: str, nats_client: NATSClient, jetstream: JetStreamContext, unique_name: str
) -> None:
    stream, other = f"{unique_name.upper()}_ORDERS", f"{unique_name.upper()}_MORE"
    mapping = tmp_path / "m.yaml"
    write_mapping(mapping, nats_url, unique_name, [orders(unique_name)])
    assert (await cli("streams", "apply", str(mapping))).code == 0
    before = await raw_config(nats_client, stream)

    more = {"name": other, "subjects": [f"{unique_name}.more.>"]}
    write_mapping(mapping, nats_url, unique_name, [orders(unique_name, storage="memory", max_msgs=10), more])
    plan = await cli("streams", "plan", str(mapping))
    assert plan.code == 2, plan.out + plan.err
    assert f"{stream:<24} refused" in plan.out
    assert "refused: storage: JetStream cannot change a stream's storage type in place (file -> memory)" in plan.out
    assert f"{other:<24} create" in plan.out

    applied = await cli("streams", "apply", str(mapping), "--json")
    assert applied.code == 2
    assert [(s["stream"], s["outcome"]) for s in applied.json()["streams"]] == [
        (stream, "refused"),
        (other, "skipped"),
    ]
    assert await raw_config(nats_client, stream) == before
    assert not await exists(jetstream, other)  # all or nothing by default

    partial = await cli("streams", "apply", str(mapping), "--partial")
    assert partial.code == 2  # still not what the file says
    assert f"{other:<24} created" in partial.out
    assert await exists(jetstream, other)
    assert await raw_config(nats_client, stream) == before


async def test_streams_the_file_does_not_name_are_left_alone(
    tmp_path: Path, nats_url: str, nats_client: NATSClient, jetstream: JetStreamContext, unique_name: str
) -> None:
    foreign = f"{unique_name.upper()}_SOMEONE_ELSES"
    await jetstream.add_stream(
        js_api.StreamConfig(name=foreign, subjects=[f"{unique_name}.foreign.>"], storage=js_api.StorageType.MEMORY)
    )
    await jetstream.publish(f"{unique_name}.foreign.1", b"keep me")
    before = await raw_config(nats_client, foreign)

    mapping = write_mapping(tmp_path / "m.yaml", nats_url, unique_name, [orders(unique_name, max_msgs=1)])
    for args in (["plan"], ["apply"], ["plan", "--json"]):
        result = await cli("streams", *args, str(mapping))
        assert foreign not in result.out + result.err
    assert await raw_config(nats_client, foreign) == before
    assert (await jetstream.stream_info(foreign)).state.messages == 1


async def test_subjects_overlapping_a_stream_on_the_server_are_refused(
    tmp_path: Path, nats_url: str, jetstream: JetStreamContext, unique_name: str
) -> None:
    foreign = f"{unique_name.upper()}_LEGACY"
    await jetstream.add_stream(js_api.StreamConfig(name=foreign, subjects=[f"{unique_name}.orders.eu"]))
    mapping = write_mapping(tmp_path / "m.yaml", nats_url, unique_name, [orders(unique_name)])
    plan = await cli("streams", "plan", str(mapping))
    assert plan.code == 2
    assert f"overlaps '{unique_name}.orders.eu' of stream '{foreign}'" in plan.out
    assert (await cli("streams", "apply", str(mapping))).code == 2
    assert not await exists(jetstream, f"{unique_name.upper()}_ORDERS")
