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


async def _refused(chan: WaitChannel, who: Lwp) -> int:
    """The errno of ``who``'s sleep on ``chan``, refused at once (with the
    mock clock's ``fail_after``, a sleep let in fails the test at once)."""
    try:
        with trio.fail_after(1):
            await chan.sleep(who)
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

    async with trio.open_nursery() as n:
        for who in [user] * 7 + [root] * 3:
            assert sleepers() < 7 or await _refused(chan, user) == errno.EAGAIN
            n.start_soon(chan.sleep, who)
            await trio.testing.wait_all_tasks_blocked()
        assert sleepers() == 10
        assert await _refused(chan, root) == errno.EAGAIN  # the daemon's own bound holds for root too
        assert sleepers() == 10
        chan.wakeup()
    assert sleepers() == 0


async def test_one_user_holds_at_most_its_share_of_sleepers(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    """A user who parks reads asleep until ``EAGAIN`` stops at its share
    (``USER_SLEEPERS``, ``-o share``): another user still sleeps, and root;
    before the share, one user holding the users' part made every other
    user's blocking reads fail ``EAGAIN``."""
    monkeypatch.setattr(_wait, "MAX_SLEEPERS", 12)
    monkeypatch.setattr(_wait, "ROOT_SLEEPERS", 2)
    monkeypatch.setattr(_wait, "USER_SLEEPERS", _wait.USER_SLEEPERS)  # put back after
    _wait.share_sleepers(40)  # users: 10, one user 4
    chan = WaitChannel("t")
    a, b, c, root = Lwp(1, 1000, 1000), Lwp(2, 1001, 1001), Lwp(3, 1002, 1002), Lwp(4, 0, 0)
    assert _wait.USER_SLEEPERS == 4
    async with trio.open_nursery() as n:
        for who in [a] * 4 + [b] * 4:
            n.start_soon(chan.sleep, who)
            await trio.testing.wait_all_tasks_blocked()  # asleep in this order
        assert (_wait.sleepers_of(a.uid), _wait.sleepers_of(b.uid), _wait.sleepers_of(0)) == (4, 4, 0)
        assert await _refused(chan, a) == errno.EAGAIN  # a's share
        assert await _refused(chan, b) == errno.EAGAIN
        for who in (c, c):  # c still sleeps, to the users' part
            n.start_soon(chan.sleep, who)
        await trio.testing.wait_all_tasks_blocked()
        assert sleepers() == 10 and _wait._by_uid == {1000: 4, 1001: 4, 1002: 2}
        assert await _refused(chan, c) == errno.EAGAIN  # the users' part
        chan.wakeup_one()  # a's first: a may sleep once more
        await trio.testing.wait_all_tasks_blocked()
        assert _wait.sleepers_of(a.uid) == 3
        n.start_soon(chan.sleep, a)
        await trio.testing.wait_all_tasks_blocked()
        assert _wait.sleepers_of(a.uid) == 4
        for who in (root, root):  # root's reserve
            n.start_soon(chan.sleep, who)
        await trio.testing.wait_all_tasks_blocked()
        assert sleepers() == 12 and _wait.sleepers_of(0) == 0
        chan.wakeup()
    assert sleepers() == 0 and _wait._by_uid == {}


async def test_every_end_of_a_users_sleep_gives_its_share_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Woken, timed out, signalled, cancelled, aborted, on a readable
    descriptor, interrupted: each sleep gives its place in its uid's
    count back, once, and a uid at zero leaves the counts (no growth
    with every uid that ever slept)."""
    chan = WaitChannel("t")

    def user(uid: int, pid: int = 0) -> Lwp:
        return Lwp(pid, uid, uid)

    async def asleep(n: int) -> None:
        await trio.testing.wait_all_tasks_blocked()
        assert sum(_wait._by_uid.values()) == n

    async with trio.open_nursery() as nursery:
        for uid in (1000, 1001):
            nursery.start_soon(_sleep_errno, chan, user(uid))
        await asleep(2)
        chan.wakeup_one()
        chan.wakeup()
        await asleep(0)
        assert await _sleep_errno(chan, user(1002), 0.5) == errno.EWOULDBLOCK
        assert await _sleep_errno(chan, user(1003, GONE)) == errno.EINTR
        assert _wait._by_uid == {}
        nursery.start_soon(_sleep_errno, chan, user(1004))
        await asleep(1)
        assert abort_sleepers() == 1
        await asleep(0)
        async with trio.open_nursery() as inner:
            inner.start_soon(_sleep_errno, chan, user(1006))
            await asleep(1)
            inner.cancel_scope.cancel()
        await asleep(0)
        with socket_pair() as (r, w):
            got: list[bool] = []

            async def on_fd() -> None:
                got.append(await chan.sleep(user(1007), fd=r))

            nursery.start_soon(on_fd)
            await asleep(1)
            w.send(b"x")
            await asleep(0)
            assert got == [True]
        done: list[int] = []

        async def interrupted() -> None:
            done.append(await _sleep_errno(chan, user(1008)))

        nursery.start_soon(interrupted)
        await asleep(1)
        (task,) = [t for t, s in _wait._asleep.items() if s.uid == 1008]
        _wait.interrupt_sleep(task)
        await asleep(0)
        assert done == [errno.EINTR]
        _wait.forget_interrupt(task)
    assert sleepers() == 0 and _wait._by_uid == {}


async def test_a_module_host_counts_no_shares(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host (``no_shares``) leaves the share to the daemon, whose side of
    each call sleeps as the caller: one user's sleeps in it are bounded by
    the users' part only, not by a default share smaller than the daemon's."""
    assert _wait.USER_SLEEPERS == 1900  # the default: half of 3,800
    monkeypatch.setattr(_wait, "USER_SLEEPERS", 1)  # put back after
    _wait.no_shares()
    assert _wait.USER_SLEEPERS == _wait.MAX_SLEEPERS - _wait.ROOT_SLEEPERS
