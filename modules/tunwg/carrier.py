"""In-daemon carrying: a tunwg interface joined to a Linux TUN with no FUSE trip.

``tunwg-bridge -d NODE IFNAME`` opens NODE (so the interface is up and its
single open is held by the tool) and sends ``TUNWGIOCCARRY`` through the
daemon's control socket (FUSE carries no ioctl(2)) with IFNAME and the
MTU. The driver itself then opens ``/dev/net/tun``, makes (or attaches to)
the TUN interface IFNAME (``IFF_TUN | IFF_NO_PI``), checks with
``TUNGETIFF`` that the descriptor is that TUN, sets its MTU, and moves the
packets between it and the WireGuard core in the daemon, as NetBSD's wg(4)
is an interface of the kernel:

- TUN to peer: a task (a module thread) waits until the TUN descriptor is
  readable (``trio.lowlevel.wait_readable`` on the non-blocking
  descriptor), reads what is ready, up to ``TUN_BATCH`` packets per
  wake-up, and hands them to the device's ``packet_from_tun``, as a node's
  write would; the datagrams one such batch makes for one endpoint, all of
  one size but the last, leave in one ``sendmsg`` with ``UDP_SEGMENT``
  (UDP GSO: the kernel cuts them apart), where the node's path makes one
  system call per datagram;
- peer to TUN: each packet the device delivers is written to the TUN
  descriptor at once (``deliver``), in place of the node's read queue.

The daemon opens the TUN itself rather than take a descriptor from the tool
(``SCM_RIGHTS``): the control socket speaks JSON lines and passes no
descriptors, and a descriptor the daemon opened needs no checking that it
is what it claims. The TUN then lives exactly as long as the carrying: the
daemon's descriptor is its only one, so closing it removes the interface.

Only root may ask (``EPERM``), only for an interface whose node is open
(``ENXIO``), once (``EBUSY``); an interface name that is empty, too long or
not a TUN interface fails ``EINVAL`` (or what ``TUNSETIFF`` says). The
carrying ends when the node is closed (``Interface.down``; the tool's exit,
SIGTERM included), when the TUN interface is deleted (``ip link del``: its
descriptor then reads ``EBADFD``) or on another error on the TUN. A read
of the node while its interface is carried sleeps until the carrying ends,
then returns end of file (0 bytes) or fails with the error that ended it;
the tool waits so (tunwg-bridge(8)).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import struct
import time
from typing import TYPE_CHECKING, Final

import trio

from devfsd.cdevsw import IOW, DeviceError
from devfsd.kern import kthread_create

from .wg.device import SendDatagram

if TYPE_CHECKING:
    from devfsd.cdevsw import Lwp, Uio

    from .iface import Interface

__all__ = ["CARRY", "TUNWGIOCCARRY", "Carrier", "carry", "wait_carried"]

log = logging.getLogger(__name__)

#: The request's parameter: the TUN interface's name (NUL-padded) and its MTU.
CARRY: Final = struct.Struct("=16si")
#: ``_IOW('W', 1, struct { char ifname[IFNAMSIZ]; int mtu; })``.
TUNWGIOCCARRY: Final = IOW(ord("W"), 1, CARRY.size)
#: Packets read from the TUN per wake-up, at most, before the next wait.
TUN_BATCH: Final = 64
#: <linux/if_tun.h> and <linux/sockios.h>.
TUNSETIFF: Final = 0x400454CA
TUNGETIFF: Final = 0x800454D2
IFF_TUN: Final = 0x0001
IFF_NO_PI: Final = 0x1000
_TUN_MODE: Final = 0x000F | IFF_NO_PI  # IFF_TUN/IFF_TAP and the packet-info bit
SIOCSIFMTU: Final = 0x8922
_IFREQ_FLAGS: Final = struct.Struct("16sH22x")
_IFREQ_MTU: Final = struct.Struct("16si20x")
#: <linux/udp.h>: send one buffer as datagrams of a given size (UDP GSO).
SOL_UDP: Final = 17
UDP_SEGMENT: Final = 103
#: Datagrams per GSO send, at most (the kernel's UDP_MAX_SEGMENTS is 64,
#: and the whole must stay under 64 KiB: 44 full datagrams at MTU 1420).
GSO_MAX: Final = 40
GSO_BYTES: Final = 65000
GSO_TRIES: Final = 8
#: The TUN descriptor's errors that mean the interface went away: the
#: carrying ends quietly (end of file to the node's reader).
_GONE: Final = frozenset({errno.EBADFD, errno.ENXIO, errno.ENODEV, errno.EBADF})


def open_tun(name: str, mtu: int) -> int:
    """A non-blocking descriptor of the TUN interface ``name`` with MTU ``mtu``.

    Raises:
        OSError: from ``/dev/net/tun``, ``TUNSETIFF`` or ``SIOCSIFMTU``;
            ``EINVAL`` if ``TUNGETIFF`` does not show that TUN.
    """
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        req = _IFREQ_FLAGS.pack(name.encode(), IFF_TUN | IFF_NO_PI)
        fcntl.ioctl(fd, TUNSETIFF, req)
        got, flags = _IFREQ_FLAGS.unpack(fcntl.ioctl(fd, TUNGETIFF, bytes(_IFREQ_FLAGS.size)))
        if got.rstrip(b"\0") != name.encode() or flags & _TUN_MODE != IFF_TUN | IFF_NO_PI:
            raise OSError(errno.EINVAL, "not the TUN interface asked for")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s.fileno(), SIOCSIFMTU, _IFREQ_MTU.pack(name.encode(), mtu))
    except BaseException:
        os.close(fd)
        raise
    return fd


class Carrier:
    """The carrying of interface ``ifp`` on the TUN descriptor ``fd`` (module docstring)."""

    def __init__(self, ifp: Interface, fd: int, ifname: str, mtu: int) -> None:
        self.ifp, self.fd, self.ifname, self.mtu = ifp, fd, ifname, mtu
        #: 0 while carrying or after an ending that is no error; else its errno.
        self.error = 0
        self.ended = False
        #: Packets from the TUN refused (empty, over the MTU, neither IPv4 nor
        #: IPv6), and packets for the TUN its descriptor refused.
        self.dropped_in = 0
        self.dropped_out = 0
        self._scope: trio.CancelScope | None = None
        #: Datagrams of one TUN batch to one endpoint go out as one ``sendmsg``.
        self.gso = True
        self._gso_failures = 0

    def start(self) -> None:
        self.ifp.carrier = self
        self._scope = kthread_create(self._run, name=f"{self.ifname} carrier", module=self.ifp.module)

    def stop(self, error: int = 0) -> None:
        """End the carrying (idempotent): close the TUN, wake the node's reader."""
        if self.ended:
            return
        self.ended, self.error = True, error
        fd, self.fd = self.fd, -1
        trio.lowlevel.notify_closing(fd)
        os.close(fd)
        if self._scope is not None:
            self._scope.cancel()
        ifp = self.ifp
        if ifp.carrier is self:
            ifp.carrier = None
        ifp.rchan.wakeup()
        why = os.strerror(error) if error else "done"
        log.debug("%s: carrying on %s ended: %s", ifp.name, self.ifname, why)

    def deliver(self, packet: bytes) -> None:
        """The device's decrypted ``packet``, written to the TUN."""
        try:
            os.write(self.fd, packet)
        except OSError:  # full (EAGAIN) or going: the read side ends the carrying
            self.dropped_out += 1

    def _from_tun(self, packets: list[bytes]) -> None:
        """``packets`` to the device; their datagrams sent in GSO groups (``UDP_SEGMENT``)."""
        ifp = self.ifp
        if not self.gso:
            ifp.write_packets(packets)
            return
        now, wall_ns = trio.current_time(), time.time_ns()
        from_tun, apply = ifp.device.packet_from_tun, ifp._apply
        held: list[SendDatagram] = []
        for packet in packets:
            for e in from_tun(packet, now=now, wall_ns=wall_ns):
                if type(e) is SendDatagram:
                    held.append(e)
                else:
                    apply([e])
        i, n = 0, len(held)
        while i < n:
            first = held[i]
            size, ep = len(first.data), first.endpoint
            limit = min(GSO_MAX, GSO_BYTES // size)
            j = i + 1
            while j < n and j - i < limit and held[j].endpoint is ep and len(held[j].data) <= size:
                j += 1
                if len(held[j - 1].data) < size:
                    break  # only the last segment may be shorter
            if j - i == 1 or not self._send_gso(held[i:j], size):
                for e in held[i:j]:
                    ifp._send(e)
            i = j
        ifp._poke()

    def _send_gso(self, group: list[SendDatagram], size: int) -> bool:
        """``group`` as one ``sendmsg`` with ``UDP_SEGMENT``; False to send them one by one."""
        ifp, ep = self.ifp, group[0].endpoint
        sock = ifp._sock
        dst = ifp._dst_cache.get((ep.host, ep.port))
        if sock is None or dst is None:
            return False
        cmsg = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]
        if ep.source:
            src = ifp._src_cmsg.get(ep.source)
            if src is None:
                return False
            cmsg += src
        try:
            sock.sendmsg([e.data for e in group], cmsg, 0, dst)
        except BlockingIOError:
            ifp.send_errors += len(group)
            for e in group:
                if e.peer is not None:
                    e.peer.unsent(e.data)
        except OSError as exc:
            # Sent again one by one, which deals with each error as ever (a
            # source address gone, too big for the path). A kernel without
            # UDP GSO fails every time: after GSO_TRIES failures in a row,
            # one datagram per call from then on.
            self._gso_failures += 1
            if self._gso_failures >= GSO_TRIES:
                self.gso = False
            log.debug("%s: UDP_SEGMENT: %s; one datagram per call", ifp.name, exc)
            return False
        self._gso_failures = 0
        return True

    async def _run(self) -> None:
        try:
            await self._pump()
        except trio.ClosedResourceError:
            pass
        finally:
            if not self.ended:  # cancelled from outside (module unload)
                self.stop()

    async def _pump(self) -> None:
        fd, ifp = self.fd, self.ifp
        read, wait = os.read, trio.lowlevel.wait_readable
        while True:
            await wait(fd)
            mtu = ifp.mtu  # live: SIOCSIFMTU may change it
            packets = []
            error = 0
            for _ in range(TUN_BATCH):
                try:
                    p = read(fd, 65536)
                except BlockingIOError:
                    break
                except OSError as exc:
                    error = exc.errno or errno.EIO
                    break
                if 0 < len(p) <= mtu and p[0] >> 4 in (4, 6):
                    packets.append(p)
                else:
                    self.dropped_in += 1
            if packets:
                self._from_tun(packets)
            if error:
                self.stop(0 if error in _GONE else error)
                return


async def carry(ifp: Interface, data: bytearray, l: Lwp) -> None:
    """``TUNWGIOCCARRY`` on ``ifp``: start carrying it on the TUN ``data`` names.

    Raises:
        DeviceError: ``EPERM`` (not root), ``ENXIO`` (node not open),
            ``EBUSY`` (carried already), ``EINVAL`` (bad name or MTU), or
            the TUN's error.
    """
    if l.uid != 0:
        raise DeviceError(errno.EPERM)
    raw, mtu = CARRY.unpack(bytes(data))
    name = raw.rstrip(b"\0")
    if not name or b"\0" in name or b"/" in name or len(name) >= 16 or not 68 <= mtu <= 65535:
        raise DeviceError(errno.EINVAL)
    if not ifp.is_open:
        raise DeviceError(errno.ENXIO)
    if ifp.carrier is not None:
        raise DeviceError(errno.EBUSY)
    try:  # no await from the checks to start(): nothing can race them
        ifname = name.decode()
        fd = open_tun(ifname, mtu)
    except UnicodeDecodeError:
        raise DeviceError(errno.EINVAL) from None
    except OSError as exc:
        raise DeviceError(exc.errno or errno.EIO) from None
    Carrier(ifp, fd, ifname, mtu).start()


async def wait_carried(ifp: Interface, uio: Uio) -> None:
    """A read of ``ifp``'s node while it is carried: sleep until the carrying
    ends; then end of file, or the error that ended it.

    Raises:
        DeviceError: that error, ``EINTR`` for a signal, ``ENXIO`` on detach.
    """
    carrier = ifp.carrier
    assert carrier is not None
    while not carrier.ended:
        await ifp.rchan.sleep(uio.lwp)
    if carrier.error:
        raise DeviceError(carrier.error)
