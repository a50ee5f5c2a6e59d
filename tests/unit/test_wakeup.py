"""wakeup(9) and wakeup_one(9) semantics of WaitChannel, in process (issue 18).

NetBSD's ``wakeup`` wakes every LWP asleep on the channel, ``wakeup_one``
one of them; a wakeup that comes after a sleeper checked its condition
must not be lost. Every wait here is bounded: a broken wakeup fails its
test within seconds instead of hanging the run.
"""

from __future__ import annotations

import gc
import os
import weakref
from pathlib import Path

import trio
import trio.testing

from devfsd.cdevsw import POLLIN, Lwp, WaitChannel
from devfsd.cdevsw._wait import sleepers
from devfsd.testing.harness import Kernel

MODS = Path(__file__).resolve().parent.parent / "modules"

#: Seconds a wait that should end may take before the test fails.
BOUND = 5.0


async def _sleep_on(chan: WaitChannel, woke: list[int], i: int) -> None:
    await chan.sleep(Lwp(os.getpid(), 0, 0))
    woke.append(i)


async def test_wakeup_wakes_every_sleeper() -> None:
    chan = WaitChannel("all")
    woke: list[int] = []
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as n:
            for i in range(5):
                n.start_soon(_sleep_on, chan, woke, i)
            await trio.testing.wait_all_tasks_blocked()
            assert sleepers() == 5
            chan.wakeup()
    assert sorted(woke) == [0, 1, 2, 3, 4]
    assert sleepers() == 0


async def test_two_readers_on_one_channel_both_wake_and_recheck() -> None:
    # The driver pattern of devfsd-module(9): each reader re-checks its own
    # condition after a wakeup; one write makes both conditions true.
    chan = WaitChannel("rd")
    data: dict[str, bytes] = {}
    got: dict[str, bytes] = {}

    async def reader(name: str) -> None:
        while name not in data:
            await chan.sleep(Lwp(os.getpid(), 0, 0))
        got[name] = data[name]

    with trio.fail_after(BOUND):
        async with trio.open_nursery() as n:
            n.start_soon(reader, "a")
            n.start_soon(reader, "b")
            await trio.testing.wait_all_tasks_blocked()
            data.update(a=b"for a", b=b"for b")  # one write, both conditions
            chan.wakeup()
    assert got == {"a": b"for a", "b": b"for b"}


async def _check_then_sleep_raced_by_a_waker() -> None:
    chan = WaitChannel("race")
    ready = False
    checked = trio.Event()

    async def sleeper() -> None:
        if not ready:  # the check
            checked.set()  # the waker may run from the next checkpoint on
            await chan.sleep(Lwp(os.getpid(), 0, 0))

    async def waker() -> None:
        nonlocal ready
        await checked.wait()
        ready = True
        chan.wakeup()

    with trio.fail_after(BOUND):
        async with trio.open_nursery() as n:
            n.start_soon(sleeper)
            n.start_soon(waker)
    assert sleepers() == 0


async def test_wakeup_between_check_and_sleep_is_not_lost() -> None:
    # The waker runs at the sleeper's first scheduling point after its
    # check: a sleep that yields before it is on the channel misses the
    # wakeup and sleeps for ever. Trio orders a batch at random, so the
    # race is run many times.
    for _ in range(50):
        await _check_then_sleep_raced_by_a_waker()


async def test_wakeup_one_wakes_exactly_one_oldest_first() -> None:
    chan = WaitChannel("one")
    woke: list[int] = []
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as n:
            for i in range(3):
                n.start_soon(_sleep_on, chan, woke, i)
                await trio.testing.wait_all_tasks_blocked()  # sleep in order 0, 1, 2
            chan.wakeup_one()
            await trio.testing.wait_all_tasks_blocked()
            assert woke == [0]
            assert sleepers() == 2
            chan.wakeup_one()
            await trio.testing.wait_all_tasks_blocked()
            assert woke == [0, 1]
            assert sleepers() == 1
            chan.wakeup()
    assert woke == [0, 1, 2]
    chan.wakeup_one()  # nobody asleep: nothing to do


async def test_wakeup_one_notifies_every_recorded_poll() -> None:
    class Handle:
        notified = 0

        def notify(self) -> None:
            self.notified += 1

    chan = WaitChannel("p")
    hs = [Handle(), Handle()]
    for h in hs:
        chan.selrecord(Lwp(os.getpid(), 0, 0, poll_handle=h))
    chan.wakeup_one()
    assert [h.notified for h in hs] == [1, 1]
    chan.wakeup_one()  # notified once: the poll must record itself again
    assert [h.notified for h in hs] == [1, 1]


async def test_a_files_polls_are_kept_once_and_go_when_it_closes() -> None:
    # selrecord kept every poll's handle until a wakeup: a user polling an
    # idle node (a msgq nobody writes) grew the daemon (an isolated
    # driver's host, likewise) by ~56 bytes a poll of one file, and ~450 a
    # file opened, polled and closed, without end. Now a file's last
    # handle only, forgotten when it closes; a wakeup notifies that one.
    class Handle:
        notified = 0

        def notify(self) -> None:
            self.notified += 1

    async with Kernel.running([MODS]) as k:
        await k.modload("msgq")
        f = await k.open("msgq", 0, os.O_RDONLY)
        handles = [Handle() for _ in range(100)]
        for h in handles:
            await f.poll(POLLIN, h)
        last = handles[-1]
        earlier = [weakref.ref(h) for h in handles[:-1]]
        del handles, h
        gc.collect()
        assert [r for r in earlier if r() is not None] == []  # nothing keeps them
        closed = await k.open("msgq", 0, os.O_RDONLY)
        h = Handle()
        await closed.poll(POLLIN, h)
        gone = weakref.ref(h)
        del h
        await closed.close()
        gc.collect()
        assert gone() is None
        w = await k.open("msgq", 0, os.O_WRONLY)
        await w.write(b"wake")
        assert last.notified == 1
