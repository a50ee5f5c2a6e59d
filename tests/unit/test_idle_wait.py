"""devfsd._trioloop.wait_idle_readable: blocking the thread only while trio is idle."""

from __future__ import annotations

import threading
import time

import pytest
import trio

from devfsd._trioloop import wait_idle_readable
from tests.unit.conftest import needs_fast_paths
from tests.unit.sockets import socket_pair


def _send_later(sock: object, delay: float) -> threading.Thread:
    def body() -> None:
        time.sleep(delay)
        sock.send(b"x")  # type: ignore[attr-defined]

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t


@needs_fast_paths
async def test_returns_the_descriptor_that_became_readable() -> None:
    with socket_pair() as (a, b):
        t = _send_later(b, 0.002)
        assert wait_idle_readable((a.fileno(),), 5.0) == [a.fileno()]
        t.join()
        assert a.recv(1) == b"x"


@needs_fast_paths
async def test_gives_up_after_its_timeout() -> None:
    with socket_pair() as (a, _b):
        start = time.monotonic()
        assert wait_idle_readable((a.fileno(),), 0.003) == []
        assert 0.003 <= time.monotonic() - start < 1.0


@needs_fast_paths
async def test_never_waits_while_a_task_is_runnable() -> None:
    with socket_pair() as (a, b):
        b.send(b"x")
        async with trio.open_nursery() as n:
            n.start_soon(trio.sleep, 0)  # in the run queue until this step ends
            assert wait_idle_readable((a.fileno(),), 5.0) == []


@needs_fast_paths
async def test_ends_when_something_trio_waits_for_is_ready() -> None:
    with socket_pair() as (a, _b), socket_pair() as (c, d):
        async with trio.open_nursery() as n:
            n.start_soon(trio.lowlevel.wait_readable, c)
            await trio.sleep(0.01)  # the task is in trio's epoll record of c
            t = _send_later(d, 0.002)
            start = time.monotonic()
            assert wait_idle_readable((a.fileno(),), 5.0) == []
            assert time.monotonic() - start < 2.0
            t.join()


@needs_fast_paths
async def test_ends_at_trios_next_deadline() -> None:
    with socket_pair() as (a, _b):
        async with trio.open_nursery() as n:
            n.start_soon(trio.sleep, 0.05)
            await trio.sleep(0.001)  # the sleeper has run: its deadline is registered
            start = time.monotonic()
            assert wait_idle_readable((a.fileno(),), 5.0) == []
            assert time.monotonic() - start < 2.0


@pytest.mark.usefixtures("public_only")
async def test_public_only_never_blocks() -> None:
    with socket_pair() as (a, b):
        b.send(b"x")
        start = time.monotonic()
        assert wait_idle_readable((a.fileno(),), 5.0) == []
        assert time.monotonic() - start < 1.0
