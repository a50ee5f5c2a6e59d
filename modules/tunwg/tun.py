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

ioctl, NetBSD's interface MTU requests on the node (FUSE carries no
ioctl(2): through the control socket's ``ioctl`` request, as
tunwg-bridge(8) sends them): ``SIOCGIFMTU`` reads the MTU into a ``struct
ifreq``'s ``ifr_mtu``; ``SIOCSIFMTU`` sets it on the live interface, root
only (``EPERM``), ``MTU_MIN`` to ``MTU_MAX`` (``EINVAL``). A write over the
new MTU fails ``EIO`` from then on. Anything else: ``ENOTTY``.

Batch framing, tunwg's own (tun(4) has nothing like it): minor ``BATCH |
N`` is interface N with several packets per call, each after its length as
2 bytes big-endian. A read returns every queued packet whose frame fits
the caller's buffer, at least one (cut to fit if it alone does not, as
tun(4) cuts); a read of 2 bytes or less fails ``EINVAL``. A write takes
one or more framed packets and checks them all before sending any: a
length of 0 or over the MTU, or a frame running past the end, fails
``EIO``, a packet neither IPv4 nor IPv6 ``EAFNOSUPPORT``; then none is
sent. While a batch node has the interface open its receive queue holds
``QUEUE_MAX_BATCH`` packets. Under load, a FUSE request then carries tens
of packets instead of one; the bridge uses it (tunwg-bridge(8)).

ioctl (through the control socket's ``ioctl`` request): ``TUNWGIOCCARRY``
has the daemon carry the open interface on a Linux TUN itself (carrier.py,
``tunwg-bridge -d``); a read then sleeps until that ends. Anything else:
``ENOTTY``.
"""

from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING, Final

from devfsd.cdevsw import IOW, IOWR, POLLIN, POLLOUT, POLLRDNORM, POLLWRNORM, Cdevsw, DeviceError, minor

from .carrier import TUNWGIOCCARRY, carry, wait_carried
from .iface import MTU_MAX, MTU_MIN

if TYPE_CHECKING:
    from collections.abc import Callable

    from devfsd.cdevsw import Dev, Lwp, Uio

    from .iface import Interface

__all__ = ["BATCH", "SIOCGIFMTU", "SIOCSIFMTU", "make_cdevsw", "parse_batch"]

#: The minor-number bit that selects batch framing.
BATCH: Final = 0x10000
_UNIT: Final = BATCH - 1
_READ: Final = POLLIN | POLLRDNORM
_WRITE: Final = POLLOUT | POLLWRNORM
_LEN: Final = struct.Struct(">H")
#: NetBSD's ``struct ifreq`` (LP64): ``ifr_name[IFNAMSIZ]``, then a 128-byte
#: union (``struct sockaddr_storage``) whose ``ifru_mtu`` is an int.
IFREQ_SIZE: Final = 16 + 128
_IFR_MTU: Final = struct.Struct("=16xi")
SIOCSIFMTU: Final = IOW(ord("i"), 127, IFREQ_SIZE)
SIOCGIFMTU: Final = IOWR(ord("i"), 126, IFREQ_SIZE)


def parse_batch(data: bytes, mtu: int) -> list[bytes]:
    """The packets of a batch write, all checked before any is returned.

    Raises:
        DeviceError: ``EIO`` for a length of 0 or over ``mtu`` or a frame
            running past the end; ``EAFNOSUPPORT`` for a packet neither
            IPv4 nor IPv6.
    """
    packets = []
    pos, end = 0, len(data)
    unpack = _LEN.unpack_from
    while pos < end:
        if end - pos < 2:
            raise DeviceError(errno.EIO)
        (n,) = unpack(data, pos)
        pos += 2
        if n == 0 or n > mtu or n > end - pos:
            raise DeviceError(errno.EIO)
        if data[pos] >> 4 not in (4, 6):
            raise DeviceError(errno.EAFNOSUPPORT)
        packets.append(data[pos : pos + n])
        pos += n
    if not packets:
        raise DeviceError(errno.EIO)
    return packets


def make_cdevsw(get: Callable[[int, bool], Interface]) -> Cdevsw:
    """The entry points, over ``get(unit, create) -> Interface``.

    ``get`` raises ``DeviceError(ENXIO)`` for a unit that does not exist
    when ``create`` is false.
    """

    async def tun_open(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
        if l.uid != 0:
            raise DeviceError(errno.EPERM)
        m = minor(dev)
        ifp = get(m & _UNIT, True)
        if ifp.is_open:
            raise DeviceError(errno.EBUSY)
        ifp.up(batch=bool(m & BATCH))

    async def tun_close(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
        get(minor(dev) & _UNIT, False).down()

    async def tun_read(dev: Dev, uio: Uio, ioflag: int) -> None:
        m = minor(dev)
        ifp = get(m & _UNIT, False)
        q = ifp.queue
        if ifp.carrier is not None:
            await wait_carried(ifp, uio)
            return
        while not q:
            if uio.nonblock:
                ifp.receive_now()  # what has arrived is readable now
                if q:
                    break
                raise DeviceError(errno.EAGAIN)
            await ifp.wait_packet(uio.lwp)
            if not ifp.is_open:
                raise DeviceError(errno.ENXIO)
        if not m & BATCH:
            uio.uiomove(q.popleft())
            return
        room = uio.resid - 2
        if room <= 0:
            raise DeviceError(errno.EINVAL)
        packet = q.popleft()[:room]
        parts = [_LEN.pack(len(packet)), packet]
        room -= len(packet)
        while q and len(q[0]) + 2 <= room:
            packet = q.popleft()
            parts += (_LEN.pack(len(packet)), packet)
            room -= len(packet) + 2
        uio.uiomove(b"".join(parts))

    async def tun_write(dev: Dev, uio: Uio, ioflag: int) -> None:
        m = minor(dev)
        ifp = get(m & _UNIT, False)
        if m & BATCH:
            ifp.write_packets(parse_batch(uio.getbytes(), ifp.mtu))
            return
        n = uio.resid
        if n == 0 or n > ifp.mtu:
            raise DeviceError(errno.EIO)
        packet = uio.getbytes()
        if packet[0] >> 4 not in (4, 6):
            raise DeviceError(errno.EAFNOSUPPORT)
        ifp.write_packet(packet)

    async def tun_poll(dev: Dev, events: int, l: Lwp) -> int:
        ifp = get(minor(dev) & _UNIT, False)
        revents = events & _WRITE
        if not ifp.queue and events & _READ:
            ifp.receive_now()  # what has arrived is readable now
        if ifp.queue:
            revents |= events & _READ
        elif events & _READ:
            ifp.rchan.selrecord(l)
        return revents

    async def tun_ioctl(dev: Dev, cmd: int, data: bytearray, flag: int, l: Lwp) -> None:
        ifp = get(minor(dev) & _UNIT, False)
        if cmd == SIOCGIFMTU:
            _IFR_MTU.pack_into(data, 0, ifp.mtu)
        elif cmd == SIOCSIFMTU:
            if l.uid != 0:
                raise DeviceError(errno.EPERM)
            (mtu,) = _IFR_MTU.unpack_from(data)
            if not MTU_MIN <= mtu <= MTU_MAX:
                raise DeviceError(errno.EINVAL)
            ifp.set_mtu(mtu)
        elif cmd == TUNWGIOCCARRY:
            await carry(ifp, data, l)
        else:
            raise DeviceError(errno.ENOTTY)

    return Cdevsw(
        d_open=tun_open,
        d_close=tun_close,
        d_read=tun_read,
        d_write=tun_write,
        d_poll=tun_poll,
        d_ioctl=tun_ioctl,
    )
