"""Every stream on a server. JetStream answers a listing a page (256 streams) at a time, and a
caller that reads only the first page misses streams on a busy server."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js import api as js_api


async def all_stream_infos(js: JetStreamContext) -> dict[str, js_api.StreamInfo]:
    """Every stream on the server (all pages), by name."""
    found: dict[str, js_api.StreamInfo] = {}
    offset = 0
    while page := await js.streams_info(offset=offset):
        offset += len(page)
        for info in page:
            if info.config.name:
                found[info.config.name] = info
    return found
