"""The MTU of a carried interface follows its Linux TUN's, in whatever network namespace.

``tunwg-bridge`` (no ``-d``) follows the TUN it holds from the tool, by
name, in the tool's network namespace. A TUN the daemon carries (carrier.py)
need not be there: the daemon makes it in its own namespace, the tool may
run in another, and the TUN may be moved afterwards (``ip link set IFNAME
netns NS``, as a WireGuard interface is made in one namespace and used in
a container's). So the daemon follows it itself, from the TUN descriptor it
holds, which names the device wherever it is:

- ``TUNGETDEVNETNS`` on the descriptor gives the namespace the device is
  in now, and ``TUNGETIFF`` its name now;
- in that namespace (``setns(2)`` in a short-lived thread of its own: a
  socket belongs to the namespace it was made in, and only that thread
  changes namespace) a ``NETLINK_ROUTE`` socket subscribed to link events
  (``RTMGRP_LINK``) and an ``AF_INET`` socket for ``SIOCGIFMTU``;
- at start and after each link event, the TUN's MTU (by its name, in that
  namespace) becomes the interface's (``Interface.set_mtu``), if it is
  within ``MTU_MIN``..``MTU_MAX`` (else logged and left); a TUN that moved
  on (the event of its leaving, then its name unknown there, or another
  namespace) has its namespace looked up again.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import socket
import struct
import threading
from typing import TYPE_CHECKING, Final

import trio

from .iface import MTU_MAX, MTU_MIN

if TYPE_CHECKING:
    from .iface import Interface

__all__ = ["TUNGETDEVNETNS", "follow_mtu", "sockets_in"]

log = logging.getLogger(__name__)

#: <linux/if_tun.h>: ``_IO('T', 227)``, a descriptor of the device's network namespace.
TUNGETDEVNETNS: Final = 0x54E3
TUNGETIFF: Final = 0x800454D2
SIOCGIFMTU: Final = 0x8921
RTMGRP_LINK: Final = 1
CLONE_NEWNET: Final = 0x40000000
_IFREQ: Final = struct.Struct("16si20x")
#: After the TUN was not found where its namespace said (it was moving),
#: this long before looking again.
RETRY: Final = 0.05


def _own_netns() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def sockets_in(ns_fd: int) -> tuple[socket.socket, socket.socket]:
    """A link-event netlink socket and an ``AF_INET`` socket in the network namespace ``ns_fd``.

    Raises:
        OSError: from ``setns(2)`` or the sockets.
    """

    def make() -> tuple[socket.socket, socket.socket]:
        nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE)
        try:
            nl.bind((0, RTMGRP_LINK))
            inet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except BaseException:
            nl.close()
            raise
        return nl, inet

    if os.fstat(ns_fd).st_ino == _own_netns():
        return make()
    made: list[tuple[socket.socket, socket.socket]] = []
    failed: list[OSError] = []

    def there() -> None:  # this thread alone enters the namespace, and ends there
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            if libc.setns(ns_fd, CLONE_NEWNET) != 0:
                code = ctypes.get_errno()
                raise OSError(code, os.strerror(code))
            made.append(make())
        except OSError as exc:
            failed.append(exc)

    t = threading.Thread(target=there, name="tunwg netns")
    t.start()
    t.join()
    if failed:
        raise failed[0]
    return made[0]


def _name(tun_fd: int) -> str:
    raw = fcntl.ioctl(tun_fd, TUNGETIFF, bytes(40))
    return raw[:16].rstrip(b"\0").decode()


def _netns(tun_fd: int) -> int:
    """A new descriptor of the network namespace the TUN ``tun_fd`` is in now
    (the daemon's on a kernel older than 5.2, without ``TUNGETDEVNETNS``:
    there the TUN is followed only where it was made)."""
    try:
        return fcntl.ioctl(tun_fd, TUNGETDEVNETNS)
    except OSError as exc:
        if exc.errno not in (errno.ENOTTY, errno.EINVAL):
            raise
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


async def follow_mtu(ifp: Interface, tun_fd: int) -> None:
    """Until cancelled or the TUN ``tun_fd`` fails: ``ifp``'s MTU follows the TUN's (module docstring)."""
    while True:
        try:
            ns_fd = _netns(tun_fd)
        except OSError as exc:  # the TUN is going: the carrier's reads end the carrying
            log.debug("%s: TUNGETDEVNETNS: %s; the MTU is no longer followed", ifp.name, exc)
            return
        try:
            ns = os.fstat(ns_fd).st_ino
            nl, inet = sockets_in(ns_fd)
        except OSError as exc:
            # EPERM isolated: entering another namespace takes CAP_SYS_ADMIN,
            # which tunwg's host keeps only if given (modload -I -s caps=sys_admin).
            why = " (setns(2) takes CAP_SYS_ADMIN)" if exc.errno == errno.EPERM else ""
            log.warning("%s: the TUN's MTU cannot be followed: %s%s", ifp.name, exc, why)
            return
        finally:
            os.close(ns_fd)
        with nl, inet:
            while True:
                try:
                    if not _follow_once(ifp, tun_fd, inet, ns):
                        break
                except OSError as exc:  # the TUN descriptor is going: as above
                    log.debug("%s: %s; the MTU is no longer followed", ifp.name, exc)
                    return
                await trio.lowlevel.wait_readable(nl)
                try:
                    while nl.recv(65536):
                        pass
                except BlockingIOError:
                    pass
                except OSError as exc:  # ENOBUFS: events were lost; the MTU is read anyway
                    log.debug("%s: link events: %s", ifp.name, exc)
        await trio.sleep(RETRY)


def _follow_once(ifp: Interface, tun_fd: int, inet: socket.socket, ns: int) -> bool:
    """Take the TUN's MTU; False if it is no longer in namespace ``ns`` (look again)."""
    try:
        name = _name(tun_fd)
        out = fcntl.ioctl(inet.fileno(), SIOCGIFMTU, _IFREQ.pack(name.encode(), 0))
        moved = _netns(tun_fd)
        try:
            if os.fstat(moved).st_ino != ns:
                return False
        finally:
            os.close(moved)
    except OSError as exc:
        if exc.errno in (errno.ENODEV, errno.ENXIO):
            return False  # not (or no longer) there
        raise
    mtu = _IFREQ.unpack(out)[1]
    if mtu != ifp.mtu:
        if MTU_MIN <= mtu <= MTU_MAX:
            log.debug("%s: MTU %d, the TUN's", ifp.name, mtu)
            ifp.set_mtu(mtu)
        else:
            log.warning(
                "%s: the TUN's MTU %d is out of %d..%d; %d kept", ifp.name, mtu, MTU_MIN, MTU_MAX, ifp.mtu
            )
    return True
