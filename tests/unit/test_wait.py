"""WaitChannel.sleep: wakeup, timeouts, signals, aborts, and its clock's bookkeeping."""

from __future__ import annotations

import contextlib
import errno
import os

import pytest
import trio
import trio.testing

from devfsd.cdevsw import Lwp, WaitChannel, _wait
from devfsd.cdevsw._wait import CHECK_FIRST, CHECK_MAX, abort_sleepers, sleepers
from devfsd.errors import DeviceError
from tests.unit.sockets import assert_fd_free, socket_pair

# Every test on the fast paths and on trio's public API (tests/unit/conftest.py).
pytestmark = pytest.mark.usefixtures("trio_path")

#: A pid no process has: ``signal_pending`` says a sleep for it must end.
GONE = 2**22 + 12345


async def _sleep_errno(chan: WaitChannel, lwp: Lwp, timo: float | None = None) -> int:
    try:
        await chan.sleep(lwp, timo)
    except DeviceError as exc:
        return exc.errno
    return 0


async def test_timo_ends_the_sleep_with_ewouldblock(autojump_clock: trio.testing.MockClock) -> None:
    chan = WaitChannel("t")
    t0 = trio.current_time()
    assert await _sleep_errno(chan, Lwp(os.getpid(), 0, 0), 1.3) == errno.EWOULDBLOCK
    assert trio.current_time() - t0 == pytest.approx(1.3)
    assert sleepers() == 0


async def test_timo_shorter_than_the_first_check(autojump_clock: trio.testing.MockClock) -> None:
    chan = WaitChannel("t")
    t0 = trio.current_time()
    assert await _sleep_errno(chan, Lwp(os.getpid(), 0, 0), 0.01) == errno.EWOULDBLOCK
    assert trio.current_time() - t0 == pytest.approx(0.01)
    assert await _sleep_errno(chan, Lwp(os.getpid(), 0, 0), 0) == errno.EWOULDBLOCK


async def test_wakeup_before_timo_returns(autojump_clock: trio.testing.MockClock) -> None:
    chan = WaitChannel("t")
    got: list[int] = []

    async def sleeper() -> None:
        got.append(await _sleep_errno(chan, Lwp(os.getpid(), 0, 0), 5.0))

    async with trio.open_nursery() as n:
        n.start_soon(sleeper)
        await trio.sleep(2.0)
        chan.wakeup()
    assert got == [0]
    await trio.sleep(10)  # its old timeout passes: nothing happens to anyone
    assert sleepers() == 0


async def test_signalled_caller_gets_eintr_at_the_first_check(
    autojump_clock: trio.testing.MockClock,
) -> None:
    chan = WaitChannel("t")
    t0 = trio.current_time()
    assert await _sleep_errno(chan, Lwp(GONE, 0, 0)) == errno.EINTR
    assert trio.current_time() - t0 == pytest.approx(CHECK_FIRST)


async def test_a_new_sleeper_is_checked_soon_while_an_old_one_backs_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The old sleeper's checks have backed off to CHECK_MAX, so the clock
    # sleeps that long; a new sleeper must still be looked at after
    # CHECK_FIRST, not when the old one's next check comes.
    old, new = WaitChannel("old"), WaitChannel("new")
    async with trio.open_nursery() as n:
        n.start_soon(_sleep_errno, old, Lwp(os.getpid(), 0, 0))
        await trio.sleep(10 * CHECK_MAX + 0.01)
        t0 = trio.current_time()
        assert await _sleep_errno(new, Lwp(GONE, 0, 0)) == errno.EINTR
        assert trio.current_time() - t0 == pytest.approx(CHECK_FIRST)
        assert sleepers() == 1
        old.wakeup()
    assert sleepers() == 0


async def test_abort_and_cancel_end_sleeps(autojump_clock: trio.testing.MockClock) -> None:
    chan = WaitChannel("t")
    got: list[int] = []

    async def sleeper() -> None:
        got.append(await _sleep_errno(chan, Lwp(os.getpid(), 0, 0)))

    async with trio.open_nursery() as n:
        for _ in range(3):
            n.start_soon(sleeper)
        await trio.sleep(1)
        assert abort_sleepers(None, errno.ENXIO) == 3
    assert got == [errno.ENXIO] * 3

    with trio.move_on_after(1) as cs:
        await chan.sleep(Lwp(os.getpid(), 0, 0))
    assert cs.cancelled_caught
    assert sleepers() == 0
    assert _wait._asleep == {}
    chan.wakeup()  # nobody left: nothing to do


async def test_woken_sleepers_leave_the_clock_nothing(autojump_clock: trio.testing.MockClock) -> None:
    # A reader woken every few milliseconds, as a tunwg reader in a ping:
    # the clock's heap stays small and its deadline is the live sleeper's
    # first check, so the clock never wakes for sleeps already over.
    chan = WaitChannel("t")
    lwp = Lwp(os.getpid(), 0, 0)
    async with trio.open_nursery() as n:
        for _ in range(2000):
            n.start_soon(chan.sleep, lwp)
            await trio.sleep(0.005)
            clock = _wait._clock.get()
            assert len(clock.heap) <= 2
            assert clock.scope is not None
            assert clock.scope.deadline == pytest.approx(trio.current_time() + CHECK_FIRST - 0.005)
            chan.wakeup()
    assert sleepers() == 0


async def test_sleep_on_a_socket(autojump_clock: trio.testing.MockClock) -> None:
    # sleep(fd=...): readable ends it (True), as do wakeup (False), a
    # signal, an abort and closing the socket (True: look at it).
    chan = WaitChannel("t")
    me = Lwp(os.getpid(), 0, 0)
    with socket_pair() as (r, w):
        got: list[object] = []

        async def sleeper(lwp: Lwp = me) -> None:
            try:
                got.append(await chan.sleep(lwp, fd=r))
            except DeviceError as exc:
                got.append(exc.errno)

        async with trio.open_nursery() as n:
            n.start_soon(sleeper)
            await trio.sleep(1)
            w.send(b"x")
        assert got.pop() is True
        assert r.recv(1) == b"x"

        async with trio.open_nursery() as n:
            n.start_soon(sleeper)
            await trio.sleep(1)
            chan.wakeup()
        assert got.pop() is False

        t0 = trio.current_time()
        await sleeper(Lwp(GONE, 0, 0))
        assert got.pop() == errno.EINTR
        assert trio.current_time() - t0 == pytest.approx(CHECK_FIRST)

        async with trio.open_nursery() as n:
            n.start_soon(sleeper)
            await trio.sleep(1)
            assert abort_sleepers(None, errno.ENXIO) == 1
        assert got.pop() == errno.ENXIO

        async with trio.open_nursery() as n:
            n.start_soon(sleeper)
            await trio.sleep(1)
            trio.lowlevel.notify_closing(r)
        assert got.pop() is True
    assert sleepers() == 0
    assert _wait._asleep == {}


async def test_sleep_on_a_socket_leaves_it_to_others(autojump_clock: trio.testing.MockClock) -> None:
    # However a sleep(fd=...) ends, the descriptor is free again; a sleep on
    # a descriptor another task waits on is refused and leaves no sleeper.
    chan = WaitChannel("t")
    me = Lwp(os.getpid(), 0, 0)
    with socket_pair() as (r, _w):
        for end in ("wakeup", "cancel", "abort"):
            async with trio.open_nursery() as n:

                async def sleeper() -> None:
                    with contextlib.suppress(DeviceError):
                        await chan.sleep(me, fd=r)

                n.start_soon(sleeper)
                await trio.sleep(1)
                if end == "wakeup":
                    chan.wakeup()
                elif end == "cancel":
                    n.cancel_scope.cancel()
                else:
                    abort_sleepers(None)
            await assert_fd_free(r)
            assert sleepers() == 0

        async with trio.open_nursery() as n:
            n.start_soon(trio.lowlevel.wait_readable, r)
            await trio.sleep(1)
            with pytest.raises(trio.BusyResourceError):
                await chan.sleep(me, fd=r)
            assert sleepers() == 0 and not chan._sleepers
            n.cancel_scope.cancel()


async def test_readable_and_woken_in_one_pass() -> None:
    # The descriptor's event reschedules the sleeper and, in the same pass of
    # trio's loop, a task that calls wakeup: whichever trio runs first (its
    # order within a pass is random; 20 rounds see both), the sleep returns
    # True once, and is not rescheduled twice.
    chan = WaitChannel("t")
    me = Lwp(os.getpid(), 0, 0)
    with socket_pair() as (r, w), socket_pair() as (r2, w2):
        got: list[bool] = []

        async def sleeper() -> None:
            got.append(await chan.sleep(me, fd=r))

        async def waker() -> None:
            await trio.lowlevel.wait_readable(r2)
            chan.wakeup()

        for _ in range(20):
            got.clear()
            async with trio.open_nursery() as n:
                n.start_soon(sleeper)
                n.start_soon(waker)
                await trio.testing.wait_all_tasks_blocked()
                w.send(b"x")
                w2.send(b"y")
            assert got == [True]
            assert r.recv(1) == b"x" and r2.recv(1) == b"y"
    assert sleepers() == 0


async def test_root_keeps_a_reserve_of_sleepers_no_user_may_take(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """A user who parks reads asleep until ``EAGAIN`` leaves root its
    reserve (as ``nr_files`` does): before it, a user holding every slot
    made root's blocking reads fail ``EAGAIN`` too."""
    monkeypatch.setattr(_wait, "MAX_SLEEPERS", 10)
    monkeypatch.setattr(_wait, "ROOT_SLEEPERS", 3)
    chan, user, root = WaitChannel("t"), Lwp(1, 65534, 65534), Lwp(2, 0, 0)

    async def refused(who: Lwp) -> int:
        try:
            with trio.fail_after(1):  # (the mock clock's: at once) a sleep let in fails here
                await chan.sleep(who)
        except DeviceError as exc:
            return exc.errno
        return 0

    async with trio.open_nursery() as n:
        for who in [user] * 7 + [root] * 3:
            assert sleepers() < 7 or await refused(user) == errno.EAGAIN
            n.start_soon(chan.sleep, who)
            await trio.testing.wait_all_tasks_blocked()
        assert sleepers() == 10
        assert await refused(root) == errno.EAGAIN  # the daemon's own bound holds for root too
        assert sleepers() == 10
        chan.wakeup()
    assert sleepers() == 0
