"""devfsd._trioloop: trio's instruments on the swapped-in dict, readers taking turns, pyfuse3's loop.

Each fast path's own test needs the fast paths on (``needs_fast_paths``);
``test_public_only_leaves_trio_and_pyfuse3_alone`` is the other way.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import pyfuse3
import pytest
import trio
import trio.abc
import trio.testing

from devfsd import _trioloop
from devfsd._trioloop import (
    READY,
    TurnReaders,
    fast_instruments,
    fast_io_wakeups,
    lean_fuse_loop,
    move_deadline,
)
from tests.unit.conftest import needs_fast_paths
from tests.unit.sockets import assert_fd_free, socket_pair


class Steps(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0
        self.spawned: list[str] = []

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned.append(task.name)


@needs_fast_paths
def test_instruments_given_to_run_and_added_later_are_called() -> None:
    early, late = Steps(), Steps()

    async def main() -> None:
        assert fast_instruments()
        # A dict: ``in`` at C speed, the point of the swap.
        assert _trioloop.PRIVATE is not None
        instruments: object = _trioloop.PRIVATE.run_context.runner.instruments
        assert isinstance(instruments, dict)
        assert not fast_instruments()  # already swapped: left as it is
        trio.lowlevel.add_instrument(late)
        async with trio.open_nursery() as n:
            n.start_soon(trio.sleep, 0, name="child")
        trio.lowlevel.remove_instrument(late)
        before = late.steps
        await trio.lowlevel.checkpoint()
        assert late.steps == before  # removed: no longer called
        with pytest.raises(KeyError):
            trio.lowlevel.remove_instrument(late)

    trio.run(main, instruments=[early])
    assert early.steps > 0 and "child" in early.spawned
    assert late.steps > 0 and "child" in late.spawned


def test_outside_trio_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        fast_instruments()


class Stepped(trio.abc.Instrument):
    """Which tasks trio ran, in order."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.ran.append(task.name)


@needs_fast_paths
async def test_turn_readers_take_turns_in_order() -> None:
    # Each readiness wakes one waiter, first come first served; the next in
    # line is put in trio's epoll record without running (the point).
    with socket_pair() as (r, w):
        turns, fd = TurnReaders(), r.fileno()
        got: list[tuple[str, bytes]] = []
        steps = Stepped()

        async def reader(name: str) -> None:
            await turns.wait(fd)
            got.append((name, r.recv(1)))

        async with trio.open_nursery() as n:
            for name in ("a", "b", "c"):
                n.start_soon(reader, name, name=name)
                await trio.testing.wait_all_tasks_blocked()
            trio.lowlevel.add_instrument(steps)
            for byte in b"xyz":
                w.send(bytes([byte]))
                while len(got) < byte - ord("x") + 1:
                    await trio.testing.wait_all_tasks_blocked()
            trio.lowlevel.remove_instrument(steps)
        assert got == [("a", b"x"), ("b", b"y"), ("c", b"z")]
        assert [t for t in steps.ran if t in "abc"] == ["a", "b", "c"]  # one step each
        assert not turns.queues.get(fd)
        await assert_fd_free(r)


@needs_fast_paths
async def test_turn_readers_cancel_and_close() -> None:
    with socket_pair() as (r, _w):
        turns, fd = TurnReaders(), r.fileno()
        got: list[str] = []

        async def reader(name: str) -> None:
            try:
                await turns.wait(fd)
                got.append(name)
            except trio.ClosedResourceError:
                got.append(name + " closed")

        async with trio.open_nursery() as n:
            for name in ("a", "b", "c"):  # a in trio's record, b and c queued
                n.start_soon(reader, name)
                await trio.testing.wait_all_tasks_blocked()
            n.cancel_scope.cancel()  # all three; the record is left empty
        assert got == [] and not turns.queues.get(fd)
        await assert_fd_free(r)

        async with trio.open_nursery() as n:
            n.start_soon(reader, "d")
            await trio.testing.wait_all_tasks_blocked()
            n.start_soon(reader, "e")
            await trio.testing.wait_all_tasks_blocked()
            turns.close(fd)
        assert sorted(got) == ["d closed", "e closed"]


@needs_fast_paths
async def test_turn_readers_cancelled_first_hands_its_turn_on() -> None:
    with socket_pair() as (r, w):
        turns, fd = TurnReaders(), r.fileno()
        got: list[str] = []

        async def reader(name: str, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
            with trio.CancelScope() as cs:
                task_status.started(cs)
                await turns.wait(fd)
                got.append(name)

        async with trio.open_nursery() as n:
            a = await n.start(reader, "a")
            await trio.testing.wait_all_tasks_blocked()
            await n.start(reader, "b")
            await trio.testing.wait_all_tasks_blocked()
            a.cancel()
            await trio.testing.wait_all_tasks_blocked()
            w.send(b"x")
        assert got == ["b"]


@needs_fast_paths
def test_lean_fuse_loop_replaces_pyfuse3s_trio() -> None:
    try:
        assert lean_fuse_loop()
        shim: Any = pyfuse3.trio  # type: ignore[attr-defined]
        assert shim is not trio
        assert not lean_fuse_loop()  # already done: left as it is
        # What pyfuse3's worker loop uses (internal.pxi, __init__.pyx), and nothing missing.
        for name in ("Lock", "open_nursery", "ClosedResourceError", "from_thread"):
            assert getattr(shim, name) is not None
        for name in ("current_trio_token", "current_task", "wait_readable", "notify_closing"):
            assert callable(getattr(shim.lowlevel, name))
    finally:
        pyfuse3.trio = trio  # type: ignore[attr-defined]


@pytest.mark.usefixtures("trio_path")
async def test_move_deadline_as_trios_setter(autojump_clock: trio.testing.MockClock) -> None:
    t0 = trio.current_time()
    for moves, fires in (([5.0, 2.0], 2.0), ([1.0, 3.0], 3.0), ([4.0, math.inf, 1.5], 1.5)):
        with trio.CancelScope(deadline=t0 + 10) as cs:
            for d in moves:
                move_deadline(cs, t0 + d)
                assert cs.deadline == t0 + d
            await trio.sleep_forever()
        assert cs.cancelled_caught and trio.current_time() == pytest.approx(t0 + fires)
        t0 = trio.current_time()
    unentered = trio.CancelScope()
    move_deadline(unentered, t0 + 1)  # not registered until entered
    with unentered:
        await trio.sleep_forever()
    assert trio.current_time() == pytest.approx(t0 + 1)
    with trio.CancelScope() as cs:
        cs.cancel()
        move_deadline(cs, t0 + 5)  # cancelled: nothing to register
        await trio.lowlevel.checkpoint()
    assert cs.cancelled_caught


@needs_fast_paths
async def test_fast_io_wakeups_wake_readers_writers_and_threads() -> None:
    assert fast_io_wakeups()
    assert not fast_io_wakeups()  # already swapped: left as it is
    ready: Any = READY
    assert ready.unwrap() is None and repr(ready) == "READY"
    with trio.fail_after(10):  # a lost wake-up fails the test, not hangs it
        await _wake_readers_writers_and_threads()


async def _wake_readers_writers_and_threads() -> None:
    with socket_pair() as (a, b):
        got: list[str] = []

        async def reader() -> None:
            await trio.lowlevel.wait_readable(a)
            got.append("readable")

        async def writer() -> None:
            with contextlib.suppress(BlockingIOError):
                while True:
                    b.send(b"y" * 65536)  # fill the buffer
            await trio.lowlevel.wait_writable(b)
            got.append("writable")

        async with trio.open_nursery() as n:
            n.start_soon(reader)
            n.start_soon(writer)
            await trio.testing.wait_all_tasks_blocked()
            while len(got) < 2:  # drain a's side: b writable, a readable
                with contextlib.suppress(BlockingIOError):
                    while a.recv(65536):
                        pass
                await trio.sleep(0.001)
        assert sorted(got) == ["readable", "writable"]

    with socket_pair() as (c, d):
        woken: list[str] = []

        async def wait_readable() -> None:
            await trio.lowlevel.wait_readable(c)
            woken.append("readable")

        async with trio.open_nursery() as n:
            n.start_soon(wait_readable)
            await trio.testing.wait_all_tasks_blocked()
            d.close()  # HUP: the reader wakes
        assert woken == ["readable"]
    # The force-wakeup descriptor: a thread's result reaches the loop.
    assert await trio.to_thread.run_sync(lambda: 42) == 42


@pytest.mark.usefixtures("public_only")
async def test_public_only_leaves_trio_and_pyfuse3_alone() -> None:
    instruments = _trioloop.PRIVATE  # None: nothing private reachable
    assert instruments is None
    assert not fast_instruments()
    assert not fast_io_wakeups()
    assert not lean_fuse_loop()
    assert pyfuse3.trio is trio  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="fast paths are off"):
        await TurnReaders().wait(0)
    # What the fast path would have sped up still works.
    with trio.fail_after(10):
        await _wake_readers_writers_and_threads()
