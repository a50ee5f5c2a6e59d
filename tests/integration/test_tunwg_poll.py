"""tunwg behind a real mount: an arrived packet is readable at once (issue 15.3).

Two tunwg units of one daemon peered over 127.0.0.1. After a blocking
read (the reader's turn on the UDP socket, ``Interface.wait_packet``), a
datagram that has reached the socket must make the node readable to the
very next poll(2), not after the receive loop's
``STAND_ASIDE`` (0.1 s).
"""

from __future__ import annotations

import functools
import itertools
import os
import select
import socket
import stat
import struct
import tempfile
import threading
from ipaddress import ip_address
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devfsd.cdevsw import makedev
from devfsd.testing.mount import DevfsdMount, wait_for
from modules.tunwg.wg.crypto import generate_private_key, public_key

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

#: Seconds a wait that should end may take before the test fails.
BOUND = 5.0
ROUNDS = 5
_ids = itertools.count()


@pytest.fixture(params=["in-process", "isolated"])
def mnt(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DevfsdMount]:
    """tunwg in process, or in a host of its own (``--isolate``)."""
    isolate = ["--isolate"] if request.param == "isolated" else []
    with DevfsdMount(tmp_path, args=["--debug", *isolate]) as m:
        yield m


def uapi(path: Path, body: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(BOUND)
        s.connect(str(path))
        s.sendall(body.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    assert buf.endswith(b"errno=0\n\n"), buf
    return buf.decode()


def ipv4(src: str, dst: str, ident: int) -> bytes:
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x7477, ident) + bytes(56)
    head = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(icmp), ident, 0, 64, 1, 0)
    return head + ip_address(src).packed + ip_address(dst).packed + icmp


def udp_rx_queued(port: int) -> int:
    """Bytes waiting on the UDP socket bound to ``port`` (``/proc/net/udp6``, ``udp``)."""
    total = 0
    for table in ("/proc/net/udp6", "/proc/net/udp"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    total += int(fields[4].split(":")[1], 16)
    return total


def pair(m: DevfsdMount, sockdir: Path) -> tuple[int, int, int, Callable[[int], bytes]]:
    """Units 0 and 1 peered, their nodes open: (fd a, fd b, b's UDP port, packet a->b)."""
    prefix = f"tp{os.getpid() % 100000}x{next(_ids)}"
    c = m.client()
    c.modload("tunwg", {"count": 2, "ifname": prefix, "sockdir": str(sockdir)})
    maj = {n: mj for n, mj, _ in c.drivers()}["tunwg"]
    keys = [generate_private_key(os.urandom) for _ in range(2)]
    ports = []
    for u in range(2):
        sock = sockdir / f"{prefix}{u}.sock"
        uapi(sock, f"set=1\nprivate_key={keys[u].hex()}\nlisten_port=0\n")
        got = dict(ln.split("=", 1) for ln in uapi(sock, "get=1\n").splitlines() if "=" in ln)
        ports.append(int(got["listen_port"]))
    inner = ["198.51.100.1", "198.51.100.2"]
    for u in range(2):
        o = 1 - u
        uapi(
            sockdir / f"{prefix}{u}.sock",
            f"set=1\npublic_key={public_key(keys[o]).hex()}\nendpoint=127.0.0.1:{ports[o]}\n"
            f"replace_allowed_ips=true\nallowed_ip={inner[o]}/32\n",
        )
    fds = []
    for u in range(2):
        p = m.path / f"tunwg{u}"
        os.mknod(p, stat.S_IFCHR | 0o600, makedev(maj, u))
        fds.append(os.open(p, os.O_RDWR))
    return fds[0], fds[1], ports[1], lambda i: ipv4(inner[0], inner[1], i)


def blocking_read(m: DevfsdMount, fd: int, then: Callable[[], object]) -> bytes:
    """A read(2) of ``fd`` asleep in the daemon when ``then()`` runs; what it got."""
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.append(os.read(fd, 65536)))
    t.start()
    try:
        wait_for(lambda: m.client().status()["sleepers"] == 1, BOUND, "the read to sleep")
        then()
    finally:
        t.join(BOUND)
    assert got, "the blocking read never returned"
    return got[0]


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # Short on purpose: a Unix socket path must fit in 108 bytes.
    with tempfile.TemporaryDirectory(prefix="tp", dir="/tmp") as d:
        yield Path(d)


def test_arrived_packet_is_readable_to_poll_and_nonblocking_read_after_blocking_reads(
    mnt: DevfsdMount, sockdir: Path
) -> None:
    a, b, b_port, packet = pair(mnt, sockdir)
    try:
        p0 = packet(0)
        assert blocking_read(mnt, b, lambda: os.write(a, p0)) == p0  # the session
        for i in range(1, ROUNDS + 1):
            p = packet(i)
            assert blocking_read(mnt, b, functools.partial(os.write, a, p)) == p  # b's turn on the socket
            q = packet(100 + i)
            os.write(a, q)
            wait_for(lambda: udp_rx_queued(b_port) > 0, BOUND, "the datagram at b's socket")
            poller = select.poll()
            poller.register(b, select.POLLIN)
            assert poller.poll(0) == [(b, select.POLLIN)], f"round {i}: arrived, not readable"
            assert os.read(b, 65536) == q  # queued: no sleep
    finally:
        os.close(a)
        os.close(b)
