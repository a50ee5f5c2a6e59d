"""bcast: each open reads what is written to its unit after it opened.

Each minor keeps the last "maxlen" bytes written to it (a load
property, default 4096).  A read returns the bytes written since the
open's own position, sleeping while there are none (EAGAIN if the
open is non-blocking); a reader that fell behind loses the oldest
bytes.  poll: readable when the open has unread bytes, always
writable.  The ioctl BCASTGLEN reports how many bytes the unit keeps.
"""

from __future__ import annotations

import errno
import struct

from devfsd.cdevsw import (
    IOR,
    POLLIN,
    POLLOUT,
    POLLRDNORM,
    POLLWRNORM,
    Cdevsw,
    Dev,
    DeviceError,
    Lwp,
    Uio,
    WaitChannel,
    devsw_attach,
    devsw_detach,
    minor,
)
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo, Props

MODULE = ModuleInfo(name="bcast", cls=ModuleClass.DRIVER)

# _IOR('b', 1, uint32_t): how many bytes the unit keeps.
BCASTGLEN = IOR(ord("b"), 1, 4)


class Unit:
    """One minor's state (its softc)."""

    def __init__(self) -> None:
        self.kept = bytearray()  # the last maxlen bytes written
        self.start = 0  # stream offset of kept[0]
        self.chan = WaitChannel("bcast")

    @property
    def end(self) -> int:
        return self.start + len(self.kept)


maxlen = 4096
units: dict[int, Unit] = {}
open_devs: set[Dev] = set()


def unit(dev: Dev) -> Unit:
    return units.setdefault(minor(dev), Unit())


def position(l: Lwp) -> int:
    """The open's next stream offset: its per-open state."""
    assert l.fp is not None
    pos: int = l.fp.data
    return pos


async def bcast_open(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
    assert l.fp is not None
    l.fp.data = unit(dev).end  # start reading at the end
    open_devs.add(dev)


async def bcast_close(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
    open_devs.discard(dev)  # the last close of dev


async def bcast_read(dev: Dev, uio: Uio, ioflag: int) -> None:
    u = unit(dev)
    while position(uio.lwp) >= u.end:
        if uio.nonblock:
            raise DeviceError(errno.EWOULDBLOCK)
        await u.chan.sleep(uio.lwp)  # EINTR, ENXIO: passed on
    pos = max(position(uio.lwp), u.start)  # skip what was dropped
    off = pos - u.start
    n = uio.uiomove(u.kept[off : off + uio.resid])  # a copy
    assert uio.lwp.fp is not None
    uio.lwp.fp.data = pos + n


async def bcast_write(dev: Dev, uio: Uio, ioflag: int) -> None:
    u = unit(dev)
    u.kept += uio.getbytes()
    drop = len(u.kept) - maxlen
    if drop > 0:
        del u.kept[:drop]
        u.start += drop
    u.chan.wakeup()  # sleeping readers and waiting pollers


async def bcast_poll(dev: Dev, events: int, l: Lwp) -> int:
    u = unit(dev)
    revents = events & (POLLOUT | POLLWRNORM)
    if position(l) < u.end:
        revents |= events & (POLLIN | POLLRDNORM)
    else:
        u.chan.selrecord(l)  # the next wakeup() notifies this poll
    return revents


async def bcast_ioctl(
    dev: Dev, cmd: int, data: bytearray, flag: int, l: Lwp
) -> None:
    if cmd != BCASTGLEN:
        raise DeviceError(errno.ENOTTY)
    data[0:4] = struct.pack("=I", len(unit(dev).kept))


bcast_cdevsw = Cdevsw(
    d_open=bcast_open,
    d_close=bcast_close,
    d_read=bcast_read,
    d_write=bcast_write,
    d_ioctl=bcast_ioctl,
    d_poll=bcast_poll,
)


async def modcmd(cmd: ModCmd, props: Props | None) -> None:
    global maxlen
    if cmd == ModCmd.INIT:
        n = (props or {}).get("maxlen", 4096)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise DeviceError(errno.EINVAL, "maxlen must be >= 1")
        maxlen = n
        devsw_attach("bcast", bcast_cdevsw)
    elif cmd == ModCmd.FINI:
        if open_devs:
            raise DeviceError(errno.EBUSY)
        devsw_detach(bcast_cdevsw)
    elif cmd == ModCmd.AUTOUNLOAD:
        if any(u.kept for u in units.values()):
            raise DeviceError(errno.EBUSY)  # unloading drops them
    else:
        raise DeviceError(errno.ENOTTY)
