"""tunwg's entry points: tun(4) semantics on a WireGuard interface.

Imports the driver API only. Minor N is interface N (made at open if the
load did not make it, as opening /dev/tunN makes tunN). As NetBSD's
``if_tun.c``: only root may open (``EPERM``), one open at a time
(``EBUSY``); opening brings the interface up, the last close takes it down
and purges its queue, keeping its configuration. A write is exactly one IP
packet (0 bytes or more than the MTU: ``EIO``; neither IPv4 nor IPv6:
``EAFNOSUPPORT``) and never blocks; a packet no peer's allowed-ips covers is
dropped and counted by the device, as WireGuard does, and the write still
succeeds. A read returns exactly one packet, cut to the caller's buffer
(the rest is dropped); with nothing queued it sleeps, or fails ``EAGAIN``
on a non-blocking file. poll: readable when a packet waits, always
writable.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Final

from devfsd.cdevsw import POLLIN, POLLOUT, POLLRDNORM, POLLWRNORM, Cdevsw, DeviceError, minor

if TYPE_CHECKING:
    from collections.abc import Callable

    from devfsd.cdevsw import Dev, Lwp, Uio

    from .iface import Interface

__all__ = ["make_cdevsw"]

_READ: Final = POLLIN | POLLRDNORM
_WRITE: Final = POLLOUT | POLLWRNORM


def make_cdevsw(get: Callable[[int, bool], Interface]) -> Cdevsw:
    """The entry points, over ``get(unit, create) -> Interface``.

    ``get`` raises ``DeviceError(ENXIO)`` for a unit that does not exist
    when ``create`` is false.
    """

    async def tun_open(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
        if l.uid != 0:
            raise DeviceError(errno.EPERM)
        ifp = get(minor(dev), True)
        if ifp.is_open:
            raise DeviceError(errno.EBUSY)
        ifp.up()

    async def tun_close(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
        get(minor(dev), False).down()

    async def tun_read(dev: Dev, uio: Uio, ioflag: int) -> None:
        ifp = get(minor(dev), False)
        q = ifp.queue
        while not q:
            if uio.nonblock:
                raise DeviceError(errno.EAGAIN)
            await ifp.rchan.sleep(uio.lwp)
            if not ifp.is_open:
                raise DeviceError(errno.ENXIO)
        uio.uiomove(q.popleft())

    async def tun_write(dev: Dev, uio: Uio, ioflag: int) -> None:
        ifp = get(minor(dev), False)
        n = uio.resid
        if n == 0 or n > ifp.mtu:
            raise DeviceError(errno.EIO)
        packet = uio.getbytes()
        if packet[0] >> 4 not in (4, 6):
            raise DeviceError(errno.EAFNOSUPPORT)
        ifp.write_packet(packet)

    async def tun_poll(dev: Dev, events: int, l: Lwp) -> int:
        ifp = get(minor(dev), False)
        revents = events & _WRITE
        if ifp.queue:
            revents |= events & _READ
        elif events & _READ:
            ifp.rchan.selrecord(l)
        return revents

    return Cdevsw(d_open=tun_open, d_close=tun_close, d_read=tun_read, d_write=tun_write, d_poll=tun_poll)
