"""msgq: a test driver whose reads block until a write queues a message.

Each minor is a queue of messages. write(2) queues one message; read(2)
returns the oldest one, cut to the caller's buffer (the rest is dropped, as
tun(4) does); with nothing queued a read sleeps, or fails EAGAIN when the
file is non-blocking. poll: readable when a message waits, always writable.
FINI refuses with EBUSY while a node is open. ioctl ``MSGQ_COUNT``
(``_IOR('m', 1, uint32)``) answers how many messages wait; ``MSGQ_FLUSH``
(``_IO('m', 2)``) drops them; ``MSGQ_WAIT`` (``_IO('m', 3)``) sleeps until
a message waits; others are ENOTTY.
"""

from __future__ import annotations

import errno
import struct
from collections import deque

from devfsd.cdevsw import (
    IO,
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

MODULE = ModuleInfo(name="msgq", cls=ModuleClass.DRIVER)

MSGQ_COUNT = IOR(ord("m"), 1, 4)
MSGQ_FLUSH = IO(ord("m"), 2)
MSGQ_WAIT = IO(ord("m"), 3)


class Unit:
    def __init__(self) -> None:
        self.queue: deque[bytes] = deque()
        self.chan = WaitChannel("msgq")


units: dict[int, Unit] = {}
open_devs: dict[Dev, int] = {}


def unit(dev: Dev) -> Unit:
    return units.setdefault(minor(dev), Unit())


async def msgq_open(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
    open_devs[dev] = open_devs.get(dev, 0) + 1


async def msgq_close(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
    open_devs.pop(dev, None)


async def msgq_read(dev: Dev, uio: Uio, ioflag: int) -> None:
    u = unit(dev)
    while not u.queue:
        if uio.nonblock:
            raise DeviceError(errno.EAGAIN)
        await u.chan.sleep(uio.lwp)
    uio.uiomove(u.queue.popleft())


async def msgq_write(dev: Dev, uio: Uio, ioflag: int) -> None:
    u = unit(dev)
    u.queue.append(uio.getbytes())
    u.chan.wakeup()


async def msgq_poll(dev: Dev, events: int, l: Lwp) -> int:
    u = unit(dev)
    revents = events & (POLLOUT | POLLWRNORM)
    if u.queue:
        revents |= events & (POLLIN | POLLRDNORM)
    else:
        u.chan.selrecord(l)
    return revents


async def msgq_ioctl(dev: Dev, cmd: int, data: bytearray, flag: int, l: Lwp) -> None:
    u = unit(dev)
    if cmd == MSGQ_COUNT:
        data[:4] = struct.pack("<I", len(u.queue))
    elif cmd == MSGQ_FLUSH:
        u.queue.clear()
    elif cmd == MSGQ_WAIT:
        while not u.queue:
            await u.chan.sleep(l)
    else:
        raise DeviceError(errno.ENOTTY)


cdevsw = Cdevsw(
    d_ioctl=msgq_ioctl,
    d_open=msgq_open,
    d_close=msgq_close,
    d_read=msgq_read,
    d_write=msgq_write,
    d_poll=msgq_poll,
)


async def modcmd(cmd: ModCmd, props: Props | None) -> None:
    if cmd == ModCmd.INIT:
        devsw_attach("msgq", cdevsw)
    elif cmd == ModCmd.FINI:
        if open_devs:
            raise DeviceError(errno.EBUSY)
        devsw_detach(cdevsw)
        units.clear()
    else:
        raise DeviceError(errno.ENOTTY)
