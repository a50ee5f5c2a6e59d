"""``tunwg-bridge NODE IFNAME``: join a tun-style node to a Linux TUN interface.

Opens NODE (a tunwg node: one IP packet per read and per write) and makes
the Linux TUN interface IFNAME (``IFF_TUN | IFF_NO_PI``) with MTU ``-m``
(default 1420, tunwg's default), then moves every
packet read from one to the other, in two threads, until SIGINT or SIGTERM
or an error. Give the interface its addresses and bring it up with ``ip``;
then ping, iperf3, ssh and curl run over the tunnel. The TUN interface goes
away when the bridge exits. Silent on success; ``tunwg-bridge: arg:
strerror`` and exit 1 on failure, as NetBSD's tools.

Why the node is read non-blocking, after poll(2): to the kernel a node is a
regular file, and Linux serialises read(2) and write(2) calls on one open
file (its position lock, which FUSE's FOPEN_STREAM would lift, but pyfuse3
cannot set it). A thread blocked in read(2) on the node would hold every
write of the other thread until a packet arrived. So the reading thread
waits in poll(2), which takes no such lock, and reads only what is there.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import socket
import struct
import sys
import threading
from typing import Final

from devfsd.tools import EXIT_FAILURE, EXIT_SUCCESS, err

__all__ = ["main"]

PROG: Final = "tunwg-bridge"
TUNSETIFF: Final = 0x400454CA
IFF_TUN: Final = 0x0001
IFF_NO_PI: Final = 0x1000
BUFSIZE: Final = 65536
USAGE: Final = f"usage: {PROG} [-m mtu] node ifname\n"
SIOCSIFMTU: Final = 0x8922
#: tunwg's default MTU: the TUN interface must not send larger packets, or
#: each write of one fails EIO (a TCP stream would stall).
DEFAULT_MTU: Final = 1420


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


def _pump(
    src: int,
    dst: int,
    what: tuple[str, str],
    failed: list[tuple[str, int]],
    done: threading.Event,
    *,
    poll_first: bool = False,
) -> None:
    """Copy packets from ``src`` to ``dst`` until an error (recorded) or ``done``.

    With ``poll_first``, ``src`` is non-blocking: wait in poll(2), then read.
    """
    read, write = os.read, os.write
    poller = select.poll()
    poller.register(src, select.POLLIN)
    need_poll = poll_first
    while not done.is_set():
        if need_poll:
            try:
                if not poller.poll(500):
                    continue
            except InterruptedError:
                continue
        try:
            packet = read(src, BUFSIZE)
        except BlockingIOError:
            need_poll = True  # drained: wait in poll(2) again
            continue
        except InterruptedError:
            continue
        except OSError as exc:
            failed.append((what[0], exc.errno or errno.EIO))
            break
        # Read on until EAGAIN before polling again: a poll(2) is a FUSE
        # round trip of its own, and under load packets are already queued
        # (measured: +20 to +40 % TCP throughput through tunwg).
        need_poll = False
        if not packet:
            failed.append((what[0], errno.ENXIO))
            break
        try:
            write(dst, packet)
        except OSError as exc:
            # A packet the other side refuses (no route, too big) is lost,
            # as on a link; only a gone device ends the bridge.
            if exc.errno in (errno.ENXIO, errno.EBADF, errno.ENODEV):
                failed.append((what[1], exc.errno))
                break
    done.set()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    mtu = DEFAULT_MTU
    if args[:1] == ["-m"] and len(args) >= 2:
        if not args[1].isdigit() or not 68 <= int(args[1]) <= 65535:
            return err(PROG, args[1], errno.EINVAL)
        mtu = int(args[1])
        args = args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    if len(args) != 2 or args[0].startswith("-"):
        sys.stderr.write(USAGE)
        return EXIT_FAILURE
    node, ifname = args
    if not ifname or len(ifname.encode()) > 15:
        return err(PROG, ifname, errno.EINVAL)
    try:
        nfd = os.open(node, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        return err(PROG, node, exc.errno or errno.EIO)
    try:
        tfd = open_tun(ifname)
        set_mtu(ifname, mtu)
    except OSError as exc:
        os.close(nfd)
        return err(PROG, ifname, exc.errno or errno.EIO)
    done = threading.Event()
    failed: list[tuple[str, int]] = []
    threads = [
        threading.Thread(
            target=_pump,
            args=(nfd, tfd, (node, ifname), failed, done),
            kwargs={"poll_first": True},
            daemon=True,
        ),
        threading.Thread(target=_pump, args=(tfd, nfd, (ifname, node), failed, done), daemon=True),
    ]

    def stop(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for t in threads:
        t.start()
    while not done.wait(0.5):
        pass
    # The pumps may sit in read(2); closing is what ends them (the process
    # exits next, so they are daemon threads).
    os.close(tfd)
    os.close(nfd)
    if failed and failed[0][1] != errno.EBADF:
        name, code = failed[0]
        return err(PROG, name, code)
    return EXIT_SUCCESS
