"""Device numbers, uio, the major table and stubs."""

from __future__ import annotations

import errno
import os
from select import POLLPRI
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devfsd.cdevsw import (
    IOCPARM_LEN,
    IOW,
    POLLIN,
    Cdevsw,
    DevswTable,
    Lwp,
    Uio,
    devsw,
    devsw_attach,
    devsw_detach,
    major,
    makedev,
    minor,
    noread,
    nullopen,
    seltrue,
)
from devfsd.cdevsw._table import MAXDEVNAME
from devfsd.cdevsw._wait import signal_pending
from devfsd.errors import DeviceError
from devfsd.specfs import SpecFs

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from devfsd.cdevsw import Dev

L = Lwp(1, 0, 0)


@given(st.integers(0, 4095), st.integers(0, (1 << 20) - 1))
def test_makedev_matches_os(maj: int, mnr: int) -> None:
    d = makedev(maj, mnr)
    assert d == os.makedev(maj, mnr)
    assert (major(d), minor(d)) == (maj, mnr)


def test_uio_read_never_exceeds_resid() -> None:
    u = Uio.for_read(5, L)
    assert u.uiomove(b"abc") == 3
    assert u.uiomove(b"defgh") == 2
    assert u.uiomove(b"x") == 0
    assert bytes(u.moved()) == b"abcde" and u.resid == 0 and u.offset == 5


def test_uio_write() -> None:
    u = Uio.for_write(b"hello world", L)
    buf = bytearray(5)
    assert u.uiomove(buf) == 5 and buf == b"hello"
    assert u.getbytes(1) == b" "
    assert u.getbytes() == b"world" and u.resid == 0
    with pytest.raises(ValueError, match="read uio"):
        Uio.for_read(1, L).getbytes()


def test_table_majors_persist_and_conflict() -> None:
    t = DevswTable(reserved={"tun": 40}, dynamic_base=256)
    a, b = Cdevsw(), Cdevsw()
    assert t.attach("tun", a) == 40
    assert t.attach("new", b) == 256
    with pytest.raises(DeviceError) as ei:
        t.attach("new", Cdevsw())
    assert ei.value.errno == errno.EEXIST
    with pytest.raises(DeviceError) as ei:
        t.attach("tun", Cdevsw(), 41)
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(DeviceError) as ei:
        t.attach("other", Cdevsw(), 40)
    assert ei.value.errno == errno.EEXIST
    with pytest.raises(DeviceError) as ei:
        t.attach("x", Cdevsw(), 512)
    assert ei.value.errno == errno.EINVAL
    t.detach(b)
    assert t.lookup(256) is None and t.getmajor("new") == 256
    assert t.attach("new", Cdevsw()) == 256
    assert t.attach("third", Cdevsw()) == 257
    assert [e[0] for e in t.entries()] == ["tun", "new", "third"]


def test_a_reservation_wins_over_a_states_row_and_the_row_is_said() -> None:
    """A newer devfsd may reserve a name (or a major) an older one's state
    gave out otherwise: the reservation wins, the row is returned (the
    daemon logs it), and a major whose name the reservation took is held:
    given to no new name (its old nodes must not reach another driver, and
    the state must never record a major twice), and a host told of it
    (``hold``) does not pick it either."""
    t = DevswTable(reserved={"tun": 40, "mm": 2}, dynamic_base=256)
    clashes = t.restore({"tun": 256, "bar": 2, "same": 300, "mm": 2, "both": 40})
    assert clashes == [("tun", 256, "tun", 40), ("bar", 2, "mm", -1), ("both", 40, "tun", -1)]
    assert (t.getmajor("tun"), t.getmajor("mm"), t.getmajor("same")) == (40, 2, 300)
    assert t.getmajor("bar") is None and t.getmajor("both") is None and t.getname(256) is None
    assert t.held() == [256]
    assert t.attach("new", Cdevsw()) == 257  # not the held 256
    assert t.attach("bar", Cdevsw()) == 258  # bar lost its major: a new one
    with pytest.raises(DeviceError) as ei:
        t.attach("other", Cdevsw(), 256)
    assert ei.value.errno == errno.EEXIST
    host = DevswTable(reserved={"tun": 40, "mm": 2}, dynamic_base=256)
    host.restore({n: m for n, m, _ in t.entries()})
    host.hold(t.held())
    assert host.attach("fresh", Cdevsw()) == 259


def test_table_runs_out() -> None:
    t = DevswTable(reserved={}, dynamic_base=510)
    t.attach("a", Cdevsw())
    t.attach("b", Cdevsw())
    with pytest.raises(DeviceError) as ei:
        t.attach("c", Cdevsw())
    assert ei.value.errno == errno.ENOMEM


@pytest.mark.parametrize(
    ("name", "err"),
    [
        ("", errno.EINVAL),
        (None, errno.EINVAL),
        (b"tun", errno.EINVAL),
        ("a" * (MAXDEVNAME + 1), errno.ENAMETOOLONG),
        ("a" * 500, errno.ENAMETOOLONG),
        ("evil\nNAME", errno.EINVAL),  # would forge a line of modstat, mknod -l, the log
        ("nul\0", errno.EINVAL),
        ("esc\x1b[2J", errno.EINVAL),
        ("del\x7f", errno.EINVAL),
        ("two words", errno.EINVAL),
        ("tab\t", errno.EINVAL),
        ("a/b", errno.EINVAL),
        ("\u043c\u043c", errno.EINVAL),  # Cyrillic, looks like "mm"
        ("0day", errno.EINVAL),  # mknod(8) takes a leading digit for a number
        ("42", errno.EINVAL),
    ],
)
def test_a_bad_driver_name_is_refused_and_nothing_is_recorded(name: object, err: int) -> None:
    t = DevswTable(reserved={}, dynamic_base=256)
    recorded: list[tuple[str, int]] = []
    t.on_new_name = lambda n, m: recorded.append((n, m))
    with pytest.raises(DeviceError) as ei:
        t.attach(name, Cdevsw())  # type: ignore[arg-type]
    assert ei.value.errno == err
    assert recorded == [] and t.entries() == [] and t.attached() == {}


@pytest.mark.parametrize("name", ["a", "tun", "k_helper2", "if-tun.0", "x@y+z:1", "a" * MAXDEVNAME, "_0"])
def test_good_driver_names_attach(name: str) -> None:
    t = DevswTable(reserved={}, dynamic_base=256)
    recorded: list[tuple[str, int]] = []
    t.on_new_name = lambda n, m: recorded.append((n, m))
    assert t.attach(name, Cdevsw()) == 256
    assert recorded == [(name, 256)]


@pytest.mark.parametrize("maj", [True, 2.0, "2", None])
def test_a_major_that_is_no_int_is_refused(maj: object) -> None:
    t = DevswTable(reserved={}, dynamic_base=256)
    with pytest.raises(DeviceError) as ei:
        t.attach("x", Cdevsw(), maj)  # type: ignore[arg-type]
    assert ei.value.errno == errno.EINVAL
    assert t.entries() == []


def test_check_says_what_attach_would_do_and_changes_nothing() -> None:
    t = DevswTable(reserved={"tun": 40}, dynamic_base=256)
    recorded: list[tuple[str, int]] = []
    t.on_new_name = lambda n, m: recorded.append((n, m))
    assert t.check("tun") == 40
    assert t.check("new") == 256
    assert t.check("new", 300) == 300
    for name, maj, err in (("tun", 41, errno.EINVAL), ("other", 40, errno.EEXIST), ("x", -2, errno.EINVAL)):
        with pytest.raises(DeviceError) as ei:
            t.check(name, maj)
        assert ei.value.errno == err
    assert recorded == [] and t.attached() == {} and [e[0] for e in t.entries()] == ["tun"]
    t.attach("tun", Cdevsw())
    with pytest.raises(DeviceError) as ei:
        t.check("tun")
    assert ei.value.errno == errno.EEXIST


async def test_stubs() -> None:
    with pytest.raises(DeviceError) as ei:
        await noread(makedev(1, 1), Uio.for_read(1, L), 0)
    assert ei.value.errno == errno.ENODEV
    assert await seltrue(makedev(1, 1), POLLIN | POLLPRI, L) == POLLIN
    assert Cdevsw().d_read is noread


def test_ioccom() -> None:
    assert IOW(ord("t"), 90, 4) == 0x8004745A
    assert IOCPARM_LEN(IOW(ord("t"), 90, 4)) == 4


def test_signal_pending_of_self_and_gone() -> None:
    assert signal_pending(os.getpid()) is False
    assert signal_pending(2**22 + 12345) is True  # no such process: nobody waits


def _reader(text: bytes) -> Callable[[Dev, Uio, int], Awaitable[None]]:
    async def d_read(dev: Dev, uio: Uio, ioflag: int) -> None:
        uio.uiomove(text)

    return d_read


async def test_files_of_a_detached_cdevsw_stay_dead_when_the_major_is_attached_again() -> None:
    spec = SpecFs(None)
    old = Cdevsw(d_open=nullopen, d_read=_reader(b"old"))
    maj = devsw_attach("deadtest", old)
    new = Cdevsw(d_open=nullopen, d_read=_reader(b"new"))
    try:
        fp = await spec.open(makedev(maj, 0), os.O_RDWR, 1, 0, 0)
        assert bytes(await spec.read(fp, 3)) == b"old"
        devsw_detach(old)
        devsw_attach("deadtest", new)
        for call in (spec.read(fp, 3), spec.write(fp, b"x")):
            with pytest.raises(DeviceError) as ei:
                await call
            assert ei.value.errno == errno.ENXIO
        fp2 = await spec.open(makedev(maj, 0), os.O_RDONLY, 1, 0, 0)
        assert bytes(await spec.read(fp2, 3)) == b"new"  # a new open reaches the new driver
        await spec.close(fp)
        await spec.close(fp2)
    finally:
        for c in (old, new):
            if devsw.names_of(c):
                devsw_detach(c)


async def test_a_file_whose_driver_detached_during_d_open_is_dead() -> None:
    spec = SpecFs(None)

    async def d_open(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
        devsw_detach(cdev)

    cdev = Cdevsw(d_open=d_open, d_read=_reader(b"x"))
    maj = devsw_attach("deadopen", cdev)
    fp = await spec.open(makedev(maj, 0), os.O_RDONLY, 1, 0, 0)
    with pytest.raises(DeviceError) as ei:
        await spec.read(fp, 1)
    assert ei.value.errno == errno.ENXIO
    await spec.close(fp)
