"""nats-py's protocol parser with a short path for the publisher's PubAcks.

Every message the bridge stores comes back as one PubAck, a `MSG <inbox>.<token> <sid> <size>`
with a small JSON body. nats-py parses each with a regular expression, fills a dict, then
awaits `_process_msg`, which awaits a header parse, builds a `Msg`, checks for JetStream flow
control and queues it for the subscription: about a fifth of the bridge's CPU on Kafka. The
publisher needs only the subject and the body, and handles them synchronously.

Once a subscription is routed to a handler (`route`), `ReplyParser` reads what such a
connection mostly gets itself: the `MSG`s without reply subject for that subscription go from
the buffer to the handler, counted in the client's and the subscription's counters as nats-py
counts them — one call per run of them in a read (a read of 32 KiB holds hundreds of
PubAcks), handed over before anything that follows them is, so the order stays the stream's;
any other `MSG` or `HMSG` (a status such as no responders) goes to nats-py's
`_process_msg` exactly as its parser would send it, PING, PONG and +OK as its parser handles
them; a message cut by the end of a read waits for the next. At anything else (INFO, -ERR, a
malformed line) nats-py's own `parse` takes the rest of the buffer, in the order it arrived.
tests/unit/test_nats_reply_parser.py feeds the same byte
streams to both parsers and compares what each hands on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from nats.protocol.parser import AWAITING_CONTROL_LINE, MAX_CONTROL_LINE_SIZE, Parser

log = logging.getLogger(__name__)

ReplyHandler = Callable[[list[tuple[bytes, bytes]]], None]  # a run of replies: (subject, payload), in order

_MSG = b"MSG "
_HMSG = b"HMSG "
_PING = b"PING\r\n"
_PONG = b"PONG\r\n"
_OK = b"+OK\r\n"
_CRLF = b"\r\n"
# A MSG without reply subject as `_control_line` reads it (single spaces; `\S` and `\d` are the
# bytes that `bytes.split` and `isdigit` take): the shape nearly every PubAck has.
_PLAIN_MSG = re.compile(rb"MSG (\S+) (\d+) (\d+)\r\n").match


class ReplyParser(Parser):
    """nats-py's Parser; `MSG`s of routed subscriptions skip the general path (see the module)."""

    def __init__(self, nc: Any = None) -> None:
        super().__init__(nc)
        self._routes: dict[int, ReplyHandler] = {}

    def route(self, sid: int, handle: ReplyHandler) -> None:
        """Hand `MSG`s of subscription `sid` to `handle`, each run of them in a read in one call; it
        must not raise or await (it is called inside the client's read loop), and the
        subscription must have no message limit."""
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
        front of `buf` as nats-py's parser would, routed MSGs to their handler. True: the rest is
        the start of such a message, to wait for; False: anything else, for nats-py's parser."""
        nc = self.nc
        routes = self._routes
        run: list[tuple[bytes, bytes]] = []  # routed replies not handed on yet, all of one sid
        run_sid = 0
        try:
            while buf and self.state == AWAITING_CONTROL_LINE:
                if buf.startswith(_MSG):
                    cut, run_sid = self._take_routed_run(buf, run, run_sid)
                    if cut:
                        continue
                if buf.startswith((_MSG, _HMSG)):
                    taken = _take_message(buf)
                    if isinstance(taken, bool):
                        return taken
                    subject, sid, reply, headers, payload = taken
                    if reply or headers is not None or sid not in routes:
                        self._hand_on(run_sid, run)  # what came before goes first
                        await nc._process_msg(sid, subject, reply, payload, headers)
                        continue
                    if sid != run_sid:
                        self._hand_on(run_sid, run)
                        run_sid = sid
                    run.append((subject, payload))
                    continue
                self._hand_on(run_sid, run)
                if not await self._control(buf):
                    return False
        finally:
            self._hand_on(run_sid, run)
        return False

    def _take_routed_run(self, buf: bytearray, run: list[tuple[bytes, bytes]], run_sid: int) -> tuple[int, int]:
        """The common shape, a run of them at a time: each `MSG <subject> <sid> <size>` of a routed
        subscription complete at the front of `buf`, added to `run` (handed on first when the sid
        changes) and cut off the buffer at once. (Bytes taken, the run's sid); the first message
        of any other shape stops it, for the general way."""
        routes = self._routes
        taken = 0
        while (match := _PLAIN_MSG(buf, taken)) is not None:
            start = match.end()
            sid = int(match[2])
            if start - taken > MAX_CONTROL_LINE_SIZE or sid not in routes:
                break
            stop = start + int(match[3])
            if len(buf) < stop + 2:
                break
            if sid != run_sid:
                self._hand_on(run_sid, run)
                run_sid = sid
            run.append((match[1], bytes(buf[start:stop])))
            taken = stop + 2
        if taken:
            del buf[:taken]
        return taken, run_sid

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

    def _hand_on(self, sid: int, run: list[tuple[bytes, bytes]]) -> None:
        """Count the replies in `run` as nats-py counts each message, hand them to their handler
        in one call, and empty `run`."""
        if not run:
            return
        replies = run.copy()
        run.clear()
        nc = self.nc
        stats = nc.stats
        stats["in_msgs"] += len(replies)
        stats["in_bytes"] += sum([len(payload) for _, payload in replies])
        sub = nc._subs.get(sid)
        handle = self._routes.get(sid)
        if sub is None or handle is None:
            return  # unsubscribed meanwhile: nats-py drops them too
        sub._received += len(replies)
        try:
            handle(replies)
        except Exception:
            # Raised into nats-py's read loop it would end the connection.
            log.exception("handling %d replies of subscription %d failed", len(replies), sid)


def _take_message(buf: bytearray) -> tuple[bytes, int, bytes, bytes | None, bytes] | bool:
    """The MSG or HMSG at the front of `buf`, taken off it: (subject, sid, reply, headers or None,
    payload); True when it is not all there yet, False when it is malformed (nats-py's parser says so)."""
    skip = 4 if buf.startswith(_MSG) else 5
    end = buf.find(_CRLF, skip, MAX_CONTROL_LINE_SIZE)
    if end < 0:
        return len(buf) < MAX_CONTROL_LINE_SIZE
    line = _control_line(bytes(buf[skip:end]), 1 if skip == 4 else 2)
    if line is None:
        return False
    subject, sid, reply, header_size, size = line
    start = end + 2
    stop = start + size
    if len(buf) < stop + 2:
        return True
    headers = bytes(buf[start : start + header_size]) if header_size else None
    payload = bytes(buf[start + header_size : stop])
    del buf[: stop + 2]
    return subject, sid, reply, headers, payload


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
    sid_text, size = fields[1], fields[-1]
    if not (sid_text.isdigit() and size.isdigit()):
        return None
    if numbers == 1:
        return fields[0], int(sid_text), reply, 0, int(size)
    header_size = fields[-2]
    if not header_size.isdigit():
        return None
    return fields[0], int(sid_text), reply, int(header_size), int(size)
