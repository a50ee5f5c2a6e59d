"""mm(4) through the harness: null, zero and full, their errors, and the module's life.

Every test that loads mm runs twice (the ``isolated`` fixture): mm in
process, and in a module host of its own (issue 14).
"""

from __future__ import annotations

import errno
import select
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest

from devfsd.cdevsw import devsw
from devfsd.errors import DeviceError
from devfsd.kern import ModCmd
from devfsd.testing.harness import Kernel
from modules.mm.mm import DEV_FULL, DEV_NULL, DEV_ZERO, ZERO_SIZE

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

_POLL_ALL = select.POLLIN | select.POLLOUT | select.POLLRDNORM | select.POLLWRNORM


@asynccontextmanager
async def mm_kernel(isolate: bool = False) -> AsyncIterator[Kernel]:
    """A harness kernel with mm loaded; with ``isolate``, in a module host of its own."""
    async with Kernel.running(isolate=isolate) as k:
        await k.modload("mm")
        yield k


async def test_minors_are_netbsds() -> None:
    assert (DEV_NULL, DEV_FULL, DEV_ZERO) == (2, 11, 12)


async def test_attach_takes_major_2(isolated: bool) -> None:
    async with mm_kernel(isolated):
        assert devsw.getmajor("mm") == 2
        assert devsw.lookup(2) is not None


async def test_null_reads_end_of_file(isolated: bool) -> None:
    async with mm_kernel(isolated) as k:
        f = await k.open("mm", DEV_NULL)
        assert await f.read(4096) == b""
        await f.close()


@pytest.mark.parametrize("minor", [DEV_NULL, DEV_ZERO])
async def test_write_takes_the_full_count(minor: int, isolated: bool) -> None:
    async with mm_kernel(isolated) as k:
        f = await k.open("mm", minor)
        assert await f.write(b"x" * 100_000) == 100_000
        assert await f.write(b"y") == 1
        assert await f.write(b"") == 0
        await f.close()


@pytest.mark.parametrize("minor", [DEV_ZERO, DEV_FULL])
@pytest.mark.parametrize("size", [1, 4096, 131072, ZERO_SIZE, ZERO_SIZE + 5])
async def test_read_fills_the_whole_buffer_with_zeros(minor: int, size: int, isolated: bool) -> None:
    async with mm_kernel(isolated) as k:
        f = await k.open("mm", minor)
        assert await f.read(size) == bytes(size)
        await f.close()


async def test_zero_reads_slice_one_preallocated_buffer() -> None:
    # No allocation of the data per read: every reply is a view of one buffer.
    # In process only: isolated, the reply is a view of the daemon's receive buffer.
    async with mm_kernel() as k:
        f = await k.open("mm", DEV_ZERO)
        a = await k.spec.read(f.fp, 4096)
        b = await k.spec.read(f.fp, 65536)
        assert isinstance(a, memoryview) and isinstance(b, memoryview)
        assert a.obj is b.obj
        assert (a.nbytes, b.nbytes) == (4096, 65536)
        await f.close()


async def test_full_write_is_enospc(isolated: bool) -> None:
    async with mm_kernel(isolated) as k:
        f = await k.open("mm", DEV_FULL)
        with pytest.raises(DeviceError) as ei:
            await f.write(b"x")
        assert ei.value.errno == errno.ENOSPC
        await f.close()


@pytest.mark.parametrize("minor", [0, 1, 3, 10, 13, 255, 1 << 19])
async def test_other_minors_are_enxio_at_open(minor: int, isolated: bool) -> None:
    async with mm_kernel(isolated) as k:
        with pytest.raises(DeviceError) as ei:
            await k.open("mm", minor)
        assert ei.value.errno == errno.ENXIO
        assert k.spec.opens == {}


@pytest.mark.parametrize("minor", [DEV_NULL, DEV_ZERO, DEV_FULL])
async def test_poll_is_always_ready(minor: int, isolated: bool) -> None:
    async with mm_kernel(isolated) as k:
        f = await k.open("mm", minor)
        assert await f.poll() == _POLL_ALL
        assert await f.poll(select.POLLIN) == select.POLLIN
        await f.close()


async def test_unload_while_open_then_io_is_enxio(isolated: bool) -> None:
    async with mm_kernel(isolated) as k:
        f = await k.open("mm", DEV_ZERO)
        await k.modunload("mm")
        assert devsw.lookup(2) is None
        with pytest.raises(DeviceError) as ei:
            await f.read(10)
        assert ei.value.errno == errno.ENXIO
        with pytest.raises(DeviceError) as ei:
            await f.write(b"x")
        assert ei.value.errno == errno.ENXIO
        assert await f.poll() == select.POLLERR
        await f.close()


async def test_reload_serves_again(isolated: bool) -> None:
    async with mm_kernel(isolated) as k:
        await k.modunload("mm")
        await k.modload("mm")
        f = await k.open("mm", DEV_ZERO)
        assert await f.read(3) == b"\0\0\0"
        await f.close()


async def test_load_twice_is_eexist(isolated: bool) -> None:
    async with mm_kernel(isolated) as k:
        with pytest.raises(DeviceError) as ei:
            await k.modload("mm")
        assert ei.value.errno == errno.EEXIST


async def test_stat_is_enotty(isolated: bool) -> None:
    async with mm_kernel(isolated) as k:
        with pytest.raises(DeviceError) as ei:
            await k.loader.modules["mm"].modcmd(ModCmd.STAT, None)
        assert ei.value.errno == errno.ENOTTY


async def test_autounload_is_allowed_even_while_open(isolated: bool) -> None:
    async with mm_kernel(isolated) as k:
        f = await k.open("mm", DEV_NULL)
        await k.loader.modules["mm"].modcmd(ModCmd.AUTOUNLOAD, None)
        await f.close()
