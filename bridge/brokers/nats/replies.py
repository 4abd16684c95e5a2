"""nats-py's protocol parser with a short path for the publisher's PubAcks.

Every message the bridge stores comes back as one PubAck, a `MSG <inbox>.<token> <sid> <size>`
with a small JSON body. nats-py parses each with a regular expression, fills a dict, then
awaits `_process_msg`, which awaits a header parse, builds a `Msg`, checks for JetStream flow
control and queues it for the subscription: about a fifth of the bridge's CPU on Kafka. The
publisher needs only the subject and the body, and handles them synchronously.

Once a subscription is routed to a handler (`route`), `ReplyParser` reads what such a
connection mostly gets itself: a `MSG` without reply subject for that subscription goes from
the buffer to the handler, counted in the client's and the subscription's counters as nats-py
counts it; any other `MSG` or `HMSG` (a status such as no responders) goes to nats-py's
`_process_msg` exactly as its parser would send it, PING, PONG and +OK as its parser handles
them; a message cut by the end of a read waits for the next. At anything else (INFO, -ERR, a
malformed line) nats-py's own `parse` takes the rest of the buffer, in the order it arrived.
tests/unit/test_nats_reply_parser.py feeds the same byte
streams to both parsers and compares what each hands on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from nats.protocol.parser import AWAITING_CONTROL_LINE, MAX_CONTROL_LINE_SIZE, Parser

log = logging.getLogger(__name__)

ReplyHandler = Callable[[bytes, bytes], None]  # (subject, payload)

_MSG = b"MSG "
_HMSG = b"HMSG "
_PING = b"PING\r\n"
_PONG = b"PONG\r\n"
_OK = b"+OK\r\n"
_CRLF = b"\r\n"


class ReplyParser(Parser):
    """nats-py's Parser; `MSG`s of routed subscriptions skip the general path (see the module)."""

    def __init__(self, nc: Any = None) -> None:
        super().__init__(nc)
        self._routes: dict[int, ReplyHandler] = {}

    def route(self, sid: int, handle: ReplyHandler) -> None:
        """Hand `MSG`s of subscription `sid` to `handle`; it must not raise or await (it is called
        inside the client's read loop), and the subscription must have no message limit."""
        self._routes[sid] = handle

    def unroute(self, sid: int) -> None:
        self._routes.pop(sid, None)

    async def parse(self, data: bytes = b"") -> None:
        buf = self.buf
        buf.extend(data)
        if self._routes and await self._parse_common(buf):
            return
        if buf:
            await super().parse()

    async def _parse_common(self, buf: bytearray) -> bool:
        """Take what a publishing connection mostly gets (MSG, HMSG, PING, PONG, +OK) off the
        front of `buf` as nats-py's parser would, routed MSGs to their handler. True: the rest is the start
        of such a message, to wait for; False: anything else, for nats-py's parser."""
        nc = self.nc
        routes = self._routes
        while buf and self.state == AWAITING_CONTROL_LINE:
            if buf.startswith(_MSG):
                skip = 4
            elif buf.startswith(_HMSG):
                skip = 5
            elif await self._control(buf):
                continue
            else:
                return False
            end = buf.find(_CRLF, skip, MAX_CONTROL_LINE_SIZE)
            if end < 0:
                return len(buf) < MAX_CONTROL_LINE_SIZE
            line = _control_line(bytes(buf[skip:end]), 1 if skip == 4 else 2)
            if line is None:
                return False  # malformed: nats-py's parser says so
            subject, sid, reply, header_size, size = line
            start = end + 2
            stop = start + size
            if len(buf) < stop + 2:
                return True
            if header_size:
                headers: bytes | None = bytes(buf[start : start + header_size])
                payload = bytes(buf[start + header_size : stop])
            else:
                headers, payload = None, bytes(buf[start:stop])
            del buf[: stop + 2]
            handle = None if reply or headers is not None else routes.get(sid)
            if handle is None:
                await nc._process_msg(sid, subject, reply, payload, headers)
            else:
                self._hand_on(sid, subject, payload, handle)
        return False

    async def _control(self, buf: bytearray) -> bool:
        """PING, PONG or +OK taken off the front of `buf` as nats-py's parser takes them; False
        for anything else."""
        if buf.startswith(_PING):
            del buf[: len(_PING)]
            await self.nc._process_ping()
        elif buf.startswith(_PONG):
            del buf[: len(_PONG)]
            await self.nc._process_pong()
        elif buf.startswith(_OK):
            del buf[: len(_OK)]
        else:
            return False
        return True

    def _hand_on(self, sid: int, subject: bytes, payload: bytes, handle: ReplyHandler) -> None:
        nc = self.nc
        nc.stats["in_msgs"] += 1
        nc.stats["in_bytes"] += len(payload)
        sub = nc._subs.get(sid)
        if sub is None:
            return  # unsubscribed meanwhile: nats-py drops it too
        sub._received += 1
        try:
            handle(subject, payload)
        except Exception:
            # Raised into nats-py's read loop it would end the connection.
            log.exception("handling a reply on %r failed", subject)


def _control_line(line: bytes, numbers: int) -> tuple[bytes, int, bytes, int, int] | None:
    """(subject, sid, reply, header size, total size) of a MSG (`numbers` 1: the size) or HMSG
    (2: header size and total size) line after its verb; None when it is not one nats-py reads."""
    fields = line.split()
    if len(fields) == 2 + numbers:
        reply = b""
    elif len(fields) == 3 + numbers:
        reply = fields[2]
    else:
        return None
    sid_text, counts = fields[1], fields[-numbers:]
    if not (sid_text.isdigit() and all(count.isdigit() for count in counts)):
        return None
    return fields[0], int(sid_text), reply, int(counts[0]) if numbers == 2 else 0, int(counts[-1])
