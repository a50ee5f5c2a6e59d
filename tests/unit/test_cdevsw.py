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


def test_table_runs_out() -> None:
    t = DevswTable(reserved={}, dynamic_base=510)
    t.attach("a", Cdevsw())
    t.attach("b", Cdevsw())
    with pytest.raises(DeviceError) as ei:
        t.attach("c", Cdevsw())
    assert ei.value.errno == errno.ENOMEM


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
