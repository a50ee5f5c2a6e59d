"""Control protocol streams (``trace``): vectors, order, any input; and the
server's side of one stream over a socket pair, with a fake API."""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import struct
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from devfsd.control.protocol import (
    Framer,
    ProtocolError,
    StreamEnded,
    StreamItems,
    StreamReader,
    StreamStarted,
    decode_trace_event,
    encode,
    error_reply,
    ok_reply,
    parse_request,
    stream_end,
    stream_items,
)
from devfsd.control.server import ControlServer
from devfsd.errors import ControlError
from devfsd.trace import TraceEvent, Tracer

if TYPE_CHECKING:
    from collections.abc import Iterator

    from devfsd.cdevsw import Lwp

#: A whole trace stream as the daemon sends it, byte for byte.
WIRE = (
    b'\x00\x00\x008{"ok":true,"result":{"dev":524,"major":null,"buffer":8}}'
    b'\x00\x00\x00_{"items":[[1700000000000000000,42,524,"read",1,1,0,7],'
    b'[1,42,524,"write",3,0,28,5]],"dropped":0}'
    b'\x00\x00\x00\x18{"items":[],"dropped":9}'
    b'\x00\x00\x00-{"end":true,"result":{"seen":11,"dropped":9}}'
)


def read_all(wire: bytes) -> list[Any]:
    f, r = Framer(), StreamReader()
    out = []
    f.feed(wire)
    while (m := f.next_message()) is not None:
        out.append(r.next_event(m))
    return out


def test_vector() -> None:
    start = ok_reply({"dev": 524, "major": None, "buffer": 8})
    items = [[1700000000000000000, 42, 524, "read", 1, 1, 0, 7], [1, 42, 524, "write", 3, 0, 28, 5]]
    msgs = [start, stream_items(items, 0), stream_items([], 9), stream_end({"seen": 11, "dropped": 9})]
    assert b"".join(encode(m) for m in msgs) == WIRE
    got = read_all(WIRE)
    assert got == [
        StreamStarted(result={"dev": 524, "major": None, "buffer": 8}),
        StreamItems(items=items, dropped=0),
        StreamItems(items=[], dropped=9),
        StreamEnded(result={"seen": 11, "dropped": 9}),
    ]
    assert [decode_trace_event(i) for i in got[1].items] == [
        TraceEvent(1700000000000000000, 42, 524, "read", 1, 1, 0, 7),
        TraceEvent(1, 42, 524, "write", 3, 0, errno.ENOSPC, 5),
    ]


def test_event_encodes_as_an_array() -> None:
    e = TraceEvent(1, 2, 3, "poll", 4, 5, 0, 6)
    wire = {"items": [[1, 2, 3, "poll", 4, 5, 0, 6]], "dropped": 0}
    assert json.loads(encode(stream_items([e], 0))[4:]) == wire


def test_refused_stream_raises_its_errno() -> None:
    with pytest.raises(ControlError) as ei:
        StreamReader().next_event(error_reply(errno.ENXIO, "No such device or address"))
    assert ei.value.errno == errno.ENXIO


@pytest.mark.parametrize(
    "msgs",
    [
        [stream_items([], 0)],  # items before the reply
        [ok_reply(), {"items": [], "dropped": -1}],
        [ok_reply(), {"items": [], "dropped": True}],
        [ok_reply(), {"items": {}, "dropped": 0}],
        [ok_reply(), {"items": [], "dropped": 0, "more": 1}],
        [ok_reply(), {"end": 1, "result": None}],
        [ok_reply(), ok_reply()],
        [ok_reply(), stream_end(), stream_items([], 0)],  # after the end
    ],
)
def test_out_of_order_or_malformed(msgs: list[dict[str, Any]]) -> None:
    r = StreamReader()
    for m in msgs[:-1]:
        r.next_event(m)
    with pytest.raises(ControlError) as ei:
        r.next_event(msgs[-1])
    assert ei.value.errno == errno.EBADMSG


@pytest.mark.parametrize(
    "item",
    [
        [1, 2, 3, "mmap", 4, 5, 0, 6],
        [1, 2, 3, "read", 4, 5, 0],
        [1, 2, 3, "read", 4, 5, 0, True],
        [1, 2, 3, "read", 4, 5.0, 0, 6],
        {"call": "read"},
        None,
    ],
)
def test_bad_trace_events(item: Any) -> None:
    with pytest.raises(ProtocolError) as ei:
        decode_trace_event(item)
    assert ei.value.errno == errno.EBADMSG


def test_trace_request_arguments() -> None:
    assert parse_request({"op": "trace", "path": "/dev/x"}) == (
        "trace",
        {"path": "/dev/x", "driver": None, "buffer": None, "count": None},
    )
    for bad in ({"op": "trace", "count": "3"}, {"op": "trace", "buffer": True}, {"op": "trace", "x": 1}):
        with pytest.raises(ProtocolError) as ei:
            parse_request(bad)
        assert ei.value.errno == errno.EINVAL


KEYS = st.sampled_from(["ok", "items", "dropped", "end", "result", "errno", "error"])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=9) | st.dictionaries(KEYS, c),
    max_leaves=20,
)


@given(st.lists(st.dictionaries(KEYS, JSON), max_size=6))
def test_any_messages_are_events_or_control_error(msgs: list[dict[str, Any]]) -> None:
    r = StreamReader()
    with contextlib.suppress(ControlError):
        for m in msgs:
            ev = r.next_event(m)
            if isinstance(ev, StreamItems):
                for item in ev.items:
                    with contextlib.suppress(ProtocolError):
                        assert isinstance(decode_trace_event(item), TraceEvent)


@given(st.binary(max_size=300))
def test_any_bytes_are_events_or_control_error(data: bytes) -> None:
    f, r = Framer(), StreamReader()
    f.feed(struct.pack(">I", 2) + b"{}" + data)
    with contextlib.suppress(ControlError):
        while (m := f.next_message()) is not None:
            r.next_event(m)


# -- the server's side, over a socket pair -------------------------------------


class FakeApi:
    """``trace`` and ``tracing`` only; remembers what is attached."""

    def __init__(self) -> None:
        self.attached: list[Tracer] = []

    async def trace(
        self, peer: Lwp, path: str | None, driver: str | None, buffer: int | None, count: int | None
    ) -> Tracer:
        if path == "/nonexistent":
            raise ControlError(errno.ENOENT)
        return Tracer(dev=1, buffer=buffer or 4, count=count)

    @contextmanager
    def tracing(self, tracer: Tracer) -> Iterator[None]:
        self.attached.append(tracer)
        try:
            yield
        finally:
            self.attached.remove(tracer)


def ev(n: int) -> TraceEvent:
    return TraceEvent(n, 42, 1, "read", 1, 1, 0, 0)


class Client:
    """The client's end of a served connection."""

    def __init__(self, sock: trio.socket.SocketType, api: FakeApi) -> None:
        self.sock, self.api = sock, api
        self.framer, self.reader = Framer(), StreamReader()

    async def recv(self) -> Any:
        while (m := self.framer.next_message()) is None:
            data = await self.sock.recv(65536)
            assert data, "server closed"
            self.framer.feed(data)
        return self.reader.next_event(m)

    async def start(self, **args: Any) -> Tracer:
        """Ask for a trace and wait until the server has attached it."""
        self.reader = StreamReader()
        await self.sock.send(encode({"op": "trace", **args}))
        assert isinstance(await self.recv(), StreamStarted)
        await trio.testing.wait_all_tasks_blocked()
        return self.api.attached[-1]


@contextlib.asynccontextmanager
async def served(api: FakeApi) -> Any:
    a, b = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server = ControlServer(api, listener)  # type: ignore[arg-type]
    try:
        async with trio.open_nursery() as n:
            n.start_soon(server._serve_one, a)
            yield Client(b, api)
            n.cancel_scope.cancel()
    finally:
        b.close()
        listener.close()


async def test_refused_then_the_connection_goes_on() -> None:
    api = FakeApi()
    async with served(api) as c:
        await c.sock.send(encode({"op": "trace", "path": "/nonexistent"}))
        with pytest.raises(ControlError) as ei:
            await c.recv()
        assert ei.value.errno == errno.ENOENT
        await c.start(path="/x")
        assert len(api.attached) == 1


async def test_unhashable_op_is_an_error_reply() -> None:
    api = FakeApi()
    async with served(api) as c:
        await c.sock.send(encode({"op": ["trace"]}))
        with pytest.raises(ControlError) as ei:
            await c.recv()
        assert ei.value.errno == errno.EINVAL
        await c.start(path="/x")  # and the connection goes on


async def test_slow_client_gets_drops_then_the_end() -> None:
    api = FakeApi()
    async with served(api) as c:
        t = await c.start(path="/x", buffer=4)
        for n in range(10):  # nothing awaits between pushes: the sender cannot keep up
            t.push(ev(n))
        assert await c.recv() == StreamItems(items=[list(ev(n)) for n in range(4)], dropped=6)
        c.sock.shutdown(socket.SHUT_WR)  # the end, please
        assert await c.recv() == StreamEnded(result={"seen": 10, "dropped": 6})
        assert await c.sock.recv(10) == b""  # and the server closes
        assert api.attached == []


async def test_count_ends_the_stream() -> None:
    api = FakeApi()
    async with served(api) as c:
        t = await c.start(path="/x", count=2)
        for n in range(3):  # the third is past the count: ignored
            t.push(ev(n))
        items: list[Any] = []
        while not isinstance(m := await c.recv(), StreamEnded):
            items += m.items
        assert items == [list(ev(0)), list(ev(1))]
        assert m.result == {"seen": 2, "dropped": 0}
        assert api.attached == []


async def test_hang_up_detaches() -> None:
    api = FakeApi()
    async with served(api) as c:
        await c.start(path="/x")
        assert len(api.attached) == 1
        c.sock.close()
        await trio.testing.wait_all_tasks_blocked()
        assert api.attached == []


async def test_handle_refuses_a_stream_op() -> None:
    server = ControlServer(FakeApi(), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))  # type: ignore[arg-type]
    try:
        reply = await server.handle({"op": "trace", "path": "/x"}, None)  # type: ignore[arg-type]
    finally:
        server.sock.close()
    assert reply["ok"] is False and reply["errno"] == errno.EINVAL
