"""An in-process kernel: load modules and call their entry points without FUSE.

Uses trio; never pyfuse3. The calls go through the same ``SpecFs`` the file
system uses, so open counting, ``d_close`` on last close, ``ENXIO`` after
unload and ``EIO`` for driver exceptions behave as behind a real mount::

    async with Kernel.running() as k:
        await k.modload("crandom")
        f = await k.open("crandom", 0)
        await f.write(b"hello")
        assert sorted(await f.read(5)) == sorted(b"hello")
        await f.close()
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, final

import trio

from devfsd.cdevsw._dev import Dev, makedev
from devfsd.cdevsw._switch import Lwp
from devfsd.cdevsw._table import devsw
from devfsd.cdevsw._wait import abort_sleepers
from devfsd.errors import DeviceError
from devfsd.kern.loader import ModuleLoader
from devfsd.specfs import DEFAULT_ENTRY_TIMEOUT, SpecFs

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from devfsd.cdevsw._switch import File
    from devfsd.cdevsw._uio import Buffer
    from devfsd.kern.module import Props

__all__ = ["Kernel", "OpenFile"]


@final
class OpenFile:
    """One open of a device in the harness."""

    def __init__(self, k: Kernel, fp: File) -> None:
        self.kernel = k
        self.fp = fp

    @property
    def dev(self) -> Dev:
        return self.fp.dev

    async def read(self, size: int) -> bytes:
        return bytes(await self.kernel.spec.read(self.fp, size))

    async def write(self, data: Buffer) -> int:
        """``d_write``; returns the bytes the driver took, as write(2) would
        (fewer than ``len(data)`` for a short write)."""
        return await self.kernel.spec.write(self.fp, data)

    async def poll(self, events: int | None = None, poll_handle: object = None) -> int:
        """The driver's ``d_poll``; ``poll_handle`` (anything with ``notify()``)
        is what ``selrecord`` keeps and ``wakeup`` notifies, as the kernel's."""
        if events is None:
            return await self.kernel.spec.poll(self.fp, poll_handle=poll_handle)
        return await self.kernel.spec.poll(self.fp, events, poll_handle)

    async def close(self) -> None:
        await self.kernel.spec.close(self.fp)


@final
class Kernel:
    """Module loader + device switch + I/O path, in this process."""

    def __init__(
        self,
        modpath: Iterable[str | os.PathLike[str]] = (),
        *,
        autotime: float = 0.0,
        entry_timeout: float | None = DEFAULT_ENTRY_TIMEOUT,
        isolate: bool = False,
    ) -> None:
        self.loader = ModuleLoader(modpath, autotime=autotime)
        #: Every module in a host process of its own (``modload -I``, devfsd.isolate).
        self.loader.isolate_all = isolate
        self.spec = SpecFs(self.loader, entry_timeout=entry_timeout)
        self.loader.host_timeout = self.spec.entry_timeout  # as the daemon's

    @classmethod
    @asynccontextmanager
    async def running(
        cls,
        modpath: Iterable[str | os.PathLike[str]] = (),
        *,
        autotime: float = 0.0,
        entry_timeout: float | None = DEFAULT_ENTRY_TIMEOUT,
        isolate: bool = False,
    ) -> AsyncIterator[Kernel]:
        """A kernel whose module threads run; everything is unloaded and reset on exit.
        ``isolate``: every module loads in a host process of its own (``modload -I``)."""
        k = cls(modpath, autotime=autotime, entry_timeout=entry_timeout, isolate=isolate)
        devsw.reset()
        failure: BaseException | None = None
        async with trio.open_nursery() as nursery:
            await nursery.start(k.loader.run)
            try:
                yield k
            except BaseException as exc:
                # Re-raised below, outside the nursery, so that a test sees
                # its own exception rather than an ExceptionGroup.
                failure = exc
            finally:
                abort_sleepers()
                with trio.CancelScope(shield=True):
                    await k.loader.unload_all()
                nursery.cancel_scope.cancel()
        devsw.reset()
        if failure is not None:
            raise failure

    async def modload(self, module: str, props: Props | None = None) -> None:
        await self.loader.load(module, props)

    async def modunload(self, module: str) -> None:
        await self.loader.unload(module)

    def dev(self, driver: str | int, unit: int) -> Dev:
        """``makedev`` with a driver name or a major."""
        if isinstance(driver, str):
            maj = devsw.getmajor(driver)
            if maj is None:
                raise DeviceError(2, f"unknown driver: {driver}")
            return makedev(maj, unit)
        return makedev(driver, unit)

    async def open(
        self,
        driver: str | int,
        unit: int = 0,
        flags: int = os.O_RDWR,
        *,
        pid: int | None = None,
        uid: int = 0,
        gid: int = 0,
    ) -> OpenFile:
        """Open (driver, unit) as a process would; ``flags`` are open(2)'s."""
        fp = await self.spec.open(
            self.dev(driver, unit), flags, os.getpid() if pid is None else pid, uid, gid
        )
        return OpenFile(self, fp)

    async def ioctl(self, driver: str | int, unit: int, cmd: int, data: bytes = b"") -> bytes:
        """``d_ioctl`` as the control socket calls it: sized by ``cmd``, out only for ``IOR``."""
        return await self.spec.ioctl(self.dev(driver, unit), cmd, data, Lwp(os.getpid(), 0, 0))
