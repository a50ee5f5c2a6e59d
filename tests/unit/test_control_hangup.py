"""A control request whose client goes is cancelled (devfsd.control.server,
``watch_hangup``); one whose client only half-closed, or sends its next
request meanwhile, is answered. Over a socket pair, with a fake API whose
``modload`` waits until the test lets it go."""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import socket
from typing import TYPE_CHECKING, Any

import trio
import trio.testing

from devfsd.control.protocol import Framer, decode_reply, encode
from devfsd.control.server import ControlServer, watch_hangup

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import pytest

    from devfsd.cdevsw import Lwp


class SlowApi:
    """``modload`` waits for ``go`` (or for ever), noting how it ended."""

    def __init__(self) -> None:
        self.go = trio.Event()
        self.started = trio.Event()
        self.ended: list[str] = []

    async def modload(self, peer: Lwp, module: str, props: Any, isolated: bool | None = None) -> str:
        self.started.set()
        try:
            await self.go.wait()
        except trio.Cancelled:
            self.ended.append("cancelled")
            raise
        self.ended.append("done")
        return module

    async def ping(self, peer: Lwp) -> None:
        return None


@contextlib.asynccontextmanager
async def served(api: SlowApi) -> AsyncIterator[tuple[trio.socket.SocketType, trio.Event]]:
    """The client's end of a connection ``_serve_one`` serves, and an event
    set when the server is done with it."""
    a, b = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server = ControlServer(api, listener)  # type: ignore[arg-type]
    done = trio.Event()

    async def serve() -> None:
        try:
            await server._serve_one(a)
        finally:
            done.set()

    try:
        async with trio.open_nursery() as n:
            n.start_soon(serve)
            yield b, done
            n.cancel_scope.cancel()
    finally:
        b.close()
        listener.close()


async def replies(sock: trio.socket.SocketType, n: int) -> list[Any]:
    framer, out = Framer(), list[Any]()
    while len(out) < n:
        while (m := framer.next_message()) is not None:
            out.append(decode_reply(m))
        if len(out) < n:
            data = await sock.recv(65536)
            assert data, "server closed"
            framer.feed(data)
    return out


MODLOAD = encode({"op": "modload", "module": "slow", "props": {}})


async def test_a_request_whose_client_closes_is_cancelled(caplog: pytest.LogCaptureFixture) -> None:
    api = SlowApi()
    with caplog.at_level(logging.WARNING, "devfsd.control.server"):
        async with served(api) as (sock, done):
            await sock.send(MODLOAD)
            await api.started.wait()
            sock.close()
            with trio.fail_after(5):
                await done.wait()
    assert api.ended == ["cancelled"]
    assert "control request 'modload' of 'slow' (pid " in caplog.text
    assert "cancelled: its client went" in caplog.text


async def test_a_half_closed_client_gets_its_reply() -> None:
    api = SlowApi()
    async with served(api) as (sock, _):
        await sock.send(MODLOAD)
        sock.shutdown(socket.SHUT_WR)
        await api.started.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert api.ended == []  # its EOF woke nothing: no cancel, no spin
        api.go.set()
        with trio.fail_after(5):
            assert await replies(sock, 1) == ["slow"]
    assert api.ended == ["done"]


async def test_a_pipelined_request_is_answered_after_the_first() -> None:
    api = SlowApi()
    async with served(api) as (sock, _):
        await sock.send(MODLOAD + encode({"op": "ping"}) + MODLOAD)
        await api.started.wait()
        await trio.testing.wait_all_tasks_blocked()
        api.go.set()
        with trio.fail_after(5):
            got = await replies(sock, 3)
    assert got == ["slow", None, "slow"]
    assert api.ended == ["done", "done"]


async def test_a_client_that_closes_with_replies_unread_is_gone_too() -> None:
    # Its close with our bytes unread is ECONNRESET (EPOLLERR) as well as EPOLLHUP.
    a, b = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a:
        await a.send(b"unread")
        b.close()
        with trio.fail_after(5):
            assert await watch_hangup(a) is True


async def test_watch_hangup_sleeps_through_data_and_half_close() -> None:
    a, b = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        result: list[bool] = []
        ended = trio.Event()

        async def watch() -> None:
            result.append(await watch_hangup(a))
            ended.set()

        async with trio.open_nursery() as n:
            n.start_soon(watch)
            await b.send(b"x" * 1000)
            b.shutdown(socket.SHUT_WR)
            await trio.testing.wait_all_tasks_blocked()
            assert result == []
            assert await a.recv(2000) == b"x" * 1000  # nothing was read for it
            b.close()
            with trio.fail_after(5):
                await ended.wait()
        assert result == [True]


async def test_without_an_epoll_the_request_runs_unwatched(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_epoll(sizehint: int = -1, flags: int = 0) -> select.epoll:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(select, "epoll", no_epoll)
    a, b = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert await watch_hangup(a) is False
    api = SlowApi()
    async with served(api) as (sock, _):
        await sock.send(MODLOAD)
        await api.started.wait()
        api.go.set()
        with trio.fail_after(5):
            assert await replies(sock, 1) == ["slow"]
