"""ReplyParser (bridge/brokers/nats/replies.py) against nats-py's own Parser, on the same bytes.

A fake client records what each parser hands on: nats-py's `_process_msg` (and ping, pong, info,
err), or the routed handler. Whatever the chunking, the routed parser must hand on the same
messages in the same order, count them the same, and leave the rest to nats-py's path.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from nats.errors import ProtocolError
from nats.protocol.parser import Parser

from bridge.brokers.nats.replies import ReplyParser
from bridge.jetstream.direct_replies import listen_for_replies

ROUTED_SID = 7


class FakeSub:
    def __init__(self) -> None:
        self._received = 0


class FakeClient:
    """What the parsers call on nats-py's Client, recorded as events."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.stats = {"in_msgs": 0, "in_bytes": 0}
        self._subs: dict[int, FakeSub] = {ROUTED_SID: FakeSub(), 2: FakeSub()}

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        # As nats-py's: counted first, then handed to the subscription (if it is still there).
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        sub = self._subs.get(sid)
        if sub is None:
            return
        sub._received += 1
        self.events.append(("msg", sid, subject, reply, data, headers))

    async def _process_ping(self) -> None:
        self.events.append(("ping",))

    async def _process_pong(self) -> None:
        self.events.append(("pong",))

    async def _process_info(self, info: dict[str, Any]) -> None:
        self.events.append(("info", info))

    async def _process_err(self, message: str) -> None:
        self.events.append(("err", message))


def routed_parser(client: FakeClient) -> tuple[ReplyParser, list[tuple[Any, ...]]]:
    parser = ReplyParser(client)
    short: list[tuple[Any, ...]] = []

    def handle(replies: list[tuple[bytes, bytes]]) -> None:
        for subject, data in replies:
            short.append((subject, data))
            client.events.append(("msg", ROUTED_SID, subject, b"", data, None))

    parser.route(ROUTED_SID, handle)
    return parser, short


def stream(seed: int = 1, *, rare: bool = False) -> bytes:
    """PubAcks for the routed subscription among what else a publishing connection gets; with
    `rare`, also a status with headers (HMSG) and what only nats-py's parser reads (INFO, -ERR)."""
    rng = random.Random(seed)
    parts: list[bytes] = [b'INFO {"server_id":"x","max_payload":1048576}\r\n'] if rare else []
    for n in range(300):
        kind = rng.randrange(10 if rare else 9)
        body = b'{"stream":"S","seq":%d}' % n
        if kind < 6:
            parts.append(b"MSG _INBOX.abc.%d %d %d\r\n%s\r\n" % (n, ROUTED_SID, len(body), body))
        elif kind == 6:  # another subscription
            parts.append(b"MSG other.subject 2 %d\r\n%s\r\n" % (len(body), body))
        elif kind == 7:  # a reply subject: nats-py's path
            parts.append(b"MSG _INBOX.abc.%d %d reply.to %d\r\n%s\r\n" % (n, ROUTED_SID, len(body), body))
        elif kind == 8:
            parts.append(rng.choice([b"PING\r\n", b"PONG\r\n", b"+OK\r\n"]))
        else:  # a status with headers (no responders), or an error line: nats-py's parser
            header = b"NATS/1.0 503\r\n\r\n"
            parts.append(
                rng.choice(
                    [
                        b"HMSG _INBOX.abc.%d %d %d %d\r\n%s\r\n" % (n, ROUTED_SID, len(header), len(header), header),
                        b"-ERR 'Permissions Violation for Publish to x'\r\n",
                    ]
                )
            )
    parts.append(b"MSG _INBOX.abc.empty %d 0\r\n\r\n" % ROUTED_SID)  # an empty payload
    parts.append(b"MSG gone.sid 99 2\r\nhi\r\n")  # a subscription that no longer exists
    return b"".join(parts)


def plain_routed(data: bytes) -> int:
    """How many MSGs of `data` are for the routed subscription, without reply subject."""
    return sum(
        1
        for line in data.split(b"\r\n")
        if line.startswith(b"MSG ") and len(line.split()) == 4 and line.split()[2] == b"%d" % ROUTED_SID
    )


def chunks(data: bytes, how: str, seed: int = 3) -> list[bytes]:
    if how == "whole":
        return [data]
    if how == "bytes":
        return [data[i : i + 1] for i in range(len(data))]
    rng = random.Random(seed)
    out, at = [], 0
    while at < len(data):
        step = rng.randint(1, 200)
        out.append(data[at : at + step])
        at += step
    return out


async def run_both(data: bytes, how: str) -> tuple[FakeClient, FakeClient, ReplyParser, list[tuple[Any, ...]]]:
    theirs, ours = FakeClient(), FakeClient()
    reference = Parser(theirs)
    parser, short = routed_parser(ours)
    for piece in chunks(data, how):
        await reference.parse(piece)
        await parser.parse(piece)
    return theirs, ours, parser, short


@pytest.mark.parametrize("how", ["whole", "random", "bytes"])
async def test_what_a_publishing_connection_gets_takes_the_short_path_whole(how: str) -> None:
    data = stream()
    theirs, ours, parser, short = await run_both(data, how)
    assert ours.events == theirs.events
    assert ours.stats == theirs.stats
    assert {sid: sub._received for sid, sub in ours._subs.items()} == {
        sid: sub._received for sid, sub in theirs._subs.items()
    }
    assert not parser.buf
    assert len(short) == plain_routed(data) > 150  # however the reads cut the messages


@pytest.mark.parametrize("how", ["whole", "random", "bytes"])
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_with_what_only_nats_pys_parser_reads_the_same_messages_in_the_same_order(how: str, seed: int) -> None:
    theirs, ours, parser, short = await run_both(stream(seed, rare=True), how)
    assert ours.events == theirs.events
    assert ours.stats == theirs.stats
    assert not parser.buf
    if how != "whole":  # whole: nats-py's parser takes all after the INFO in front
        assert short, "the short path was never taken"


ODD_LINES = [
    b"MSG  _INBOX.abc.1  %d  5\r\nhello\r\n" % ROUTED_SID,  # two spaces: the general way
    b"MSG _INBOX.abc.1\t%d 5\r\nhello\r\n" % ROUTED_SID,  # a tab between fields
    b"MSG _INBOX.abc.1 00%d 005\r\nhello\r\n" % ROUTED_SID,  # leading zeros, as int() reads them
    b"MSG _INBOX.\xc3\xa9.1 %d 5\r\nhello\r\n" % ROUTED_SID,  # a subject past ASCII
    b"MSG _INBOX.abc.1 %d 0\r\n\r\n" % ROUTED_SID,  # an empty payload
    b"MSG _INBOX.%s %d 5\r\nhello\r\n" % (b"x" * 5000, ROUTED_SID),  # a control line past nats-py's limit
    b"MSG _INBOX.abc.1 %d 5\r\nhelloXX" % ROUTED_SID,  # no CRLF after the payload
]


@pytest.mark.parametrize("how", ["whole", "random", "bytes"])
@pytest.mark.parametrize("odd", ODD_LINES)
async def test_an_unusual_msg_among_pubacks_is_read_as_nats_py_reads_it(odd: bytes, how: str) -> None:
    """The run of common PubAcks is taken by offset; whatever stops it is read as nats-py reads it."""
    pubacks = b"".join(b"MSG _INBOX.abc.%d %d 2\r\nok\r\n" % (n, ROUTED_SID) for n in range(5))
    data = pubacks + odd + pubacks + b"PING\r\n"
    theirs, ours = FakeClient(), FakeClient()
    reference = Parser(theirs)
    parser, _ = routed_parser(ours)
    outcomes: list[type[BaseException] | None] = []
    for reader in (reference, parser):
        try:
            for piece in chunks(data, how):
                await reader.parse(piece)
        except Exception as error:  # what each parser raises is compared
            outcomes.append(type(error))
        else:
            outcomes.append(None)
    assert outcomes[0] == outcomes[1]
    assert ours.events == theirs.events
    assert ours.stats == theirs.stats


async def test_without_a_route_it_is_nats_pys_parser() -> None:
    data = stream(5)
    theirs, ours = FakeClient(), FakeClient()
    reference, parser = Parser(theirs), ReplyParser(ours)
    for piece in chunks(data, "random", 9):
        await reference.parse(piece)
        await parser.parse(piece)
    assert ours.events == theirs.events


async def test_unroute_sends_the_subscription_back_to_nats_pys_path() -> None:
    client = FakeClient()
    parser, short = routed_parser(client)
    parser.unroute(ROUTED_SID)
    await parser.parse(b"MSG _INBOX.a.1 %d 2\r\nok\r\n" % ROUTED_SID)
    assert short == []
    assert client.events == [("msg", ROUTED_SID, b"_INBOX.a.1", b"", b"ok", None)]


async def test_the_replies_of_one_read_come_in_one_call_and_what_follows_them_after_them() -> None:
    client = FakeClient()
    parser = ReplyParser(client)
    parser.route(ROUTED_SID, lambda replies: client.events.append(("run", [data for _, data in replies])))
    replies = b"".join(b"MSG s.%d %d 1\r\n%d\r\n" % (n, ROUTED_SID, n) for n in range(3))
    await parser.parse(replies + b"PING\r\n" + replies[:10])  # the last, cut inside its first reply
    assert client.events == [("run", [b"0", b"1", b"2"]), ("ping",)]
    await parser.parse(replies[10:] + b"MSG s.9 2 1\r\n9\r\n")  # then one of another subscription
    assert client.events[2:] == [("run", [b"0", b"1", b"2"]), ("msg", 2, b"s.9", b"", b"9", None)]
    assert client.stats == {"in_msgs": 7, "in_bytes": 7}


async def test_a_handler_that_raises_does_not_end_the_read_loop() -> None:
    client = FakeClient()
    parser = ReplyParser(client)
    seen: list[bytes] = []

    def handle(replies: list[tuple[bytes, bytes]]) -> None:
        if replies[0][1] == b"bad":
            raise ValueError("boom")
        seen.extend(data for _, data in replies)

    parser.route(ROUTED_SID, handle)
    await parser.parse(b"MSG s.1 %d 3\r\nbad\r\nPONG\r\nMSG s.2 %d 3\r\ntwo\r\n" % (ROUTED_SID, ROUTED_SID))
    assert seen == [b"two"]
    assert client.events == [("pong",)]


async def test_a_malformed_line_is_refused_as_nats_py_refuses_it() -> None:
    for bad in (b"MSG a b c d e f\r\nxx\r\n", b"BOGUS 1 2\r\n"):
        client = FakeClient()
        parser, _ = routed_parser(client)
        with pytest.raises(ProtocolError):
            await Parser(FakeClient()).parse(bad)
        with pytest.raises(ProtocolError):
            await parser.parse(bad)


class _Subscription:
    def __init__(self) -> None:
        self._id = ROUTED_SID
        self._pending_queue: Any = None


class _Client(FakeClient):
    def __init__(self) -> None:
        super().__init__()
        self._ps = ReplyParser(self)

    async def subscribe(self, subject: str, **_: Any) -> _Subscription:
        return _Subscription()


async def test_a_reply_its_owner_cannot_take_costs_only_itself() -> None:
    """listen_for_replies hands each reply of a run on alone: one that raises is logged, the
    others of its run still reach the publisher."""
    client = _Client()
    seen: list[str] = []

    def handle(token: str, data: bytes, headers: dict[str, str] | None) -> None:
        if data == b"bad":
            raise ValueError("boom")
        seen.append(token)

    await listen_for_replies(client, "_INBOX.p.", handle)  # type: ignore[arg-type]
    await client._ps.parse(
        b"".join(b"MSG _INBOX.p.%d %d 3\r\n%s\r\n" % (n, ROUTED_SID, d) for n, d in enumerate([b"one", b"bad", b"two"]))
    )
    assert seen == ["0", "2"]
