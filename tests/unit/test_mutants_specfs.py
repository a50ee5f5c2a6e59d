"""The I/O path (devfsd/specfs.py) as a driver and its callers see it, for
what the mutation run (issue 18, ``python -m tests.mutate 'devfsd.specfs.*'``)
found no in-process test of: each test here fails with one or more of the
surviving mutants named in docs/reliability.md applied, and passes without
them. Drivers here are bare ``Cdevsw`` tables on a ``SpecFs`` of their own
(no loader), attached under names of their own and detached on the way out."""

from __future__ import annotations

import errno
import logging
import os
import select
from collections.abc import Coroutine
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from devfsd import _trioloop
from devfsd.cdevsw import (
    FNONBLOCK,
    FREAD,
    FWRITE,
    IO_NDELAY,
    IOR,
    IOW,
    IOWR,
    Cdevsw,
    Lwp,
    devsw,
    devsw_attach,
    devsw_detach,
    makedev,
    minor,
    nullclose,
    nullopen,
)
from devfsd.errors import DeviceError
from devfsd.specfs import S_IFCHR_MODE, SYNC_DONE, SpecFs, open_flags_to_fflag
from devfsd.trace import Tracer
from devfsd.watchdog import DriverStall
from tests.unit.test_mutants_core import Handle

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator, Iterator

    from devfsd.cdevsw import Dev, File, Uio


@contextmanager
def attached(name: str, **entries: Callable[..., object]) -> Iterator[int]:
    """A driver of ``entries`` attached as ``name``: its major."""
    cdev = Cdevsw(**{"d_open": nullopen, "d_close": nullclose, **entries})  # type: ignore[arg-type]
    maj = devsw_attach(name, cdev)
    try:
        yield maj
    finally:
        if devsw.names_of(cdev):
            devsw_detach(cdev)


def messages(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


@contextmanager
def _traced(spec: SpecFs, maj: int, traced: bool) -> Iterator[None]:
    """A tracer of ``maj`` attached to ``spec`` for the block, if ``traced``."""
    if not traced:
        yield
        return
    with spec.tracing(Tracer(major=maj)):
        yield


# -- open counts ------------------------------------------------------------------


async def test_open_count_is_the_open_files_of_that_major_only() -> None:
    spec = SpecFs(None)
    with attached("mutsp_cnt_a") as a, attached("mutsp_cnt_b") as b:
        files = [await spec.open(makedev(a, unit), os.O_RDWR, 1, 0, 0) for unit in (0, 1, 1)]
        files.append(await spec.open(makedev(b, 0), os.O_RDWR, 1, 0, 0))
        assert (spec.open_count(a), spec.open_count(b), spec.open_count(b + 1)) == (3, 1, 0)
        for fp in files:
            await spec.close(fp)
        assert (spec.open_count(a), spec.open_count(b)) == (0, 0)


# -- what the driver is given ----------------------------------------------------


async def test_read_and_write_give_the_driver_the_offset_and_o_nonblock() -> None:
    seen: list[tuple[str, int, int, int, bool]] = []

    async def d_read(dev: Dev, uio: Uio, ioflag: int) -> None:
        seen.append(("r", uio.offset, ioflag, uio.ioflag, uio.nonblock))
        uio.uiomove(b"x")

    async def d_write(dev: Dev, uio: Uio, ioflag: int) -> None:
        seen.append(("w", uio.offset, ioflag, uio.ioflag, uio.nonblock))
        uio.getbytes()

    spec = SpecFs(None)
    with attached("mutsp_flags", d_read=d_read, d_write=d_write) as maj:
        for flags in (os.O_RDWR, os.O_RDWR | os.O_NONBLOCK):
            fp = await spec.open(makedev(maj, 0), flags, 1, 0, 0)
            assert bytes(await spec.read(fp, 4)) == b"x"
            assert await spec.write(fp, b"ab") == 2
            assert bytes(await spec.read(fp, 4, 9)) == b"x"
            assert await spec.write(fp, b"ab", 7) == 2
            await spec.close(fp)
    block = [("r", 0, 0, 0, False), ("w", 0, 0, 0, False), ("r", 9, 0, 0, False), ("w", 7, 0, 0, False)]
    nonblock = [(rw, off, IO_NDELAY, IO_NDELAY, True) for rw, off, *_ in block]
    assert seen == block + nonblock


async def test_poll_tells_the_driver_who_polls_and_takes_every_poll_bit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers = [0xFFFF, 0x10000]
    callers: list[tuple[object, ...]] = []

    async def d_poll(dev: Dev, events: int, l: Lwp) -> int:
        callers.append((dev, events, l.pid, l.uid, l.gid, l.fp))
        return answers.pop(0)

    spec = SpecFs(None)
    with attached("mutsp_poll", d_poll=d_poll) as maj:
        fp = await spec.open(makedev(maj, 2), os.O_RDONLY, 55, 1000, 100)
        assert await spec.poll(fp, select.POLLIN) == 0xFFFF
        assert await spec.poll(fp, select.POLLOUT) == select.POLLERR
        await spec.close(fp)
    assert callers == [
        (fp.dev, select.POLLIN, 55, 1000, 100, fp),
        (fp.dev, select.POLLOUT, 55, 1000, 100, fp),
    ]
    assert messages(caplog, "devfsd.specfs") == ["driver d_poll returned 65536, not an int mask of poll bits"]


def test_open_flags_of_access_mode_3_are_read() -> None:
    """O_ACCMODE's fourth value (Linux's "no access", for ioctl-only opens)."""
    assert open_flags_to_fflag(os.O_ACCMODE) == FREAD
    assert open_flags_to_fflag(os.O_ACCMODE | os.O_NONBLOCK) == FREAD | FNONBLOCK


async def test_d_open_and_the_last_d_close_get_the_file_s_flags_mode_and_caller() -> None:
    calls: list[tuple[object, ...]] = []

    async def d_open(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
        calls.append(("open", dev, flag, mode, l.pid, l.uid, l.gid, l.fp))

    async def d_close(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
        calls.append(("close", dev, flag, mode, l.pid, l.uid, l.gid, l.fp))

    spec = SpecFs(None)
    with attached("mutsp_oc", d_open=d_open, d_close=d_close) as maj:
        dev = makedev(maj, 1)
        first = await spec.open(dev, os.O_RDONLY, 10, 1000, 100)
        last = await spec.open(dev, os.O_WRONLY | os.O_NONBLOCK, 11, 1001, 101)
        await spec.close(first)
        await spec.close(last)
    assert calls == [
        ("open", dev, FREAD, S_IFCHR_MODE, 10, 1000, 100, first),
        ("open", dev, FWRITE | FNONBLOCK, S_IFCHR_MODE, 11, 1001, 101, last),
        ("close", dev, FWRITE | FNONBLOCK, S_IFCHR_MODE, 11, 1001, 101, last),
    ]


async def test_a_file_closed_twice_counts_once() -> None:
    closes: list[Dev] = []

    async def d_close(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
        closes.append(dev)

    spec = SpecFs(None)
    with attached("mutsp_twice", d_close=d_close) as maj:
        a = await spec.open(makedev(maj, 0), os.O_RDWR, 1, 0, 0)
        b = await spec.open(makedev(maj, 0), os.O_RDWR, 1, 0, 0)
        await spec.close(a)
        await spec.close(a)
        assert closes == [] and spec.open_count(maj) == 1 and spec.files == {b}
        await spec.close(b)
    assert closes == [makedev(maj, 0)] and spec.files == set()


async def test_with_no_time_limit_a_call_that_moved_nothing_is_no_error() -> None:
    async def d_read(dev: Dev, uio: Uio, ioflag: int) -> None:
        await trio.lowlevel.checkpoint()  # end of file, after a wait

    async def d_write(dev: Dev, uio: Uio, ioflag: int) -> None:
        await trio.lowlevel.checkpoint()
        uio.getbytes()

    spec = SpecFs(None, entry_timeout=None)
    with attached("mutsp_nolimit", d_read=d_read, d_write=d_write) as maj:
        fp = await spec.open(makedev(maj, 0), os.O_RDWR, 1, 0, 0)
        assert bytes(await spec.read(fp, 10)) == b""
        assert await spec.write(fp, b"abc") == 3
        await spec.close(fp)


class Loader:
    """What SpecFs asks of the module list: autoload a named driver, note an open."""

    def __init__(self) -> None:
        self.used: list[int] = []
        self.autoloaded: list[str] = []
        self.open_count: Callable[[int], int] | None = None
        self.autoloads: dict[str, object] = {}

    async def autoload(self, name: str, l: Lwp | None = None, limit: float | None = None) -> bool:
        self.autoloaded.append(name)
        return False

    def note_use(self, maj: int) -> None:
        self.used.append(maj)


async def test_every_open_restarts_its_module_s_quiet_period_a_failed_one_does_not() -> None:
    async def refuse(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
        if minor(dev):
            raise DeviceError(errno.EBUSY)

    loader = Loader()
    spec = SpecFs(loader)  # type: ignore[arg-type]
    assert loader.open_count == spec.open_count  # autounload asks it before unloading
    with attached("mutsp_use", d_open=refuse) as maj:
        fp = await spec.open(makedev(maj, 0), os.O_RDWR, 1, 0, 0)
        with pytest.raises(DeviceError):
            await spec.open(makedev(maj, 1), os.O_RDWR, 1, 0, 0)
        await spec.close(fp)
    assert loader.used == [maj]
    assert loader.autoloaded == []


# -- ioctl: NetBSD's parameter rules ------------------------------------------------


def _unattached_major() -> int:
    maj = 4000
    while devsw.lookup(maj) is not None or devsw.getname(maj) is not None:
        maj -= 1
    return maj


async def test_ioctl_of_a_major_without_a_driver_is_enxio() -> None:
    with pytest.raises(DeviceError) as ei:
        await SpecFs(None).ioctl(makedev(_unattached_major(), 0), IOW(ord("z"), 1, 4), b"abcd", Lwp(1, 0, 0))
    assert ei.value.errno == errno.ENXIO


async def test_ioctl_data_is_copied_in_cut_or_zero_padded_and_out_only_as_the_command_says() -> None:
    seen: list[tuple[int, bytes]] = []

    async def d_ioctl(dev: Dev, cmd: int, data: bytearray, flag: int, l: Lwp) -> None:
        seen.append((cmd, bytes(data)))
        data[:] = b"\x07" * len(data)

    spec = SpecFs(None)
    w, r, wr = IOW(ord("z"), 1, 4), IOR(ord("z"), 2, 4), IOWR(ord("z"), 3, 4)
    with attached("mutsp_ioc", d_ioctl=d_ioctl) as maj:
        dev, l = makedev(maj, 0), Lwp(1, 0, 0)
        assert await spec.ioctl(dev, w, b"ab", l) == b""
        assert await spec.ioctl(dev, w, b"abcdef", l) == b""
        assert await spec.ioctl(dev, r, b"zz", l) == b"\x07" * 4
        assert await spec.ioctl(dev, wr, b"a\0c", l) == b"\x07" * 4
    assert seen == [(w, b"ab\0\0"), (w, b"abcd"), (r, b"\0" * 4), (wr, b"a\0c\0")]


async def test_ioctl_tells_the_driver_who_calls_on_which_file() -> None:
    callers: list[tuple[object, ...]] = []

    async def d_ioctl(dev: Dev, cmd: int, data: bytearray, flag: int, l: Lwp) -> None:
        callers.append((flag, l.pid, l.uid, l.gid, l.fp, l.dev))

    spec = SpecFs(None)
    with attached("mutsp_who", d_ioctl=d_ioctl) as maj:
        dev = makedev(maj, 3)
        fp = await spec.open(dev, os.O_RDWR, 77, 1000, 100)
        await spec.ioctl(dev, IOW(ord("z"), 1, 4), b"", Lwp(77, 1000, 100, fp), FREAD)
        await spec.ioctl(dev, IOW(ord("z"), 1, 4), b"", Lwp(78, 1001, 101))
        await spec.close(fp)
    assert callers == [(FREAD, 77, 1000, 100, fp, dev), (FREAD | FWRITE, 78, 1001, 101, None, dev)]


# -- read and write failures -------------------------------------------------------


def _failing_read(text: bytes, exc: BaseException, *, after_await: bool) -> Callable[[Dev, Uio, int], object]:
    async def d_read(dev: Dev, uio: Uio, ioflag: int) -> None:
        uio.uiomove(text)
        if after_await:  # the rest of the call, past the I/O path's first step
            await trio.lowlevel.checkpoint()
        raise exc

    return d_read


@pytest.mark.parametrize("after_await", [False, True])
@pytest.mark.parametrize("err", [errno.EINTR, errno.EWOULDBLOCK])
async def test_bytes_moved_win_over_eintr_and_ewouldblock_but_not_over_other_errors(
    err: int, after_await: bool
) -> None:
    spec = SpecFs(None)
    for text, exc, want in (
        (b"part", DeviceError(err), b"part"),
        (b"", DeviceError(err), err),
        (b"part", DeviceError(errno.EIO), errno.EIO),
        (b"part", DeviceError(errno.ENOSPC), errno.ENOSPC),
    ):
        with attached("mutsp_part", d_read=_failing_read(text, exc, after_await=after_await)) as maj:
            fp = await spec.open(makedev(maj, 0), os.O_RDONLY, 1, 0, 0)
            try:
                if isinstance(want, bytes):
                    assert bytes(await spec.read(fp, 10)) == want
                else:
                    with pytest.raises(DeviceError) as ei:
                        await spec.read(fp, 10)
                    assert ei.value.errno == want
            finally:
                await spec.close(fp)


@pytest.mark.parametrize("after_await", [False, True])
async def test_a_stall_the_watchdog_interrupts_is_etimedout_unless_bytes_moved(after_await: bool) -> None:
    spec = SpecFs(None)
    for text in (b"", b"part"):
        with attached(
            "mutsp_stall", d_read=_failing_read(text, DriverStall(), after_await=after_await)
        ) as maj:
            fp = await spec.open(makedev(maj, 0), os.O_RDONLY, 1, 0, 0)
            try:
                if text:
                    assert bytes(await spec.read(fp, 10)) == text
                else:
                    with pytest.raises(DeviceError) as ei:
                        await spec.read(fp, 10)
                    assert ei.value.errno == errno.ETIMEDOUT
            finally:
                await spec.close(fp)


@pytest.mark.parametrize("after_await", [False, True])
async def test_ewouldblock_after_a_ready_poll_notifies_the_kept_handle_once(after_await: bool) -> None:
    """EPOLLET: the handle of a poll answered ready is notified when the
    file stops being ready (EWOULDBLOCK), and only then."""
    errs = [errno.EIO, errno.EWOULDBLOCK, errno.EWOULDBLOCK]

    async def d_read(dev: Dev, uio: Uio, ioflag: int) -> None:
        if after_await:
            await trio.lowlevel.checkpoint()
        raise DeviceError(errs.pop(0))

    spec = SpecFs(None)
    with attached("mutsp_et", d_read=d_read, d_write=d_read) as maj:
        fp = await spec.open(makedev(maj, 0), os.O_RDWR, 1, 0, 0)
        h = Handle()
        assert await spec.poll(fp, poll_handle=h)  # seltrue: ready, handle kept
        with pytest.raises(DeviceError):  # EIO: still ready as far as the poller knows
            await spec.read(fp, 10)
        assert h.notified == 0
        with pytest.raises(DeviceError):  # EWOULDBLOCK: notified, handle dropped
            await spec.read(fp, 10)
        assert h.notified == 1
        with pytest.raises(DeviceError):  # no poll since: nothing to notify
            await spec.write(fp, b"x")
        assert h.notified == 1
        await spec.close(fp)


async def test_a_kept_handle_whose_poller_is_gone_is_dropped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="devfsd.specfs")

    class Gone:
        def notify(self) -> None:
            raise OSError(errno.EBADF, "gone")

    async def d_read(dev: Dev, uio: Uio, ioflag: int) -> None:
        raise DeviceError(errno.EWOULDBLOCK)

    spec = SpecFs(None)
    with attached("mutsp_gone", d_read=d_read) as maj:
        fp = await spec.open(makedev(maj, 0), os.O_RDONLY, 1, 0, 0)
        assert await spec.poll(fp, poll_handle=Gone())
        for _ in range(2):
            with pytest.raises(DeviceError) as ei:
                await spec.read(fp, 10)
            assert ei.value.errno == errno.EWOULDBLOCK
        await spec.close(fp)
    assert messages(caplog, "devfsd.specfs") == ["poll notify failed: [Errno 9] gone"]


# -- what the log says ----------------------------------------------------------


async def _each_entry_point(spec: SpecFs, maj: int) -> list[int]:
    """read, write, poll, ioctl on a fresh open of ``maj``: the errnos (poll: its answer)."""
    fp = await spec.open(makedev(maj, 0), os.O_RDWR, 1, 0, 0)
    out: list[int] = []
    for call in (
        spec.read(fp, 10),
        spec.write(fp, b"x"),
        spec.ioctl(fp.dev, IOW(ord("z"), 1, 4), b"", Lwp(1, 0, 0, fp)),
        spec.poll(fp),
    ):
        try:
            out.append(await call)  # type: ignore[arg-type]
        except DeviceError as exc:
            out.append(exc.errno)
    await spec.close(fp)
    return out


@pytest.mark.parametrize("later", [False, True], ids=["first-step", "after-an-await"])
@pytest.mark.parametrize("traced", [False, True])
async def test_a_driver_exception_is_logged_naming_the_entry_point(
    traced: bool, later: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="devfsd.specfs")

    async def bug(*args: object) -> None:
        if later:
            await trio.lowlevel.checkpoint()
        raise RuntimeError("bug")

    spec = SpecFs(None)
    with (
        attached("mutsp_exc", d_read=bug, d_write=bug, d_ioctl=bug, d_poll=bug, d_close=bug) as maj,
        _traced(spec, maj, traced),
    ):
        got = await _each_entry_point(spec, maj)
    assert got == [errno.EIO] * 4
    assert messages(caplog, "devfsd.contain") == [
        f"driver {name} raised RuntimeError: Input/output error"
        for name in ("d_read", "d_write", "d_ioctl", "d_poll", "d_close")
    ]
    # close(2) has returned: d_close's error is only noted
    assert messages(caplog, "devfsd.specfs") == [f"d_close of {makedev(maj, 0):#x}: Input/output error"]


@pytest.mark.parametrize("later", [False, True], ids=["first-step", "after-an-await"])
@pytest.mark.parametrize("traced", [False, True])
async def test_a_wrong_return_is_logged_exactly(
    traced: bool, later: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async def five(*args: object) -> int:
        if later:
            await trio.lowlevel.checkpoint()
        return 5

    async def poll_text(*args: object) -> str:
        return "ready"

    spec = SpecFs(None)
    with (
        attached("mutsp_ret", d_read=five, d_write=five, d_ioctl=five, d_poll=poll_text, d_close=five) as maj,
        _traced(spec, maj, traced),
    ):
        got = await _each_entry_point(spec, maj)
    assert got == [errno.EIO, errno.EIO, errno.EIO, select.POLLERR]
    assert messages(caplog, "devfsd.specfs") == [
        "driver d_read returned 5, not None",
        "driver d_write returned 5, not None",
        "driver d_ioctl returned 5, not None",
        "driver d_poll returned 'ready', not an int mask of poll bits",
        "driver d_close returned 5, not None",
    ]


async def test_a_hang_in_any_entry_point_is_etimedout_and_logged_exactly_with_its_stack(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Unit 0 hangs in d_open, unit 1 in every other entry point."""

    async def hang(*args: object) -> None:
        await trio.sleep(60)

    async def d_open(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
        if minor(dev) == 0:
            await trio.sleep(60)

    spec = SpecFs(None, entry_timeout=2.5)
    took: list[float] = []

    async def timed_out(call: Awaitable[object]) -> None:
        t0 = trio.current_time()
        with pytest.raises(DeviceError) as ei:
            await call
        assert ei.value.errno == errno.ETIMEDOUT
        took.append(trio.current_time() - t0)

    entries = dict.fromkeys(("d_read", "d_write", "d_ioctl", "d_poll", "d_close"), hang)
    with attached("mutsp_hang", d_open=d_open, **entries) as maj:
        await timed_out(spec.open(makedev(maj, 0), os.O_RDWR, 1, 0, 0))
        fp = await spec.open(makedev(maj, 1), os.O_RDWR, 1, 0, 0)
        await timed_out(spec.read(fp, 10))
        await timed_out(spec.write(fp, b"x"))
        await timed_out(spec.ioctl(fp.dev, IOW(ord("z"), 1, 4), b"", Lwp(1, 0, 0, fp)))
        await timed_out(spec.poll(fp))
        t0 = trio.current_time()
        await spec.close(fp)  # its ETIMEDOUT is noted only
        took.append(trio.current_time() - t0)
    assert took == [2.5] * 6
    recs = [r for r in caplog.records if r.name == "devfsd.specfs" and r.levelno == logging.ERROR]
    assert [r.getMessage() for r in recs] == [
        f"driver {name} still running after 2.5 s: cancelled"
        for name in ("d_open", "d_read", "d_write", "d_ioctl", "d_poll", "d_close")
    ]
    assert all(r.exc_info is not None and r.exc_info[0] is trio.Cancelled for r in recs)


async def test_a_limit_of_zero_seconds_cancels_every_entry_point_at_its_first_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def hang(*args: object) -> None:
        await trio.sleep(60)

    spec = SpecFs(None, entry_timeout=0)
    took: list[float] = []
    with attached("mutsp_zero", d_read=hang, d_write=hang, d_ioctl=hang, d_poll=hang) as maj:
        fp = await spec.open(makedev(maj, 0), os.O_RDWR, 1, 0, 0)
        for call in (
            spec.read(fp, 10),
            spec.write(fp, b"x"),
            spec.ioctl(fp.dev, IOW(ord("z"), 1, 4), b"", Lwp(1, 0, 0, fp)),
            spec.poll(fp),
        ):
            t0 = trio.current_time()
            with pytest.raises(DeviceError) as ei:
                await call
            assert ei.value.errno == errno.ETIMEDOUT
            took.append(trio.current_time() - t0)
        await spec.close(fp)
    assert took == [0.0] * 4


async def test_a_stall_the_watchdog_interrupts_in_any_entry_point_is_etimedout() -> None:
    async def stall(*args: object) -> None:
        raise DriverStall

    spec = SpecFs(None)
    got: list[int] = []
    with attached("mutsp_stall_any", d_write=stall, d_ioctl=stall, d_poll=stall) as maj:
        fp = await spec.open(makedev(maj, 0), os.O_RDWR, 1, 0, 0)
        for call in (
            spec.write(fp, b"x"),
            spec.ioctl(fp.dev, IOW(ord("z"), 1, 4), b"", Lwp(1, 0, 0, fp)),
            spec.poll(fp),
        ):
            with pytest.raises(DeviceError) as ei:
                await call
            got.append(ei.value.errno)
        await spec.close(fp)
    with attached("mutsp_stall_open", d_open=stall) as maj, pytest.raises(DeviceError) as ei:
        await spec.open(makedev(maj, 0), os.O_RDWR, 1, 0, 0)
    assert [*got, ei.value.errno] == [errno.ETIMEDOUT] * 4


# -- a driver that breaks its uio --------------------------------------------------


async def test_a_read_that_moved_more_than_asked_is_eio_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def d_read(dev: Dev, uio: Uio, ioflag: int) -> None:
        uio.resid += 3
        uio.uiomove(b"12345678")

    spec = SpecFs(None)
    with attached("mutsp_over", d_read=d_read) as maj:
        fp = await spec.open(makedev(maj, 0), os.O_RDONLY, 1, 0, 0)
        with pytest.raises(DeviceError) as ei:
            await spec.read(fp, 5)
        await spec.close(fp)
    assert ei.value.errno == errno.EIO
    assert messages(caplog, "devfsd.specfs") == ["driver d_read moved 8 bytes as memoryview for a read of 5"]


@pytest.mark.parametrize(
    ("resid", "shown"), [(-1, "-1"), (9, "9"), (1.5, "1.5"), ("x", "'x'"), (None, "None"), (True, "True")]
)
async def test_a_write_that_left_resid_out_of_range_is_eio_and_logged(
    resid: object, shown: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def d_write(dev: Dev, uio: Uio, ioflag: int) -> None:
        uio.resid = resid  # type: ignore[assignment]

    spec = SpecFs(None)
    with attached("mutsp_resid", d_write=d_write) as maj:
        fp = await spec.open(makedev(maj, 0), os.O_WRONLY, 1, 0, 0)
        with pytest.raises(DeviceError) as ei:
            await spec.write(fp, b"abc")
        await spec.close(fp)
    assert ei.value.errno == errno.EIO
    assert messages(caplog, "devfsd.specfs") == [f"driver d_write left resid {shown} of 3"]


class _Moves:
    """What a ``d_read`` that is not an ``async def`` returns: an awaitable
    (not a coroutine) that sleeps, then moves its bytes."""

    def __init__(self, uio: Uio) -> None:
        self.uio = uio

    def __await__(self) -> Generator[Any, Any, None]:
        return self._run().__await__()

    async def _run(self) -> None:
        await trio.sleep(0.5)
        self.uio.uiomove(b"late")


@pytest.mark.usefixtures("trio_path")
async def test_an_entry_point_that_returns_an_awaitable_not_a_coroutine_is_awaited(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The fast path takes a coroutine's first step inline; any other
    # awaitable goes the plain way, under the same limit.
    def d_read(dev: Dev, uio: Uio, ioflag: int) -> _Moves:
        return _Moves(uio)

    spec = SpecFs(None, entry_timeout=1.0)
    with attached("mutsp_awaitable", d_read=d_read) as maj:
        fp = await spec.open(makedev(maj, 0), os.O_RDONLY, 1, 0, 0)
        assert bytes(await spec.read(fp, 10)) == b"late"
        await spec.close(fp)


@pytest.mark.usefixtures("trio_path")
@pytest.mark.parametrize("marked", [True, False])
async def test_an_entry_point_marked_sync_done_may_finish_without_a_coroutine(
    marked: bool, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # An isolated module's proxy reads this way (specfs.SYNC_DONE): None
    # when it has done its work, else an awaitable for the rest, run under
    # the same limit. Unmarked, None is a driver's forgotten async: EIO.
    def d_read(dev: Dev, uio: Uio, ioflag: int) -> _Moves | None:
        if uio.offset:
            return _Moves(uio)
        uio.uiomove(b"now")
        return None

    if marked:
        setattr(d_read, SYNC_DONE, True)
    spec = SpecFs(None, entry_timeout=1.0)
    with attached("mutsp_syncdone", d_read=d_read) as maj:
        fp = await spec.open(makedev(maj, 0), os.O_RDONLY, 1, 0, 0)
        if marked:
            assert bytes(await spec.read(fp, 10)) == b"now"
            assert bytes(await spec.read(fp, 10, 1)) == b"late"
        else:
            with pytest.raises(DeviceError) as ei:
                await spec.read(fp, 10)
            assert ei.value.errno == errno.EIO
            assert "TypeError" in caplog.text
        await spec.close(fp)


async def _read_now(spec: SpecFs, fp: File, size: int, off: int = 0) -> bytes:
    """``spec.read_now``'s data, awaited if it gave a coroutine."""
    got = spec.read_now(fp, size, off)
    if isinstance(got, Coroutine):
        return bytes(await got)
    return bytes(got)


@pytest.mark.usefixtures("trio_path")
@pytest.mark.parametrize("traced", [False, True])
async def test_read_now_gives_a_first_step_read_at_once_and_a_coroutine_for_the_rest(
    traced: bool, autojump_clock: trio.testing.MockClock
) -> None:
    # A module host answers READ this way (SpecFs.read_now): the data when
    # the driver finished in its first step, else (a sleep; or a tracer
    # attached, or the fast paths off) a coroutine that gives it, checked
    # as read's.
    at_once = not traced and _trioloop.PRIVATE is not None

    async def d_read(dev: Dev, uio: Uio, ioflag: int) -> None:
        if uio.offset == 1:
            await trio.sleep(0.5)
        if uio.offset == 2:
            raise DeviceError(errno.EPERM)
        uio.uiomove(b"now")

    spec = SpecFs(None, entry_timeout=1.0)
    with attached("mutsp_readnow", d_read=d_read) as maj:
        fp = await spec.open(makedev(maj, 0), os.O_RDONLY, 1, 0, 0)
        with _traced(spec, maj, traced):
            assert spec.read_now(fp, 0) == b""
            now = spec.read_now(fp, 10)
            assert isinstance(now, Coroutine) is not at_once
            assert bytes(await now if isinstance(now, Coroutine) else now) == b"now"
            later = spec.read_now(fp, 10, 1)  # asleep in its first step
            assert isinstance(later, Coroutine)
            assert bytes(await later) == b"now"
            with pytest.raises(DeviceError) as ei:  # the driver's error, as read's
                await _read_now(spec, fp, 3, 2)
            assert ei.value.errno == errno.EPERM
        assert fp.cdevsw is not None
        devsw_detach(fp.cdevsw)
        with pytest.raises(DeviceError) as ei:
            await _read_now(spec, fp, 10)
        assert ei.value.errno == errno.ENXIO
        await spec.close(fp)
