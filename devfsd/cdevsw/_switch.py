"""The character device switch entry: ``Cdevsw``, ``Lwp``, ``File`` and stubs.

May import trio-free code only (no trio, no pyfuse3). Follows NetBSD's
``sys/sys/conf.h``: a driver fills one frozen, keyword-only ``Cdevsw`` with
its entry points; a slot it leaves out keeps the ``no*`` stub (``ENODEV``),
except ``d_poll``, whose default ``seltrue`` reports always ready, as
``nopoll`` does. ``null*`` stubs succeed doing nothing.

Entry points are ``async`` and take conf.h's arguments:

======================================  ====================================
``d_open(dev, flag, mode, l)``          every open(2) of a node
``d_close(dev, flag, mode, l)``         the last close of the ``dev``
``d_read(dev, uio, ioflag)``            one read(2): ``uio.uiomove(buf)``
``d_write(dev, uio, ioflag)``           one write(2): ``uio.getbytes()``
``d_ioctl(dev, cmd, data, flag, l)``    ``data`` is a ``bytearray`` in/out
``d_poll(dev, events, l) -> revents``   ready subset, else ``selrecord``
======================================  ====================================
"""

from __future__ import annotations

import errno
import os
import select
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, final

from devfsd.errors import DeviceError

if TYPE_CHECKING:
    from devfsd.cdevsw._dev import Dev
    from devfsd.cdevsw._uio import Uio
    from devfsd.cdevsw._wait import WaitChannel

__all__ = [
    "D_MPSAFE",
    "D_OTHER",
    "D_TTY",
    "FNONBLOCK",
    "FREAD",
    "FWRITE",
    "POLLIN",
    "POLLOUT",
    "POLLRDNORM",
    "POLLWRNORM",
    "Cdevsw",
    "File",
    "Lwp",
    "noclose",
    "noioctl",
    "noopen",
    "noread",
    "nowrite",
    "nullclose",
    "nullioctl",
    "nullopen",
    "nullpoll",
    "nullread",
    "nullwrite",
    "seltrue",
]

#: Open-file flags a driver sees in ``flag`` (NetBSD ``FREAD``/``FWRITE``).
FREAD: Final = 0x1
FWRITE: Final = 0x2
#: The file was opened with ``O_NONBLOCK``.
FNONBLOCK: Final = os.O_NONBLOCK

#: ``d_flag`` values, as conf.h (informational here: every call runs on
#: one trio thread, so every driver is "MPSAFE" with respect to others).
D_OTHER: Final = 0x0000
D_TTY: Final = 0x0003
D_MPSAFE: Final = 0x0100

POLLIN: Final = select.POLLIN
POLLOUT: Final = select.POLLOUT
POLLRDNORM: Final = select.POLLRDNORM
POLLWRNORM: Final = select.POLLWRNORM
_SELTRUE: Final = POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM


@final
class File:
    """One open of a node (NetBSD ``struct file``).

    Attributes:
        dev: the node's device number.
        flag: ``FREAD``, ``FWRITE``, ``FNONBLOCK`` as given at open.
        data: the driver's per-open state (``f_data``); ``None`` until the
            driver sets it, typically in ``d_open``.
        pid, uid, gid: the opener (the thread id for ``pid``).
        poll_kept: the kernel's poll handle from the last poll that asked
            for a notification and that ``d_poll`` answered without
            ``selrecord`` (something was ready); the file system notifies
            it when a read or write of this file ends in ``EWOULDBLOCK``,
            so that an edge-triggered poller (``EPOLLET``) that drained
            the file is polled again and the driver records the poll then.
        selchans: the wait channels holding a poll of it (``selrecord``),
            told when it closes (``WaitChannel.seldrain``).
    """

    __slots__ = ("cdevsw", "data", "dev", "flag", "gid", "lwp", "pid", "poll_kept", "selchans", "uid")

    def __init__(self, dev: Dev, flag: int, pid: int, uid: int, gid: int) -> None:
        self.dev = dev
        self.flag = flag
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.data: Any = None
        self.cdevsw: Cdevsw | None = None
        self.poll_kept: Any = None
        #: The wait channels that recorded a poll of it (``selrecord``),
        #: which forget it when it closes.
        self.selchans: set[WaitChannel] | None = None
        self.lwp = Lwp(pid, uid, gid, self, dev=dev)

    def __repr__(self) -> str:
        return f"<File dev={self.dev:#x} flag={self.flag:#x} pid={self.pid}>"


@final
class Lwp:
    """The caller of an entry point (NetBSD ``struct lwp``, reduced).

    Attributes:
        pid: the caller's thread id. On read and write, FUSE does not say who
            calls, so it is the opener's (see devfsd-module(9)).
        uid, gid: the caller's fsuid and fsgid (the opener's on read/write).
        fp: the open file the call is on, or ``None`` (ioctl through the
            control socket, in-process harness calls without a file).
        poll_handle: set by the file system on a poll that wants a later
            notification; ``selrecord`` takes it.
        dev: the device the call is for (``None`` outside an entry point);
            a detach of its major ends the caller's sleeps.
    """

    __slots__ = ("dev", "fp", "gid", "pid", "poll_handle", "uid")

    def __init__(
        self,
        pid: int,
        uid: int,
        gid: int,
        fp: File | None = None,
        poll_handle: Any = None,
        dev: Dev | None = None,
    ) -> None:
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.fp = fp
        self.poll_handle = poll_handle
        self.dev = dev if dev is not None or fp is None else fp.dev

    def __repr__(self) -> str:
        return f"<Lwp pid={self.pid} uid={self.uid} gid={self.gid}>"


OpenFn = Callable[["Dev", int, int, Lwp], Awaitable[None]]
RwFn = Callable[["Dev", "Uio", int], Awaitable[None]]
IoctlFn = Callable[["Dev", int, bytearray, int, Lwp], Awaitable[None]]
PollFn = Callable[["Dev", int, Lwp], Awaitable[int]]


async def noopen(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
    raise DeviceError(errno.ENODEV)


async def noclose(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
    raise DeviceError(errno.ENODEV)


async def noread(dev: Dev, uio: Uio, ioflag: int) -> None:
    raise DeviceError(errno.ENODEV)


async def nowrite(dev: Dev, uio: Uio, ioflag: int) -> None:
    raise DeviceError(errno.ENODEV)


async def noioctl(dev: Dev, cmd: int, data: bytearray, flag: int, l: Lwp) -> None:
    raise DeviceError(errno.ENODEV)


async def nullopen(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
    return None


async def nullclose(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
    return None


async def nullread(dev: Dev, uio: Uio, ioflag: int) -> None:
    """Moves nothing: the caller reads end of file."""
    return None


async def nullwrite(dev: Dev, uio: Uio, ioflag: int) -> None:
    """Takes nothing: write(2) returns 0, as NetBSD's ``nullwrite``."""
    return None


async def nullioctl(dev: Dev, cmd: int, data: bytearray, flag: int, l: Lwp) -> None:
    return None


async def seltrue(dev: Dev, events: int, l: Lwp) -> int:
    """Always readable and writable (NetBSD ``seltrue``, ``nopoll``)."""
    return events & _SELTRUE


async def nullpoll(dev: Dev, events: int, l: Lwp) -> int:
    """Never ready."""
    return 0


@final
@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Cdevsw:
    """A driver's entry points. Compared and detached by identity."""

    d_open: OpenFn = noopen
    d_close: OpenFn = noclose
    d_read: RwFn = noread
    d_write: RwFn = nowrite
    d_ioctl: IoctlFn = noioctl
    d_poll: PollFn = seltrue
    d_flag: int = D_OTHER
