"""The facts behind the durability posture (bridge.durability), read from the brokers, read-only.

- NATS: each stream's replicas, storage and peers come from stream info. `sync_interval` is a
  server setting JetStream never tells a client; a server's monitoring endpoint shows it
  (/varz `jetstream.config.sync_interval`, `sync_always`), so it is read only from the URLs
  listed in `nats.monitor_urls`, and is "unknown" without them.
- RabbitMQ (bridge.brokers.rabbitmq.legacy): a passive declare answers alike for a classic and a
  quorum queue, so queue types, members and which legacy queues are bound to a shadowed exchange
  come from the management API (`sources.<name>.management`). Without it a queue route's legacy
  side is unknown; a stream route reads a stream queue by definition, so that one is known
  either way. Queues behind exchange-to-exchange bindings are not followed.
- Kafka (bridge.brokers.kafka.legacy): the admin client describes the topics (each partition's
  replica set) and their `min.insync.replicas` and `flush.messages`. No consumer, no group.

Credentials travel in headers, never in a URL that is printed; errors show URLs with the
password as `***`. Every look has a short timeout, and one that fails is a "problem" line
and an unknown, never an exception: dry-run and status still report everything else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import aiohttp
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from bridge.brokers import source_broker
from bridge.brokers.http import HttpLookError, get_json, split_credentials
from bridge.brokers.legacy import LegacyView
from bridge.config.model import BridgeConfig
from bridge.config.routes import RouteConfig
from bridge.config.streams import StreamConfig
from bridge.durability.assess import DurabilityReport, build_report
from bridge.durability.legacy import NOT_REVEALED
from bridge.durability.sync import StreamPosture, SyncSetting, stream_sync, sync_from_varz
from bridge.logs import redact_url

TIMEOUT = 5.0  # seconds per look: dry-run and status must answer quickly, also when something is down


# --------------------------------------------------------------------------- NATS


def _varz_url(url: str) -> str:
    base = url.rstrip("/")
    return base if base.endswith("/varz") else f"{base}/varz"


async def read_sync(config: BridgeConfig) -> tuple[dict[str, SyncSetting], list[str]]:
    """server name -> its sync setting, from every `nats.monitor_urls` /varz; and the problems."""
    found: dict[str, SyncSetting] = {}
    problems: list[str] = []
    if not config.nats.monitor_urls:
        return found, problems
    async with aiohttp.ClientSession() as session:
        for secret in config.nats.monitor_urls:
            url, auth = split_credentials(_varz_url(secret.get_secret_value()))
            what = f"NATS monitoring at {redact_url(_varz_url(secret.get_secret_value()))}"
            try:
                varz = await get_json(session, url, auth, what, TIMEOUT)
            except HttpLookError as error:
                problems.append(str(error))
                continue
            if not isinstance(varz, Mapping):
                problems.append(f"{what}: no /varz there")
                continue
            name = str(varz.get("server_name") or varz.get("server_id") or url)
            found[name] = sync_from_varz(varz)
    return found, problems


def _storage(storage: js_api.StorageType | str | None) -> str:
    """nats-py leaves a listed stream's storage as the server's text, and an enum elsewhere."""
    if storage is None:
        return "file"
    return storage.value if isinstance(storage, js_api.StorageType) else str(storage)


def postures(
    names: Sequence[str],
    infos: Mapping[str, js_api.StreamInfo],
    declared: Mapping[str, StreamConfig],
    by_server: Mapping[str, SyncSetting],
) -> dict[str, StreamPosture]:
    """Each named stream as the server holds it (its settings win: `run` keeps them), else as the
    file declares it; names neither knows are left out."""
    result: dict[str, StreamPosture] = {}
    for name in names:
        info = infos.get(name)
        if info is not None:
            storage = info.config.storage
            peers = None
            if info.cluster is not None and info.cluster.leader:
                peers = [info.cluster.leader, *(peer.name for peer in info.cluster.replicas or [] if peer.name)]
            result[name] = StreamPosture(
                name,
                info.config.num_replicas or 1,
                _storage(storage),
                stream_sync(peers, by_server, NOT_REVEALED),
                "server",
            )
        elif name in declared:
            stream = declared[name]
            result[name] = StreamPosture(
                name, stream.replicas, stream.storage.value, stream_sync(None, by_server, NOT_REVEALED), "file"
            )
    return result


# --------------------------------------------------------------------------- the legacy side


async def legacy_views(
    config: BridgeConfig, routes: Sequence[tuple[str, RouteConfig]]
) -> tuple[dict[str, LegacyView], list[str]]:
    """route label (`service/route`) -> what its legacy side promises; and the problems. One
    management session or admin client per source."""
    per_source: dict[str, list[tuple[str, RouteConfig]]] = {}
    for service, route in routes:
        per_source.setdefault(route.source, []).append((service, route))
    every_route = list(config.routes())
    looks = [
        source_broker(name, config.sources[name]).legacy(members, every_route=every_route, seconds=TIMEOUT)
        for name, members in per_source.items()
    ]
    views: dict[str, LegacyView] = {}
    problems: list[str] = []
    for found, trouble in await asyncio.gather(*looks):
        views.update(found)
        problems += trouble
    return views, problems


# --------------------------------------------------------------------------- together


async def gather_legacy_and_sync(
    config: BridgeConfig, routes: Sequence[tuple[str, RouteConfig]]
) -> tuple[dict[str, LegacyView], dict[str, SyncSetting], list[str]]:
    """Both looks that do not need NATS itself, at once."""
    (views, legacy_problems), (by_server, sync_problems) = await asyncio.gather(
        legacy_views(config, routes), read_sync(config)
    )
    return views, by_server, [*sync_problems, *legacy_problems]


def assemble(
    config: BridgeConfig,
    route_streams: Mapping[str, Sequence[str]],
    infos: Mapping[str, js_api.StreamInfo],
    views: Mapping[str, LegacyView],
    by_server: Mapping[str, SyncSetting],
    problems: Sequence[str],
) -> DurabilityReport:
    """The report from what was read (pure from here on)."""
    declared = {stream.name: stream for stream in config.all_streams()}
    names = sorted({name for streams in route_streams.values() for name in streams})
    streams = postures(names, infos, declared, by_server)
    routes = {
        label: (views.get(label, LegacyView(unknown="not looked at")), list(s)) for label, s in route_streams.items()
    }
    return build_report(streams, routes, problems)


async def read_report(
    config: BridgeConfig,
    js: JetStreamContext,
    routes: Sequence[tuple[str, RouteConfig]],
    route_streams: Mapping[str, Sequence[str]],
) -> DurabilityReport:
    """Everything `status` shows about durability, for these routes."""
    looks = asyncio.ensure_future(gather_legacy_and_sync(config, routes))
    infos: dict[str, js_api.StreamInfo] = {}
    trouble: list[str] = []
    names = sorted({name for streams in route_streams.values() for name in streams})
    for name in names:
        try:
            infos[name] = await js.stream_info(name)
        except NotFoundError:
            continue  # `run` creates it as the file says
        except NatsError as error:
            trouble.append(f"stream {name}: {str(error) or type(error).__name__}")
        except TimeoutError:
            trouble.append(f"stream {name}: no answer from JetStream")
    views, by_server, problems = await looks
    return assemble(config, route_streams, infos, views, by_server, [*problems, *trouble])
