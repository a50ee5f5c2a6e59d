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
  wake-up, and hands them to the interface as one batch
  (``Interface.write_packets``, as a batch node's write does): one call
  into the device, and the datagrams the batch makes for one endpoint,
  all of one size but the last, in one ``sendmsg`` with ``UDP_SEGMENT``
  (UDP GSO: the kernel cuts them apart);
- peer to TUN: the packets the device delivers in one wake-up of the
  interface are held (``deliver``, in place of the node's read queue) and
  written to the TUN descriptor when it is done (``flush``; with offloads a
  TCP flow's segments coalesced); what that writing makes the host's stack
  queue on the TUN (a reply, an ACK) is then read and sent in the same step;
- offloads (the ``offload`` load property, on by default): the TUN is
  opened with ``IFF_VNET_HDR`` and ``TUNSETOFFLOAD`` (``TUN_F_CSUM |
  TUN_F_TSO4 | TUN_F_TSO6``), so one read may be a TCP super-segment of up
  to 64 KiB, cut into packets here, and one write several segments of a
  flow (offload.py): a system call and a pass of the kernel's stack per
  64 KiB of a TCP stream instead of per packet, as wireguard-go does. A
  kernel that refuses either request gets a TUN without them (logged);
- the interface's MTU follows the TUN's, wherever the TUN is (another
  network namespace than the daemon's included): follow.py.

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
from typing import TYPE_CHECKING, Final

import trio

from devfsd.cdevsw import IOW, DeviceError
from devfsd.kern import kthread_create

from .follow import follow_mtu
from .offload import NO_VNET_HDR, VNET_HDR, coalesce, numpy, split

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
IFF_VNET_HDR: Final = 0x4000
TUNSETOFFLOAD: Final = 0x400454D0
TUN_F_CSUM: Final = 0x01
TUN_F_TSO4: Final = 0x02
TUN_F_TSO6: Final = 0x04
#: The offloads asked for: checksums left to the reader, TCP segmentation.
TUN_OFFLOADS: Final = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
#: One read with offloads: the header and a packet of up to 64 KiB.
_READ_MAX: Final = VNET_HDR.size + 65535
_TUN_MODE: Final = 0x000F | IFF_NO_PI  # IFF_TUN/IFF_TAP and the packet-info bit
SIOCSIFMTU: Final = 0x8922
_IFREQ_FLAGS: Final = struct.Struct("16sH22x")
_IFREQ_MTU: Final = struct.Struct("16si20x")
#: The TUN descriptor's errors that mean the interface went away: the
#: carrying ends quietly (end of file to the node's reader).
_GONE: Final = frozenset({errno.EBADFD, errno.ENXIO, errno.ENODEV, errno.EBADF})


def open_tun(name: str, mtu: int, offload: bool = False) -> tuple[int, bool]:
    """A non-blocking descriptor of the TUN interface ``name`` with MTU ``mtu``,
    and whether it has the offloads (``offload`` asks for them; a kernel
    refusing ``IFF_VNET_HDR`` or ``TUNSETOFFLOAD`` gets a TUN without).

    Raises:
        OSError: from ``/dev/net/tun``, ``TUNSETIFF`` or ``SIOCSIFMTU``;
            ``EINVAL`` if ``TUNGETIFF`` does not show that TUN.
    """
    if offload:
        try:
            fd = _open_tun(name, IFF_TUN | IFF_NO_PI | IFF_VNET_HDR)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            log.info("%s: no IFF_VNET_HDR (%s): no offloads", name, exc)
        else:
            try:
                fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_OFFLOADS)
            except OSError as exc:
                # Closing it before the TUN is opened again: a TUN that
                # only this descriptor held goes, and comes back without.
                os.close(fd)
                log.info("%s: TUNSETOFFLOAD: %s: no offloads", name, exc)
            else:
                try:
                    _set_mtu(name, mtu)
                except BaseException:
                    os.close(fd)
                    raise
                return fd, True
    fd = _open_tun(name, IFF_TUN | IFF_NO_PI)
    try:
        _set_mtu(name, mtu)
    except BaseException:
        os.close(fd)
        raise
    return fd, False


def _open_tun(name: str, mode: int) -> int:
    """``/dev/net/tun`` attached to the TUN interface ``name`` with flags ``mode``."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, _IFREQ_FLAGS.pack(name.encode(), mode))
        got, flags = _IFREQ_FLAGS.unpack(fcntl.ioctl(fd, TUNGETIFF, bytes(_IFREQ_FLAGS.size)))
        if got.rstrip(b"\0") != name.encode() or flags & (_TUN_MODE | IFF_VNET_HDR) != mode:
            raise OSError(errno.EINVAL, "not the TUN interface asked for")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _set_mtu(name: str, mtu: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), SIOCSIFMTU, _IFREQ_MTU.pack(name.encode(), mtu))


class Carrier:
    """The carrying of interface ``ifp`` on the TUN descriptor ``fd`` (module docstring)."""

    def __init__(self, ifp: Interface, fd: int, ifname: str, mtu: int, offload: bool = False) -> None:
        self.ifp, self.fd, self.ifname, self.mtu = ifp, fd, ifname, mtu
        #: The TUN has the offloads: a ``VNET_HDR`` before every packet both ways.
        self.offload = offload
        #: Packets for the TUN held until ``flush``.
        self.pending: list[bytes] = []
        #: ``_take`` is handing packets to the interface (no ``_take`` from ``flush`` then).
        self._taking = False
        #: Reads of TCP super-segments, and writes of coalesced segments.
        self.tso_reads = 0
        self.tso_segments = 0
        self.coalesced_writes = 0
        self.coalesced_segments = 0
        #: 0 while carrying or after an ending that is no error; else its errno.
        self.error = 0
        self.ended = False
        #: Packets from the TUN refused (empty, over the MTU, neither IPv4 nor
        #: IPv6), and packets for the TUN its descriptor refused.
        self.dropped_in = 0
        self.dropped_out = 0
        self._scope: trio.CancelScope | None = None
        self._follower: trio.CancelScope | None = None

    def start(self) -> None:
        self.ifp.carrier = self
        module = self.ifp.module
        self._scope = kthread_create(self._run, name=f"{self.ifname} carrier", module=module)
        self._follower = kthread_create(
            follow_mtu, self.ifp, self.fd, name=f"{self.ifname} mtu", module=module
        )

    def stop(self, error: int = 0) -> None:
        """End the carrying (idempotent): close the TUN, wake the node's reader."""
        if self.ended:
            return
        self.ended, self.error = True, error
        if self._follower is not None:
            self._follower.cancel()  # before the close: it uses the descriptor
        fd, self.fd = self.fd, -1
        self.pending.clear()
        trio.lowlevel.notify_closing(fd)
        os.close(fd)
        if self._scope is not None:
            self._scope.cancel()
        ifp = self.ifp
        if ifp.carrier is self:
            ifp.carrier = None
        ifp.rchan.wakeup()
        why = os.strerror(error) if error else "done"
        log.debug(
            "%s: carrying on %s ended: %s (offloads %s: %d super-segments read, %d segments;"
            " %d coalesced writes, %d segments)",
            ifp.name,
            self.ifname,
            why,
            "on" if self.offload else "off",
            self.tso_reads,
            self.tso_segments,
            self.coalesced_writes,
            self.coalesced_segments,
        )

    def deliver(self, packet: bytes) -> None:
        """The device's decrypted ``packet``, for the TUN: held until ``flush``,
        which the interface calls when the wake-up that decrypted it is done."""
        self.pending.append(packet)

    def flush(self) -> None:
        """Write the held packets (with offloads, a TCP flow's segments
        coalesced: offload.py); then take in what the TUN has at once.

        Writing a packet to the TUN runs the host's stack on it in this
        call: an echo request's reply, a TCP segment's ACK, the data an ACK
        lets the sender send, are queued on the TUN before the write
        returns. Reading them here sends them on in this same step, rather
        than after a pass of trio's loop that wakes the TUN's task.
        """
        packets, self.pending = self.pending, []
        fd = self.fd
        if not packets or fd < 0:
            return
        if self.offload:
            writev = os.writev
            for bufs in coalesce(packets) if len(packets) > 1 else ([NO_VNET_HDR, packets[0]],):
                try:
                    writev(fd, bufs)
                except OSError:  # full (EAGAIN) or going: the read side ends the carrying
                    self.dropped_out += len(bufs) - 2 if len(bufs) > 2 else 1
                else:
                    if len(bufs) > 2:
                        self.coalesced_writes += 1
                        self.coalesced_segments += len(bufs) - 2
        else:
            write = os.write
            for p in packets:
                try:
                    write(fd, p)
                except OSError:  # as above
                    self.dropped_out += 1
        if not self._taking:
            self._take()

    async def _run(self) -> None:
        try:
            await self._pump()
        except trio.ClosedResourceError:
            pass
        finally:
            if not self.ended:  # cancelled from outside (module unload)
                self.stop()

    async def _pump(self) -> None:
        wait = trio.lowlevel.wait_readable
        while self.fd >= 0:
            await wait(self.fd)
            self._take()

    def _take(self) -> None:
        """Read what the TUN has (up to ``TUN_BATCH`` reads) and hand it to the
        interface as one batch; an error on the TUN ends the carrying."""
        fd, ifp = self.fd, self.ifp
        if fd < 0:
            return
        read, unpack, hsize = os.read, VNET_HDR.unpack_from, VNET_HDR.size
        offload = self.offload
        mtu = ifp.mtu  # live: SIOCSIFMTU may change it
        packets: list[bytes] = []
        error = 0
        for _ in range(TUN_BATCH):
            try:
                p = read(fd, _READ_MAX)
            except BlockingIOError:
                break
            except OSError as exc:
                error = exc.errno or errno.EIO
                break
            if offload:
                if len(p) <= hsize:
                    self.dropped_in += 1
                    continue
                flags, gso, _, size, start, offset = unpack(p)
                p = p[hsize:]
                if flags or gso:
                    try:
                        parts = split(p, flags, gso, size, start, offset)
                    except ValueError as exc:
                        log.debug("%s: a TUN read dropped: %s", ifp.name, exc)
                        self.dropped_in += 1
                        continue
                    if gso:
                        self.tso_reads += 1
                        self.tso_segments += len(parts)
                    for q in parts:
                        if len(q) <= mtu and q[0] >> 4 in (4, 6):
                            packets.append(q)
                        else:
                            self.dropped_in += 1
                    continue
            if 0 < len(p) <= mtu and p[0] >> 4 in (4, 6):
                packets.append(p)
            else:
                self.dropped_in += 1
        if packets:
            self._taking = True
            try:
                ifp.write_packets(packets)
            finally:
                self._taking = False
        if error:
            self.stop(0 if error in _GONE else error)


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
    if ifp.offload:
        numpy()  # loaded now, not at the first super-segment
    try:  # no await from the checks to start(): nothing can race them
        ifname = name.decode()
        fd, offload = open_tun(ifname, mtu, ifp.offload)
    except UnicodeDecodeError:
        raise DeviceError(errno.EINVAL) from None
    except OSError as exc:
        raise DeviceError(exc.errno or errno.EIO) from None
    Carrier(ifp, fd, ifname, mtu, offload).start()


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
