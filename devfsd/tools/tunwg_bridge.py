"""``tunwg-bridge NODE IFNAME``: join a tun-style node to a Linux TUN interface.

Opens NODE (a tunwg node) and makes the Linux TUN interface IFNAME
(``IFF_TUN | IFF_NO_PI``) with MTU ``-m`` (default 1420, tunwg's default),
then moves every packet read from one to the other, in two threads, until
SIGINT or SIGTERM or an error. Give the interface its addresses and bring
it up with ``ip``; then ping, iperf3, ssh and curl run over the tunnel. The
TUN interface goes away when the bridge exits. Silent on success;
``tunwg-bridge: arg: strerror`` and exit 1 on failure, as NetBSD's tools.

Two threads, one per direction, each blocked in its own system call:

- node to TUN: pread(2) on the node sleeps in the driver until a packet
  comes (one FUSE request per read, no poll(2) first);
- TUN to node: read(2) on the TUN, pwrite(2) on the node.

pread(2)/pwrite(2), not read(2)/write(2): to the kernel a node is a
regular file, and Linux serialises read(2) and write(2) on one open file
(its position lock; FUSE's ``FOPEN_STREAM`` would lift it, but pyfuse3
cannot set it), so a thread asleep in read(2) would hold every write of the
other thread. The positioned calls take no such lock, and the driver
ignores the offset.

A node whose minor has ``BATCH`` set (``user.devfsd.minor``) speaks tunwg's
batch framing: each read returns every queued packet that fits, each after
its length as 2 bytes big-endian, and each write takes packets framed the
same way. The bridge then gathers what the TUN has ready (up to
``BATCH_BYTES``) into one write, and splits each read. Under load that
divides the FUSE requests per packet by the batch size; a lone packet
costs the same as without it. See tunwg(4).

The interface's MTU follows the TUN's (``MtuFollower``): at start and after
each change the TUN's link makes (``ip link set IFNAME mtu N``, heard on
a netlink socket subscribed to link events, ``RTMGRP_LINK``), the main
thread reads the TUN's MTU (``SIOCGIFMTU``) and, if it moved, sends it to
the node as NetBSD's ``SIOCSIFMTU`` through the daemon's control socket
(FUSE carries no ioctl(2)). A node whose driver has no such ioctl
(``ENOTTY``) is left alone; another failure is reported and the bridge
goes on.

``-d``: the daemon carries the interface itself (``carry``): the tool opens
NODE, sends tunwg's ``TUNWGIOCCARRY`` (IFNAME and the MTU) through the
daemon's control socket, and the driver opens /dev/net/tun and moves the
packets inside the daemon, with no FUSE request per packet. The tool then
only holds the node open: it sleeps in a read of the node, which returns
when the carrying ends (end of file when the TUN interface was deleted,
``ip link del``), and it exits, closing the node, on that or on SIGINT or
SIGTERM, which ends the carrying and removes the TUN interface. The tool
does not follow the MTU then: the daemon does, from the TUN descriptor it
holds, wherever the TUN is (the daemon makes it in its own network
namespace, which need not be the tool's, and it may be moved; by name
from here the tool could find no interface, or another of that name).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from typing import Final

from devfsd.cdevsw import IOW
from devfsd.control import path_for_node
from devfsd.control.client import Client
from devfsd.errors import DevfsdError
from devfsd.mknod.cli import XATTR_MINOR
from devfsd.tools import EXIT_SUCCESS, Getopt, GetoptError, err, long_option, usage, warn

__all__ = ["BATCH", "BATCH_BYTES", "MtuFollower", "main", "split_batch"]

PROG: Final = "tunwg-bridge"
TUNSETIFF: Final = 0x400454CA
IFF_TUN: Final = 0x0001
IFF_NO_PI: Final = 0x1000
BUFSIZE: Final = 65536
USAGE: Final = f"usage: {PROG} [-d] [-m mtu] node ifname\n"
SIOCSIFMTU: Final = 0x8922
SIOCGIFMTU: Final = 0x8921
#: NetBSD's ``SIOCSIFMTU``, ``_IOW('i', 127, struct ifreq)``, as tunwg's node takes it.
NODE_SIOCSIFMTU: Final = IOW(ord("i"), 127, 16 + 128)
#: <linux/rtnetlink.h>: the link events group.
RTMGRP_LINK: Final = 1
#: tunwg's default MTU: the TUN interface must not send larger packets, or
#: each write of one fails EIO (a TCP stream would stall).
DEFAULT_MTU: Final = 1420
#: The minor-number bit of tunwg's batch framing (tunwg's ``BATCH``).
BATCH: Final = 0x10000
#: The most a batch write carries: FUSE splits a write larger than its
#: ``max_write`` (128 KiB here) into several requests, which would cut a batch.
BATCH_BYTES: Final = 65536
#: tunwg's request to carry the interface in the daemon (modules/tunwg/carrier.py):
#: ``_IOW('W', 1, struct { char ifname[16]; int mtu; })``.
CARRY: Final = struct.Struct("=16si")
TUNWGIOCCARRY: Final = IOW(ord("W"), 1, CARRY.size)
#: Errors that mean the device is gone: they end the bridge. Anything else
#: on a write (no route, too big) loses that packet, as on a link.
_GONE: Final = frozenset({errno.ENXIO, errno.EBADF, errno.ENODEV})


def open_tun(name: str) -> int:
    """Make (or attach to) the Linux TUN interface ``name``; returns its fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    except BaseException:
        os.close(fd)
        raise
    return fd


def set_mtu(name: str, mtu: int) -> None:
    """Set interface ``name``'s MTU (SIOCSIFMTU)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), SIOCSIFMTU, struct.pack("16si12x", name.encode(), mtu))


def get_mtu(name: str) -> int:
    """Interface ``name``'s MTU (SIOCGIFMTU)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        out = fcntl.ioctl(s.fileno(), SIOCGIFMTU, struct.pack("16si12x", name.encode(), 0))
    return int(struct.unpack_from("16si", out)[1])


class MtuFollower:
    """Sends the TUN ``ifname``'s MTU to ``node`` whenever it changes (module docstring).

    Raises:
        OSError: no netlink socket (``__init__``).
    """

    def __init__(self, node: str, ifname: str) -> None:
        self.node = os.path.abspath(node)
        self.ifname = ifname
        self.client = Client(path_for_node(node))
        self.mtu: int | None = None
        self.sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE
        )
        try:
            self.sock.bind((0, RTMGRP_LINK))
        except BaseException:
            self.sock.close()
            raise

    def close(self) -> None:
        self.sock.close()

    def check(self) -> None:
        """Send the TUN's MTU to the node if it moved; stop following on ``ENOTTY``."""
        try:
            mtu = get_mtu(self.ifname)
        except OSError:
            return  # the link is going: the pumps report it
        if mtu == self.mtu:
            return
        try:
            self.client.ioctl(self.node, NODE_SIOCSIFMTU, bytes(16) + struct.pack("=i", mtu))
        except DevfsdError as exc:
            if exc.errno == errno.ENOTTY:
                self.mtu = -1  # no such ioctl: never asked again
                self.sock.close()
                return
            warn(PROG, self.node, exc.errno)
        self.mtu = mtu

    def wait(self, timeout: float) -> None:
        """Up to ``timeout`` seconds for link events; then ``check``."""
        if self.mtu == -1:
            time.sleep(timeout)
            return
        if select.select([self.sock], [], [], timeout)[0]:
            with contextlib.suppress(BlockingIOError):
                while self.sock.recv(65536):
                    pass
            self.check()


def is_batch(node: str) -> bool:
    """Whether ``node`` is a tunwg node with batch framing (its minor's ``BATCH`` bit)."""
    try:
        return bool(int(os.getxattr(node, XATTR_MINOR)) & BATCH)
    except (OSError, ValueError):
        return False


def split_batch(buf: bytes | memoryview) -> list[memoryview]:
    """The packets of one batch-framed buffer (each after a 2-byte length).

    Raises:
        ValueError: a length runs past the end of ``buf``.
    """
    view = memoryview(buf)
    out = []
    pos, end = 0, len(view)
    while pos < end:
        if end - pos < 2:
            raise ValueError("truncated length")
        n = (view[pos] << 8) | view[pos + 1]
        pos += 2
        if n > end - pos:
            raise ValueError("truncated packet")
        out.append(view[pos : pos + n])
        pos += n
    return out


class _Bridge:
    """The two pumps and how they end: the first failure is kept."""

    def __init__(self, nfd: int, tfd: int, node: str, ifname: str, batch: bool) -> None:
        self.nfd, self.tfd = nfd, tfd
        self.node, self.ifname = node, ifname
        self.batch = batch
        self.done = threading.Event()
        self.failed: list[tuple[str, int]] = []

    def _fail(self, name: str, code: int) -> None:
        self.failed.append((name, code))
        self.done.set()

    def node_to_tun(self) -> None:
        nfd, tfd, batch = self.nfd, self.tfd, self.batch
        pread, write = os.pread, os.write
        while not self.done.is_set():
            try:
                buf = pread(nfd, BUFSIZE, 0)
            except InterruptedError:
                continue
            except OSError as exc:
                return self._fail(self.node, exc.errno or errno.EIO)
            if not buf:
                return self._fail(self.node, errno.ENXIO)
            try:
                packets = split_batch(buf) if batch else (buf,)
            except ValueError:
                return self._fail(self.node, errno.EIO)
            for packet in packets:
                try:
                    write(tfd, packet)
                except OSError as exc:
                    if exc.errno in _GONE:
                        return self._fail(self.ifname, exc.errno or errno.EIO)
        return None

    def tun_to_node(self) -> None:
        nfd, tfd, batch = self.nfd, self.tfd, self.batch
        read, pwrite = os.read, os.pwrite
        poller = select.poll()
        poller.register(tfd, select.POLLIN)
        pack = struct.Struct(">H").pack
        while not self.done.is_set():
            try:
                if not poller.poll(500):
                    continue
                packet = read(tfd, BUFSIZE)
            except (InterruptedError, BlockingIOError):
                continue
            except OSError as exc:
                return self._fail(self.ifname, exc.errno or errno.EIO)
            if batch:
                # Gather what else the TUN has ready, up to one batch.
                parts = [pack(len(packet)), packet]
                size = 2 + len(packet)
                while size < BATCH_BYTES - 2 - 1500:
                    try:
                        packet = read(tfd, BUFSIZE)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as exc:
                        return self._fail(self.ifname, exc.errno or errno.EIO)
                    parts += (pack(len(packet)), packet)
                    size += 2 + len(packet)
                packet = b"".join(parts)
            try:
                pwrite(nfd, packet, 0)
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno in _GONE:
                    return self._fail(self.node, exc.errno or errno.EIO)
        return None


def _follow_mtu_until(done: threading.Event, node: str, ifname: str) -> None:
    """Until ``done``: the node's MTU follows the TUN's (``MtuFollower``), if it can."""
    follower: MtuFollower | None = None
    try:
        follower = MtuFollower(node, ifname)
    except OSError as exc:
        warn(PROG, ifname, exc.errno or errno.EIO)  # the packets go on, the MTU stays
    else:
        follower.check()
    while not done.is_set():
        if follower is not None:
            follower.wait(0.5)
        else:
            done.wait(0.5)
    if follower is not None:
        follower.close()


def carry(node: str, ifname: str, mtu: int) -> int:
    """``-d``: have the daemon carry ``node``'s interface on the TUN ``ifname`` (module docstring)."""
    try:
        nfd = os.open(node, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return err(PROG, node, exc.errno or errno.EIO)
    try:
        try:
            Client(path_for_node(node)).ioctl(
                os.path.abspath(node), TUNWGIOCCARRY, CARRY.pack(ifname.encode(), mtu)
            )
        except DevfsdError as exc:
            return err(PROG, ifname, exc.errno)
        done = threading.Event()
        ended: list[int] = []

        def hold() -> None:
            try:
                os.pread(nfd, BUFSIZE, 0)  # sleeps until the carrying ends
                ended.append(0)
            except OSError as exc:
                ended.append(exc.errno or errno.EIO)
            done.set()

        def stop(signum: int, frame: object) -> None:
            done.set()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        threading.Thread(target=hold, daemon=True).start()
        while not done.wait(0.5):  # the daemon follows the TUN's MTU itself
            pass
    finally:
        # A read still asleep ends when the process exits (devfsd sees the
        # SIGKILL of the exit); then the node's close ends the carrying.
        os.close(nfd)
    if ended and ended[0]:
        return err(PROG, ifname, ended[0])
    return EXIT_SUCCESS


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if (asked := long_option(PROG, USAGE, "tunwg-bridge(8)", argv)) is not None:
        return asked
    opts = Getopt(argv, "dm:")
    mtu = DEFAULT_MTU
    in_daemon = False
    try:
        for opt, arg in opts:
            if opt == "d":
                in_daemon = True
                continue
            if not arg.isdigit() or not 68 <= int(arg) <= 65535:
                return err(PROG, arg, errno.EINVAL)
            mtu = int(arg)
    except GetoptError as exc:
        return usage(PROG, USAGE, str(exc))
    if len(opts.operands) != 2:
        return usage(PROG, USAGE)
    node, ifname = opts.operands
    if not ifname or len(ifname.encode()) > 15:
        return err(PROG, ifname, errno.EINVAL)
    if in_daemon:
        return carry(node, ifname, mtu)
    try:
        nfd = os.open(node, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return err(PROG, node, exc.errno or errno.EIO)
    try:
        tfd = open_tun(ifname)
        os.set_blocking(tfd, False)
        set_mtu(ifname, mtu)
    except OSError as exc:
        os.close(nfd)
        return err(PROG, ifname, exc.errno or errno.EIO)
    bridge = _Bridge(nfd, tfd, node, ifname, is_batch(node))

    def stop(signum: int, frame: object) -> None:
        bridge.done.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for pump in (bridge.node_to_tun, bridge.tun_to_node):
        threading.Thread(target=pump, daemon=True).start()
    _follow_mtu_until(bridge.done, node, ifname)
    # The node pump may sleep in pread(2); the process exits next (daemon
    # threads), and devfsd sees the exit's SIGKILL and ends that read.
    os.close(tfd)
    os.close(nfd)
    if bridge.failed and bridge.failed[0][1] != errno.EBADF:
        name, code = bridge.failed[0]
        return err(PROG, name, code)
    return EXIT_SUCCESS
