"""devfsd._trioloop.wait_idle_readable: blocking the thread only while trio is idle."""

from __future__ import annotations

import select
import threading
import time

import pytest
import trio

from devfsd._trioloop import idle_parts, wait_idle_readable
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
@pytest.mark.parametrize("given_now", [False, True])
async def test_ends_at_trios_next_deadline(given_now: bool) -> None:
    """With or without the caller's ``time.perf_counter()`` (``now``: trio's
    own clock is then not asked)."""
    with socket_pair() as (a, _b):
        async with trio.open_nursery() as n:
            deadline = trio.current_time() + 0.05
            n.start_soon(trio.sleep_until, deadline)
            await trio.sleep(0.001)  # the sleeper has run: its deadline is registered
            start = time.monotonic()
            now = time.perf_counter() if given_now else None
            assert wait_idle_readable((a.fileno(),), 5.0, now) == []
            # Not before the deadline (less select(2)'s rounding), whenever
            # this task got to wait (a loaded CPU may have taken most of
            # the 50 ms before it did), and not the 5 s timeout.
            assert trio.current_time() >= deadline - 0.002
            assert time.monotonic() - start < 2.0


@needs_fast_paths
async def test_a_moved_deadline_does_not_end_the_wait() -> None:
    """A deadline moved later leaves its old entry first in trio's heap:
    the wait lasts until the one that counts, or the descriptor."""
    # (No await in the scope: its deadline is what counts here, not a cancellation.)
    with socket_pair() as (a, b), trio.CancelScope(deadline=trio.current_time() + 0.02) as cs:  # noqa: ASYNC100
        cs.deadline = trio.current_time() + 10  # the entry for +0.02 is stale
        t = _send_later(b, 0.1)
        assert wait_idle_readable((a.fileno(),), 5.0, time.perf_counter()) == [a.fileno()]
        t.join()


@pytest.mark.usefixtures("public_only")
async def test_public_only_never_blocks() -> None:
    with socket_pair() as (a, b):
        b.send(b"x")
        start = time.monotonic()
        assert wait_idle_readable((a.fileno(),), 5.0) == []
        assert time.monotonic() - start < 1.0


# -- idle_parts: what a module host's reader tests between two requests ---------------


def _readable(fd: int) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(0))


@needs_fast_paths
async def test_idle_parts_are_the_running_loops_own() -> None:
    # Each piece shows what it stands for.
    parts = idle_parts()
    assert parts is not None
    assert not parts.runq and not parts.jobs and not parts.jobs_once and not parts.deadlines._heap
    async with trio.open_nursery() as n:
        n.start_soon(trio.sleep, 0)
        assert parts.runq  # a task waits its turn
    trio.lowlevel.current_trio_token().run_sync_soon(lambda: None)
    assert parts.jobs
    await trio.sleep(0.01)
    assert not parts.jobs
    async with trio.open_nursery() as n:
        n.start_soon(trio.sleep, 5.0)
        await trio.sleep(0.01)
        assert parts.deadlines._heap  # a deadline
        n.cancel_scope.cancel()


@needs_fast_paths
async def test_the_epoll_descriptor_is_readable_when_anything_trio_waits_for_is_ready() -> None:
    # The host's reader waits in poll(2) on it and its pipe with no
    # timeout: it must wake for all that trio would wake for.
    parts = idle_parts()
    assert parts is not None
    await trio.sleep(0.01)
    assert not _readable(parts.epoll_fd)  # idle: nothing for trio
    with socket_pair() as (c, d):
        async with trio.open_nursery() as n:
            n.start_soon(trio.lowlevel.wait_readable, c)
            await trio.sleep(0.01)  # the task is in trio's epoll record of c
            assert not _readable(parts.epoll_fd)
            d.send(b"x")  # a driver's socket becomes readable
            assert _readable(parts.epoll_fd)
    await trio.sleep(0.01)
    assert not _readable(parts.epoll_fd)
    token = trio.lowlevel.current_trio_token()
    t = threading.Thread(target=token.run_sync_soon, args=(lambda: None,))
    t.start()  # a worker thread's end
    t.join()
    assert _readable(parts.epoll_fd)
    await trio.sleep(0.01)
    assert not _readable(parts.epoll_fd)


@pytest.mark.usefixtures("public_only")
async def test_no_idle_parts_with_the_fast_paths_off() -> None:
    assert idle_parts() is None
