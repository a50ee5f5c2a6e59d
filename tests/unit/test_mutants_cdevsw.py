"""Behaviour of devfsd/cdevsw that its mutation run (issue 18, ``python -m
tests.mutate 'devfsd.cdevsw.*'``) found no test for: each test here fails
with one or more of the surviving mutants named in docs/reliability.md
("cdevsw, third run") applied, and passes without them."""

from __future__ import annotations

import array
import contextlib
import errno
import itertools
import os
import sys
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from devfsd import _fuseintr, _trioloop
from devfsd.cdevsw import (
    FREAD,
    IOC_IN,
    IOC_OUT,
    IOCPARM_LEN,
    IOR,
    IOW,
    IOWR,
    UIO_WRITE,
    Cdevsw,
    File,
    Lwp,
    Uio,
    WaitChannel,
    _wait,
    devsw,
    devsw_attach,
    devsw_detach,
    major,
    makedev,
    minor,
    nullopen,
)
from devfsd.cdevsw._switch import noioctl, noread
from devfsd.cdevsw._table import DevswTable
from devfsd.cdevsw._wait import (
    CHECK_FIRST,
    abort_sleepers,
    call_limited,
    finish_limited,
    forget_interrupt,
    interrupt_sleep,
    no_proc_checks,
    sleepers,
)
from devfsd.errors import DeviceError
from tests.unit.sockets import socket_pair
from tests.unit.test_wait import GONE, _sleep_errno

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator

# -- device numbers ---------------------------------------------------------------------


def test_device_numbers_are_glibc_s_for_every_major_and_minor() -> None:
    # dev_t as glibc encodes it, majors and minors past 12 and 20 bits too
    # (os.makedev takes a C int: up to 2**31 - 1 here): a major of 4098 is not 2.
    for maj in (0, 2, 4095, 4096, 4098, 0x12345, 0x7FFFFFFF):
        for mnr in (0, 0xFF, 0x100, 0xFFFFF, 0x100000, 0x7FFFFFFF):
            d = makedev(maj, mnr)
            assert d == os.makedev(maj, mnr)
            assert (major(d), minor(d)) == (os.major(d), os.minor(d)) == (maj, mnr)


# -- the major table ------------------------------------------------------------------------


def _refused(call: Callable[[], object]) -> tuple[int, str]:
    with pytest.raises(DeviceError) as ei:
        call()
    return ei.value.errno, str(ei.value)


def _err(e: int, text: str) -> tuple[int, str]:
    return e, str(DeviceError(e, text))


def test_attach_refuses_each_wrong_call_with_its_errno_and_why() -> None:
    t = DevswTable(reserved={"tun": 40}, dynamic_base=256)
    c = Cdevsw(d_open=nullopen)
    bad_name = _err(errno.EINVAL, "driver name must be a non-empty string")
    assert _refused(lambda: t.attach("", c)) == bad_name
    assert _refused(lambda: t.attach(5, c)) == bad_name  # type: ignore[arg-type]
    assert _refused(lambda: t.attach("x", c, 512)) == _err(errno.EINVAL, "major 512 out of range 0..511")
    assert _refused(lambda: t.attach("x", c, -2)) == _err(errno.EINVAL, "major -2 out of range 0..511")
    assert _refused(lambda: t.attach("tun", c, 41)) == _err(errno.EINVAL, "tun has major 40, not 41")
    assert _refused(lambda: t.attach("x", c, 40)) == _err(errno.EEXIST, "major 40 belongs to tun")
    assert t.attach("tun", c) == 40
    assert _refused(lambda: t.attach("tun", Cdevsw())) == _err(errno.EEXIST, "major 40 is in use")
    assert t.entries() == [("tun", 40, True)]


def test_attach_at_a_free_major_given_records_it() -> None:
    t = DevswTable(reserved={}, dynamic_base=256)
    seen: list[tuple[str, int]] = []
    t.on_new_name = lambda name, maj: seen.append((name, maj))
    a, b = Cdevsw(d_open=nullopen), Cdevsw(d_open=nullopen)
    assert t.attach("zero", a, 0) == 0  # major 0 is a major
    assert t.attach("mine", b, 300) == 300
    assert t.attach("auto", b) == 256
    assert seen == [("zero", 0), ("mine", 300), ("auto", 256)]
    assert (t.lookup(0), t.lookup(300), t.getname(300), t.getmajor("mine")) == (a, b, "mine", 300)
    assert t.attached() == {0: a, 300: b, 256: b}


def test_reset_tells_of_every_driver_it_detaches() -> None:
    class Watcher:
        def __init__(self) -> None:
            self.gone: list[Cdevsw] = []

        def detached(self, c: Cdevsw) -> None:
            self.gone.append(c)

    t = DevswTable(reserved={}, dynamic_base=256)
    w = Watcher()
    t.on_detach(w.detached)
    a, b = Cdevsw(d_open=nullopen), Cdevsw(d_open=nullopen)
    t.attach("a", a)
    t.attach("b", b)
    t.attach("b2", b)
    t.reset()
    assert sorted(map(id, w.gone)) == sorted([id(a), id(b)])  # each once
    assert t.attached() == {}


@pytest.fixture
def global_devsw() -> Iterator[None]:
    devsw.reset()
    try:
        yield
    finally:
        devsw.reset()


@pytest.mark.usefixtures("global_devsw")
async def test_devsw_attach_takes_the_major_given_and_detach_ends_its_sleepers_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mine, other = Cdevsw(d_open=nullopen), Cdevsw(d_open=nullopen)
    assert devsw_attach("mine", mine, 300) == 300
    assert devsw_attach("other", other) == 256
    got: dict[str, int] = {}

    async def sleeper(name: str, maj: int) -> None:
        got[name] = await _sleep_errno(WaitChannel(name), Lwp(0, 0, 0, dev=makedev(maj, 0)))

    async with trio.open_nursery() as n:
        n.start_soon(sleeper, "mine", 300)
        n.start_soon(sleeper, "other", 256)
        await trio.testing.wait_all_tasks_blocked()
        devsw_detach(mine)
        await trio.testing.wait_all_tasks_blocked()
        assert got == {"mine": errno.ENXIO}
        assert sleepers() == 1
        devsw_detach(other)
    assert got == {"mine": errno.ENXIO, "other": errno.ENXIO}
    assert devsw.lookup(300) is None and devsw.getmajor("mine") == 300


# -- files -------------------------------------------------------------------------------


def test_a_new_file_knows_its_opener_and_has_no_driver_state_yet() -> None:
    dev = makedev(300, 7)
    f = File(dev, FREAD, 1234, 1000, 100)
    assert (f.dev, f.flag, f.pid, f.uid, f.gid) == (dev, FREAD, 1234, 1000, 100)
    assert f.data is None and f.cdevsw is None and f.poll_kept is None
    l = f.lwp
    assert (l.pid, l.uid, l.gid, l.fp, l.dev, l.poll_handle) == (1234, 1000, 100, f, dev, None)
    # A caller on a file is on its device unless told otherwise.
    assert Lwp(1, 2, 3, f).dev == dev
    assert Lwp(1, 2, 3, f, dev=makedev(300, 8)).dev == makedev(300, 8)
    assert Lwp(1, 2, 3).dev is None


# -- ioctl commands and stubs --------------------------------------------------------


def test_iowr_is_netbsd_s_in_out_command() -> None:
    # _IOWR('t', 90, int) and _IOW/_IOR of the largest parameter ioccom.h allows.
    assert IOWR(ord("t"), 90, 4) == 0xC004745A
    assert IOWR(ord("t"), 90, 4) == IOC_IN | IOC_OUT | 4 << 16 | ord("t") << 8 | 90
    assert IOCPARM_LEN(IOW(ord("t"), 1, 0x1FFF)) == 0x1FFF
    assert IOR(ord("t"), 1, 0x1FFF) == IOC_OUT | 0x1FFF << 16 | 0x7401
    with pytest.raises(ValueError, match=r"^ioctl parameter length 8192 out of range$"):
        IOW(ord("t"), 1, 0x2000)


async def test_noread_and_noioctl_are_enodev() -> None:
    l = Lwp(os.getpid(), 0, 0)
    for call in (
        noread(makedev(1, 0), Uio.for_read(1, l), 0),
        noioctl(makedev(1, 0), 1, bytearray(), FREAD, l),
    ):
        with pytest.raises(DeviceError) as ei:
            await call
        assert ei.value.errno == errno.ENODEV


# -- Uio -------------------------------------------------------------------------------


def test_uio_for_write_is_the_caller_s_blocking_write_from_offset_zero() -> None:
    l = Lwp(os.getpid(), 0, 0)
    u = Uio.for_write(b"abc", l)
    assert (u.rw, u.resid, u.offset, u.lwp, u.nonblock) == (UIO_WRITE, 3, 0, l, False)


def test_uiomove_moves_bytes_whatever_the_buffer_s_shape() -> None:
    # A driver may hand uiomove any buffer: an array of shorts, a 2-D view.
    # It moves bytes, never items or rows.
    l = Lwp(os.getpid(), 0, 0)
    shorts = array.array("H", [0x0201, 0x0403])
    grid = memoryview(b"abcdef").cast("B", (2, 3))
    u = Uio.for_read(100, l)
    assert u.uiomove(shorts) == 4  # type: ignore[arg-type]
    assert u.uiomove(grid) == 6
    assert (u.resid, u.offset) == (90, 10)
    assert bytes(u.moved()) == shorts.tobytes() + b"abcdef"

    u = Uio.for_write(b"ABCDEFGHIJ", l)
    into = array.array("H", [0, 0])
    assert u.uiomove(into) == 4  # type: ignore[arg-type]
    assert into.tobytes() == b"ABCD"
    rows = bytearray(6)
    assert u.uiomove(memoryview(rows).cast("B", (2, 3))) == 6
    assert rows == b"EFGHIJ"
    assert u.resid == 0


def test_a_write_is_taken_in_order_by_uiomove_and_getbytes() -> None:
    l = Lwp(os.getpid(), 0, 0)
    u = Uio.for_write(b"abcdefgh", l, offset=10)
    two, one = bytearray(2), bytearray(1)
    assert (u.uiomove(two), u.uiomove(one)) == (2, 1)
    assert bytes(two + one) == b"abc"
    assert u.getbytes(2) == b"de"
    assert (u.resid, u.offset) == (3, 15)
    assert u.getbytes(0) == b""
    assert u.getbytes() == b"fgh"
    assert (u.resid, u.offset) == (0, 18)
    assert u.getbytes() == b""
    assert u.offset == 18
    with pytest.raises(ValueError, match=r"^getbytes\(\) on a read uio$"):
        Uio.for_read(1, l).getbytes()


# -- sleep(fd=0) -----------------------------------------------------------------------


@contextlib.contextmanager
def _socket_at_fd_zero() -> Iterator[tuple[int, Callable[[bytes], int]]]:
    """A socket pair whose reading end is descriptor 0 for the block (0 restored after)."""
    saved = os.dup(0)
    try:
        with socket_pair() as (r, w):
            os.dup2(r.fileno(), 0)
            try:
                yield 0, w.send
            finally:
                os.dup2(saved, 0)
    finally:
        os.close(saved)


@pytest.mark.usefixtures("trio_path")
async def test_a_sleep_on_descriptor_zero_leaves_it_free_however_it_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Descriptor 0 is a descriptor like any other (a driver in a module
    # host, or a daemon started with stdin closed, may get a socket there).
    chan = WaitChannel("t")
    me = Lwp(os.getpid(), 0, 0)
    got: list[object] = []
    with _socket_at_fd_zero() as (fd, send):
        for end in ("wakeup", "cancel", "abort", "readable"):
            got.clear()
            async with trio.open_nursery() as n:

                async def sleeper() -> None:
                    try:
                        got.append(await chan.sleep(me, fd=fd))
                    except DeviceError as exc:
                        got.append(exc.errno)

                n.start_soon(sleeper)
                await trio.sleep(1)
                if end == "wakeup":
                    chan.wakeup()
                elif end == "cancel":
                    n.cancel_scope.cancel()
                elif end == "abort":
                    abort_sleepers(None)
                else:
                    send(b"x")
            assert got == {"wakeup": [False], "cancel": [], "abort": [errno.ENXIO], "readable": [True]}[end]
            if end == "readable":
                assert os.read(fd, 1) == b"x"
            with trio.move_on_after(0.05):  # free again: a plain wait may go on it
                await trio.lowlevel.wait_readable(fd)
            assert sleepers() == 0


# -- the FUSE INTERRUPT watch ------------------------------------------------------------


@pytest.fixture
def interrupts(monkeypatch: pytest.MonkeyPatch) -> dict[int, Callable[[], None]]:
    """The watch of FUSE INTERRUPTs, as libfuse would give it to a sleep
    serving a real request of an open file (keys from 1); the dict of
    watched keys is what ``_fuseintr`` calls when an INTERRUPT comes."""
    watched: dict[int, Callable[[], None]] = {}
    keys = itertools.count(1)

    def watch(coro: object, fp: object, on_interrupt: Callable[[], None]) -> int:
        if fp is None or coro is None:
            return 0  # no file, or no task's coroutine: no request to watch
        key = next(keys)
        watched[key] = on_interrupt
        return key

    monkeypatch.setattr(_fuseintr, "_watched", watched)
    monkeypatch.setattr(_wait, "watch", watch)
    return watched


def _opener(pid: int) -> Lwp:
    return File(makedev(1, 0), FREAD, pid, 0, 0).lwp


async def test_an_interrupt_ends_a_watched_sleep_and_replaces_the_proc_checks(
    interrupts: dict[int, Callable[[], None]], autojump_clock: trio.testing.MockClock
) -> None:
    chan = WaitChannel("t")
    got: list[int] = []
    async with trio.open_nursery() as n:
        # Its caller looks gone in /proc: only the INTERRUPT may end the sleep.
        n.start_soon(lambda: _record(got, chan, _opener(GONE)))
        await trio.sleep(10)
        assert got == [] and list(interrupts) == [1]
        _fuseintr._on_interrupt(None, 1)
    assert got == [errno.EINTR]
    assert interrupts == {}


async def test_a_sleep_whose_request_cannot_be_watched_looks_in_proc(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A file's call outside a FUSE request (the harness, a guard that fails):
    # no INTERRUPT will come, so the caller's signals are looked for.
    t0 = trio.current_time()
    assert await _sleep_errno(WaitChannel("t"), _opener(GONE)) == errno.EINTR
    assert trio.current_time() - t0 == pytest.approx(CHECK_FIRST)


async def _record(got: list[int], chan: WaitChannel, lwp: Lwp) -> None:
    got.append(await _sleep_errno(chan, lwp))


@pytest.mark.parametrize("end", ["cancel", "wakeup", "abort"])
async def test_a_watched_sleep_that_ends_otherwise_forgets_its_watch(
    end: str, interrupts: dict[int, Callable[[], None]], autojump_clock: trio.testing.MockClock
) -> None:
    chan = WaitChannel("t")
    got: list[int] = []
    async with trio.open_nursery() as n:
        n.start_soon(_record, got, chan, _opener(os.getpid()))
        await trio.sleep(CHECK_FIRST * 2)
        assert list(interrupts) == [1]  # watched from its first check
        if end == "cancel":
            n.cancel_scope.cancel()
        elif end == "wakeup":
            chan.wakeup()
        else:
            abort_sleepers(None)
    assert got == {"cancel": [], "wakeup": [0], "abort": [errno.ENXIO]}[end]
    assert interrupts == {}


async def test_a_sleep_without_a_file_leaves_the_watches_of_others_alone(
    interrupts: dict[int, Callable[[], None]], autojump_clock: trio.testing.MockClock
) -> None:
    a, b = WaitChannel("a"), WaitChannel("b")
    got_a: list[int] = []
    got_b: list[int] = []
    async with trio.open_nursery() as n:
        n.start_soon(lambda: _record(got_a, a, _opener(os.getpid())))  # watched, key 1
        n.start_soon(lambda: _record(got_b, b, Lwp(os.getpid(), 0, 0)))  # no file: /proc checks
        await trio.sleep(1)
        b.wakeup()
        await trio.testing.wait_all_tasks_blocked()
        assert got_b == [0]
        assert list(interrupts) == [1]
        _fuseintr._on_interrupt(None, 1)
    assert got_a == [errno.EINTR]


# -- a module host's interrupts (interrupt_sleep) ---------------------------------------


async def test_interrupt_sleep_ends_the_sleep_or_the_next_one(autojump_clock: trio.testing.MockClock) -> None:
    chan = WaitChannel("t")
    me = Lwp(0, 0, 0)  # a host's caller: no /proc checks
    tasks: list[trio.lowlevel.Task] = []
    got: list[int] = []

    async def sleeper() -> None:
        tasks.append(trio.lowlevel.current_task())
        got.append(await _sleep_errno(chan, me))

    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            n.start_soon(sleeper)
            await trio.testing.wait_all_tasks_blocked()
            interrupt_sleep(tasks[0])
    assert got == [errno.EINTR]

    task = trio.lowlevel.current_task()
    interrupt_sleep(task)  # not asleep: its next sleep ends at once
    assert await _sleep_errno(chan, me, 1.0) == errno.EINTR
    assert await _sleep_errno(chan, me, 1.0) == errno.EWOULDBLOCK  # once only
    interrupt_sleep(task)
    forget_interrupt(task)  # the interrupted call ended first
    assert await _sleep_errno(chan, me, 1.0) == errno.EWOULDBLOCK
    assert not _wait._interrupted

    interrupt_sleep(task)  # one task's interrupt is not another's
    async with trio.open_nursery() as n:
        n.start_soon(sleeper)
        await trio.sleep(1)
        chan.wakeup()
    assert got == [errno.EINTR, 0]
    forget_interrupt(task)
    assert not _wait._interrupted


async def test_sleeps_past_max_sleepers_are_refused_with_eagain(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    monkeypatch.setattr(_wait, "MAX_SLEEPERS", 3)
    chan, me = WaitChannel("t"), Lwp(0, 0, 0)
    async with trio.open_nursery() as n:
        for _ in range(3):
            n.start_soon(chan.sleep, me)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(DeviceError) as ei:
            await chan.sleep(me)
        assert (ei.value.errno, str(ei.value)) == (
            errno.EAGAIN,
            str(DeviceError(errno.EAGAIN, "too many sleepers")),
        )
        assert sleepers() == 3
        chan.wakeup()


async def test_a_module_host_s_sleeps_look_for_no_signals(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    monkeypatch.setattr(_wait, "_proc_checks", True)
    chan = WaitChannel("t")
    assert await _sleep_errno(chan, Lwp(GONE, 0, 0), 1.0) == errno.EINTR
    no_proc_checks()
    t0 = trio.current_time()
    with trio.fail_after(5):  # its timeout still ends it
        assert await _sleep_errno(chan, Lwp(GONE, 0, 0), 1.0) == errno.EWOULDBLOCK
    assert trio.current_time() - t0 == pytest.approx(1.0)


# -- the sleep clock -----------------------------------------------------------------------


@pytest.mark.usefixtures("trio_path")
async def test_one_sleep_clock_serves_every_sleep_of_a_run(autojump_clock: trio.testing.MockClock) -> None:
    chan, me = WaitChannel("t"), Lwp(os.getpid(), 0, 0)
    root = trio.lowlevel.current_root_task()
    assert root is not None
    system = root.child_nurseries[0]
    assert await _sleep_errno(chan, me, 0.01) == errno.EWOULDBLOCK
    clock, tasks = _wait._clock.get(), len(system.child_tasks)
    for _ in range(3):
        assert await _sleep_errno(chan, me, 0.01) == errno.EWOULDBLOCK
    assert _wait._clock.get() is clock
    assert len(system.child_tasks) == tasks


async def test_the_caller_is_looked_at_after_50_ms_then_twice_as_long_each_time_up_to_400_ms(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    t0 = trio.current_time()
    looked: list[float] = []

    def signal_pending(tid: int) -> bool:
        looked.append(round(trio.current_time() - t0, 6))
        return False

    monkeypatch.setattr(_wait, "signal_pending", signal_pending)
    assert await _sleep_errno(WaitChannel("t"), Lwp(os.getpid(), 0, 0), 2.0) == errno.EWOULDBLOCK
    assert looked == pytest.approx([0.05, 0.15, 0.35, 0.75, 1.15, 1.55, 1.95])


async def test_a_signal_passed_on_leaves_the_sleep_its_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # devfsd.isolate's sleeps: a signal for the caller is passed on to the
    # host once (``interrupt``); until the host answers, the timeout stands.
    passed: list[float] = []
    t0 = trio.current_time()
    with trio.fail_after(5):
        got = await _sleep_errno_passing(
            Lwp(GONE, 0, 0), 1.0, lambda: passed.append(trio.current_time() - t0)
        )
    assert got == errno.EWOULDBLOCK
    assert trio.current_time() - t0 == pytest.approx(1.0)
    assert passed == [pytest.approx(CHECK_FIRST)]


async def _sleep_errno_passing(lwp: Lwp, timo: float, interrupt: Callable[[], None]) -> int:
    try:
        await WaitChannel("t").sleep(lwp, timo, interrupt=interrupt)
    except DeviceError as exc:
        return exc.errno
    return 0


# -- the entry-point limit ----------------------------------------------------------------


@pytest.mark.usefixtures("trio_path")
async def test_a_hang_whose_cancel_the_driver_turns_into_an_error_is_logged_and_raised(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def entry() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            raise DeviceError(errno.EIO) from None

    hung: list[str] = []
    in_flight: list[object] = []

    def on_hang(what: str) -> None:
        hung.append(what)
        in_flight.append(sys.exc_info()[0])

    with pytest.raises(DeviceError) as ei:
        await call_limited(entry(), 1.0, on_hang, "d_read")
    assert ei.value.errno == errno.EIO
    assert hung == ["d_read"]
    assert in_flight[0] in (trio.Cancelled, DeviceError)  # the stack the driver was in


class _Awaitable:
    """An awaitable that is not a coroutine (a driver's own ``__await__``)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __await__(self) -> Generator[Any, Any, int]:
        return self._run().__await__()

    async def _run(self) -> int:
        await trio.sleep(self.seconds)
        return 7


@pytest.mark.usefixtures("trio_path")
async def test_the_limit_of_an_entry_point_that_is_not_a_coroutine(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hung: list[str] = []
    assert await call_limited(_Awaitable(0.5), 1.0, hung.append, "d_ioctl") == (7, False)
    t0 = trio.current_time()
    assert await call_limited(_Awaitable(3600), 1.0) == (None, True)
    assert trio.current_time() - t0 == pytest.approx(1.0)
    assert hung == []


@pytest.mark.usefixtures("trio_path")
async def test_time_asleep_in_an_entry_point_s_tasks_is_not_counted_until_the_last_wakes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # An entry point whose own tasks sleep on two channels: the limit's
    # clock stops while any of them sleeps, not only until the first wakes.
    a, b, me = WaitChannel("a"), WaitChannel("b"), Lwp(0, 0, 0)

    async def entry() -> str:
        await trio.lowlevel.checkpoint()
        async with trio.open_nursery() as n:
            n.start_soon(a.sleep, me)
            n.start_soon(b.sleep, me)
        return "both woke"

    got: list[tuple[object, bool]] = []

    async def call() -> None:
        got.append(await call_limited(entry(), 1.0))

    async with trio.open_nursery() as n:
        n.start_soon(call)
        await trio.sleep(0.5)
        a.wakeup()
        await trio.sleep(5)  # b still asleep: not counted
        assert got == []
        b.wakeup()
    assert got == [("both woke", False)]


@pytest.mark.usefixtures("trio_path")
@pytest.mark.parametrize("nested", [False, True])
async def test_tasks_an_entry_point_starts_in_its_first_step_stop_its_clock_while_asleep(
    autojump_clock: trio.testing.MockClock, nested: bool
) -> None:
    # As the test above, but the nursery is opened before the entry point's
    # first checkpoint (a d_read that waits on two channels at once from
    # its first line): on the fast path its first step runs before the
    # call's limit is in the context, so its tasks must be given it.
    a, b, me = WaitChannel("a"), WaitChannel("b"), Lwp(0, 0, 0)

    async def entry() -> str:
        async with trio.open_nursery() as n:
            n.start_soon(a.sleep, me)
            if nested:
                async with trio.open_nursery() as inner:
                    inner.start_soon(b.sleep, me)
            else:
                n.start_soon(b.sleep, me)
        return "both woke"

    got: list[tuple[object, bool]] = []

    async def call() -> None:
        got.append(await call_limited(entry(), 1.0))

    async with trio.open_nursery() as outer:  # the caller's own nursery: not the call's
        outer.start_soon(call)
        await trio.sleep(5)  # both asleep: not counted
        assert got == []
        a.wakeup()
        await trio.sleep(5)  # b still asleep
        assert got == []
        b.wakeup()
    assert got == [("both woke", False)]


@pytest.mark.usefixtures("trio_path")
async def test_an_entry_point_that_is_not_a_coroutine_sleeps_off_its_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    chan, me = WaitChannel("c"), Lwp(0, 0, 0)

    class Sleeps:
        def __await__(self) -> Generator[Any, Any, str]:
            return self._run().__await__()

        async def _run(self) -> str:
            await chan.sleep(me)
            return "woke"

    got: list[tuple[object, bool]] = []

    async def call() -> None:
        got.append(await call_limited(Sleeps(), 1.0))

    async with trio.open_nursery() as n:
        n.start_soon(call)
        await trio.sleep(5)
        assert got == []
        chan.wakeup()
    assert got == [("woke", False)]


async def test_an_entry_point_that_left_a_scope_it_did_not_enter_is_answered_unlimited() -> None:
    # The limit's scope cannot go in under a scope the entry point exited
    # (trio reports such misnesting itself): the call runs without a limit
    # and its answer is returned as an answer, not as a hang.
    if _trioloop.PRIVATE is None:
        pytest.skip("devfsd's fast paths are off")
    outer = trio.CancelScope()

    async def entry() -> int:
        outer.__exit__(None, None, None)
        await trio.lowlevel.checkpoint()
        return 5

    with trio.fail_after(5):
        outer.__enter__()
        assert await call_limited(entry(), 10.0, lambda what: pytest.fail(what), "d_read") == (5, False)


async def test_finish_limited_names_what_to_use_on_the_public_path(trio_path: str) -> None:
    if trio_path == "fast":
        pytest.skip("finish_limited is for the fast paths")

    async def entry() -> None:
        await trio.lowlevel.checkpoint()

    coro = entry()
    with pytest.raises(RuntimeError, match=r"^finish_limited needs devfsd's fast paths; use call_limited$"):
        await finish_limited(coro, None, None, 1.0)
    coro.close()
