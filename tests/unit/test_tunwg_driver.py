"""tunwg in-process: tun(4) semantics on a WireGuard interface, and its UAPI socket.

Through ``devfsd.testing.harness.Kernel`` (no FUSE). Each test loads tunwg
with ``sockdir`` under pytest's temporary directory and a unique ``ifname``,
so nothing under /var/run/wireguard is touched. Packets travel for real:
the two interfaces of one load talk WireGuard over loopback UDP
(127.0.0.1), with inner addresses from the documentation ranges only. A
packet flows only between interfaces that are up, so both nodes are open.
UAPI requests are spoken byte for byte on the real Unix socket.

Bounded and without fixed sleeps: blocking calls run under
``trio.fail_after``; states are polled against a deadline (``wait_for``).

Every test that uses the ``kernel`` fixture runs twice: with tunwg in
process, and isolated, in a module host of its own (``Kernel(isolate=True)``,
devfsd.isolate). So they observe tunwg only as a user can: through its
nodes (open, read, write, poll, ioctl), its UAPI socket (``wg show``: keys,
ports, ``tx_bytes``/``rx_bytes``) and its key log, never through its Python
objects, which stay in the host when it is isolated. The one test marked
``in_process_only`` asserts which of tunwg's tasks takes a datagram off
the socket, which no user can see (its behaviour runs both ways).
"""

from __future__ import annotations

import base64
import errno
import itertools
import logging
import os
import select
import socket
import stat
import struct
import time
from dataclasses import dataclass
from ipaddress import ip_address
from typing import TYPE_CHECKING, Final, TypeVar

import pytest
import trio
import trio.testing

from devfsd.cdevsw import IOW, Lwp
from devfsd.errors import DeviceError
from devfsd.testing.harness import Kernel, OpenFile
from modules.tunwg.iface import _local_address, _pktinfo
from modules.tunwg.tun import SIOCGIFMTU, SIOCSIFMTU
from modules.tunwg.wg.crypto import generate_private_key, public_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from modules.tunwg.iface import InterfaceStats

_T = TypeVar("_T")

TIMEOUT: Final = 5.0
MTU: Final = 1420
QUEUE_MAX: Final = 256  # tun(4)'s IFQ_MAXLEN
INITIATION: Final = 148
RESPONSE: Final = 92
POLL_READ: Final = select.POLLIN | select.POLLRDNORM
POLL_WRITE: Final = select.POLLOUT | select.POLLWRNORM
POLL_ALL: Final = POLL_READ | POLL_WRITE
EINVAL_REPLY: Final = b"errno=-22\n\n"
OK_REPLY: Final = b"errno=0\n\n"

_ids = itertools.count()


def unique_ifname() -> str:
    """An interface-name prefix no other test (or process) uses; the unit number follows."""
    return f"tu{os.getpid()}x{next(_ids)}"


def names(directory: Path) -> list[str]:
    """The names in ``directory``, sorted (a local directory: no need to await)."""
    return sorted(os.listdir(directory))


@pytest.fixture
def sockdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Short on purpose: a Unix socket path must fit in 108 bytes, and
    # tmp_path carries the (long) test name.
    return tmp_path_factory.mktemp("s")


# -- packets ----------------------------------------------------------------------


def ipv4(src: str, dst: str, ident: int = 0, payload: bytes = bytes(56)) -> bytes:
    """An ICMP echo request (checksums left zero: tunwg does not look)."""
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x7477, ident) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(icmp),
        ident,
        0,
        64,
        1,
        0,
        ip_address(src).packed,
        ip_address(dst).packed,
    )
    return header + icmp


def ipv6(src: str, dst: str, payload: bytes = bytes(56)) -> bytes:
    """An ICMPv6 echo request."""
    icmp = struct.pack("!BBHHH", 128, 0, 0, 0x7477, 1) + payload
    header = struct.pack("!IHBB", 6 << 28, len(icmp), 58, 64)
    return header + ip_address(src).packed + ip_address(dst).packed + icmp


# -- the UAPI socket ----------------------------------------------------------------


async def uapi(path: Path, request: bytes, replies: int = 1) -> bytes:
    """``request`` on a fresh connection; the bytes of ``replies`` replies
    (each ends with a blank line), or what came before the server closed."""
    buf = b""
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_unix_socket(str(path))
        async with stream:
            await stream.send_all(request)
            while buf.count(b"\n\n") < replies:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                buf += chunk
    return buf


async def uapi_set(path: Path, body: str) -> None:
    assert await uapi(path, b"set=1\n" + body.encode() + b"\n") == OK_REPLY


async def uapi_get(path: Path) -> list[tuple[str, str]]:
    """The get reply as (key, value) lines, ``errno=0`` checked and dropped."""
    reply = await uapi(path, b"get=1\n\n")
    assert reply.endswith(b"\nerrno=0\n\n") or reply == OK_REPLY, reply
    lines = [tuple(ln.split("=", 1)) for ln in reply.decode().splitlines() if ln]
    assert all(len(ln) == 2 for ln in lines)
    return [(k, v) for k, v in lines[:-1]]


# -- interfaces -------------------------------------------------------------------


@dataclass(eq=False)
class Side:
    """One tunwg interface of a test: unit, names, key, inner addresses, open node."""

    k: Kernel
    unit: int
    ifname: str
    sock: Path
    private: bytes
    inner4: str
    inner6: str
    f: OpenFile | None = None
    port: int = 0

    @property
    def public(self) -> bytes:
        return public_key(self.private)

    @property
    def node(self) -> OpenFile:
        assert self.f is not None
        return self.f

    def stats(self) -> InterfaceStats:
        st: InterfaceStats = self.k.loader.modules["tunwg"].pymod.statistics(self.unit)
        return st


async def load(k: Kernel, sockdir: Path, **props: str | int | bool) -> str:
    """Load tunwg with a unique ``ifname`` and ``sockdir``; the name prefix."""
    prefix = unique_ifname()
    await k.modload("tunwg", {"ifname": prefix, "sockdir": str(sockdir), **props})
    return prefix


def side(k: Kernel, sockdir: Path, prefix: str, unit: int) -> Side:
    n = unit + 1
    return Side(
        k=k,
        unit=unit,
        ifname=f"{prefix}{unit}",
        sock=sockdir / f"{prefix}{unit}.sock",
        private=generate_private_key(os.urandom),
        inner4=f"198.51.100.{n}",
        inner6=f"2001:db8::{n}",
    )


async def configure_pair(k: Kernel, sockdir: Path, prefix: str) -> tuple[Side, Side]:
    """Units 0 and 1 peered over 127.0.0.1 (ports picked by the kernel); nodes not opened."""
    a, b = side(k, sockdir, prefix, 0), side(k, sockdir, prefix, 1)
    for s in (a, b):
        await uapi_set(s.sock, f"private_key={s.private.hex()}\nlisten_port=0\n")
        s.port = int(dict(await uapi_get(s.sock))["listen_port"])
        assert s.port > 0
    for me, other in ((a, b), (b, a)):
        await uapi_set(
            me.sock,
            f"public_key={other.public.hex()}\nendpoint=127.0.0.1:{other.port}\n"
            f"replace_allowed_ips=true\nallowed_ip={other.inner4}/32\nallowed_ip={other.inner6}/128\n",
        )
    return a, b


async def open_pair(k: Kernel, sockdir: Path, **props: str | int | bool) -> tuple[Side, Side]:
    """Load with two interfaces, peer them, open both nodes."""
    a, b = await configure_pair(k, sockdir, await load(k, sockdir, count=2, **props))
    a.f = await k.open("tunwg", a.unit)
    b.f = await k.open("tunwg", b.unit)
    return a, b


async def read(f: OpenFile, size: int = 65536) -> bytes:
    with trio.fail_after(TIMEOUT):
        return await f.read(size)


async def wait_for(cond: Callable[[], _T | None], what: str) -> _T:
    """Poll ``cond()`` until it is truthy; fail naming ``what`` after ``TIMEOUT``."""
    deadline = trio.current_time() + TIMEOUT
    while True:
        got = cond()
        if got:
            return got
        if trio.current_time() > deadline:
            raise AssertionError(f"timed out after {TIMEOUT}s waiting for {what}")
        await trio.sleep(0.002)


def wire_size(packet: bytes, mtu: int = MTU) -> int:
    """The UDP payload ``packet`` travels in, as ``tx_bytes`` and ``rx_bytes``
    count it: padded to a multiple of 16 (not past ``mtu``), after the
    32-byte transport header."""
    return 32 + min(len(packet) + -len(packet) % 16, mtu)


async def counter(s: Side, name: str) -> int:
    """``s``'s peer's ``tx_bytes`` or ``rx_bytes`` (``wg show``; one peer)."""
    return int(dict(await uapi_get(s.sock))[name])


async def wait_received(s: Side, rx0: int, sent: list[bytes], what: str) -> None:
    """Wait until ``s``'s ``rx_bytes`` has grown from ``rx0`` by the packets
    ``sent``. tunwg counts a transport datagram and queues (or drops) its
    packet in one step, and serves the UAPI socket in another task: once
    the count shows them, every one of them is in the queue or dropped."""
    want = rx0 + sum(wire_size(p) for p in sent)
    deadline = trio.current_time() + TIMEOUT
    while (got := await counter(s, "rx_bytes")) < want:
        if trio.current_time() > deadline:
            raise AssertionError(f"timed out after {TIMEOUT}s waiting for {what} ({got} of {want} bytes)")
        await trio.sleep(0.002)
    assert got == want, (what, got, want)


async def nothing_queued(s: Side) -> bool:
    """``s``'s node polls neither readable nor with an error (nothing queued)."""
    return await s.node.poll(POLL_ALL) == POLL_WRITE


async def established(k: Kernel, sockdir: Path, **props: str | int | bool) -> tuple[Side, Side]:
    """An open pair with a session: one packet a -> b went through (and was read)."""
    a, b = await open_pair(k, sockdir, **props)
    p = ipv4(a.inner4, b.inner4)
    assert await a.node.write(p) == len(p)
    assert await read(b.node) == p
    return a, b


#: Tests that read tunwg's Python objects (its tasks' state).
in_process_only = pytest.mark.in_process_only


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``kernel``: in process and isolated, or in process only (``in_process_only``)."""
    if "kernel" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("in_process_only") is not None
        metafunc.parametrize("kernel", ["in-process"] if only else ["in-process", "isolated"], indirect=True)


@pytest.fixture
async def kernel(request: pytest.FixtureRequest) -> AsyncIterator[Kernel]:
    """A harness kernel, tunwg in process or in a host of its own; files a
    failed test left open are closed, so tunwg unloads. Modules that import
    this fixture (test_tunwg_carrier, test_tunwg_gro) are not parametrized
    by this module's ``pytest_generate_tests``: they get it in process."""
    isolated = getattr(request, "param", "in-process") == "isolated"
    async with Kernel.running(isolate=isolated) as k:
        try:
            yield k
        finally:
            for fp in list(k.spec.files):
                await k.spec.close(fp)


def errno_of(ei: pytest.ExceptionInfo[DeviceError]) -> int:
    return ei.value.errno


# -- interfaces exist before their nodes --------------------------------------------


async def test_count_makes_interfaces_and_sockets_at_load(kernel: Kernel, sockdir: Path) -> None:
    prefix = await load(kernel, sockdir, count=3)
    assert names(sockdir) == [f"{prefix}{n}.sock" for n in range(3)]
    for n in range(3):
        st = os.stat(sockdir / f"{prefix}{n}.sock")
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
        assert await uapi(sockdir / f"{prefix}{n}.sock", b"get=1\n\n") == OK_REPLY


async def test_wg_set_comes_before_the_first_open(kernel: Kernel, sockdir: Path) -> None:
    a, b = await configure_pair(kernel, sockdir, await load(kernel, sockdir, count=2))
    f = await kernel.open("tunwg", 0)  # the first open: nothing had it open (no EBUSY)
    with pytest.raises(DeviceError) as ei:
        await kernel.open("tunwg", 0)
    assert errno_of(ei) == errno.EBUSY  # now it is open (up)
    got = dict(await uapi_get(a.sock))
    assert (got["private_key"], got["public_key"], got["listen_port"]) == (
        a.private.hex(),
        b.public.hex(),
        str(a.port),
    )
    await f.close()


async def test_minor_n_is_interface_n_made_at_open(kernel: Kernel, sockdir: Path) -> None:
    prefix = await load(kernel, sockdir, count=0)
    assert names(sockdir) == []
    f = await kernel.open("tunwg", 5)
    assert names(sockdir) == [f"{prefix}5.sock"]
    got = await uapi_get(sockdir / f"{prefix}5.sock")
    assert [k for k, _ in got] == ["listen_port"]  # up: bound to a port of its own choosing
    await f.close()


async def test_minor_past_the_last_unit_is_enxio(kernel: Kernel, sockdir: Path) -> None:
    await load(kernel, sockdir, count=0)
    with pytest.raises(DeviceError) as ei:
        await kernel.open("tunwg", QUEUE_MAX)  # units 0..255
    assert errno_of(ei) == errno.ENXIO


@pytest.mark.parametrize(
    "props",
    [
        {"count": 257},
        {"count": -1},
        {"mtu": 575},
        {"rekey_after_time": 0},
        {"rekey_after_time": 121},
        {"offload": 2},
    ],
)
async def test_bad_properties_refused(kernel: Kernel, sockdir: Path, props: dict[str, int]) -> None:
    with pytest.raises(DeviceError) as ei:
        await load(kernel, sockdir, **props)
    assert errno_of(ei) == errno.EINVAL
    assert names(sockdir) == []


async def test_unload_refused_while_open_then_removes_the_sockets(kernel: Kernel, sockdir: Path) -> None:
    await load(kernel, sockdir, count=2)
    f = await kernel.open("tunwg", 0)
    with pytest.raises(DeviceError) as ei:
        await kernel.modunload("tunwg")
    assert errno_of(ei) == errno.EBUSY
    await f.close()
    await kernel.modunload("tunwg")
    assert names(sockdir) == []


# -- open and close ---------------------------------------------------------------


async def test_second_open_is_ebusy(kernel: Kernel, sockdir: Path) -> None:
    await load(kernel, sockdir)
    f = await kernel.open("tunwg", 0)
    with pytest.raises(DeviceError) as ei:
        await kernel.open("tunwg", 0)
    assert errno_of(ei) == errno.EBUSY
    await f.close()
    await (await kernel.open("tunwg", 0)).close()  # free again after the close


async def test_non_root_open_is_eperm(kernel: Kernel, sockdir: Path) -> None:
    await load(kernel, sockdir)
    with pytest.raises(DeviceError) as ei:
        await kernel.open("tunwg", 0, uid=1000)
    assert errno_of(ei) == errno.EPERM


async def test_close_brings_the_interface_down_and_keeps_its_configuration(
    kernel: Kernel, sockdir: Path
) -> None:
    a, b = await established(kernel, sockdir)
    p1 = ipv4(a.inner4, b.inner4, 1)
    rx0 = await counter(b, "rx_bytes")
    await a.node.write(p1)
    await wait_received(b, rx0, [p1], "a packet queued on b")
    before = await uapi_get(b.sock)
    await b.node.close()
    after = await uapi_get(b.sock)
    # Configuration kept: keys, port, peer, endpoint, allowed IPs, counters.
    assert after == before
    assert {k for k, _ in after} >= {"private_key", "listen_port", "public_key", "endpoint", "allowed_ip"}
    # While down, arriving traffic is dropped, not queued (nor counted): a
    # sends (its tx_bytes grows) into b's socket.
    tx0 = await counter(a, "tx_bytes")
    p2 = ipv4(a.inner4, b.inner4, 2)
    await a.node.write(p2)
    assert await counter(a, "tx_bytes") == tx0 + wire_size(p2)
    b.f = await kernel.open("tunwg", b.unit, os.O_RDWR | os.O_NONBLOCK)  # closed: a new open works
    # Queue purged (p1 gone) and p2 not queued: a non-blocking read takes in
    # what has arrived on the socket first, and finds nothing.
    with pytest.raises(DeviceError) as ei:
        await b.node.read(2000)
    assert errno_of(ei) == errno.EAGAIN
    assert await uapi_get(b.sock) == before  # p2 dropped uncounted
    # Up again: b's sessions went with the down; its next packet makes a new one.
    p = ipv4(b.inner4, a.inner4, 3)
    await b.node.write(p)
    assert await read(a.node) == p


# -- write --------------------------------------------------------------------------


async def test_write_of_zero_bytes_is_eio(
    kernel: Kernel, sockdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await load(kernel, sockdir)
    f = await kernel.open("tunwg", 0)
    with pytest.raises(DeviceError) as ei:
        await f.write(b"")
    assert errno_of(ei) == errno.EIO
    # Refused by the driver, not a driver crash that the I/O path turned into EIO.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    await f.close()


@pytest.mark.parametrize("mtu", [MTU, 1280])
async def test_write_past_the_mtu_is_eio(kernel: Kernel, sockdir: Path, mtu: int) -> None:
    await load(kernel, sockdir, mtu=mtu)
    f = await kernel.open("tunwg", 0)
    at_mtu = ipv4("198.51.100.1", "198.51.100.2", payload=bytes(mtu - 28))
    assert await f.write(at_mtu) == mtu
    with pytest.raises(DeviceError) as ei:
        await f.write(at_mtu + b"\0")
    assert errno_of(ei) == errno.EIO
    await f.close()


def ifreq_mtu(mtu: int) -> bytes:
    """A NetBSD ``struct ifreq`` (no name) with ``ifr_mtu``."""
    return bytes(16) + struct.pack("=i", mtu)


async def test_mtu_changes_on_the_live_interface(kernel: Kernel, sockdir: Path) -> None:
    """SIOCSIFMTU on an open node: a write of the old MTU fails EIO, one of the
    new passes; SIOCGIFMTU reads it; packets are padded to the new MTU at most."""
    a, b = await established(kernel, sockdir)
    old = ipv4(a.inner4, b.inner4, payload=bytes(MTU - 28))
    await kernel.ioctl("tunwg", a.unit, SIOCSIFMTU, ifreq_mtu(1290))
    out = await kernel.ioctl("tunwg", a.unit, SIOCGIFMTU)
    assert struct.unpack_from("=i", out, 16)[0] == 1290
    with pytest.raises(DeviceError) as ei:
        await a.node.write(old)
    assert errno_of(ei) == errno.EIO
    tx0 = int(dict(await uapi_get(a.sock))["tx_bytes"])
    p = ipv4(a.inner4, b.inner4, payload=bytes(1285 - 28))
    assert await a.node.write(p) == len(p)
    assert await read(b.node) == p
    tx = int(dict(await uapi_get(a.sock))["tx_bytes"])
    assert tx - tx0 == 1290 + 32  # padded up to the new MTU, not to 1296
    await kernel.ioctl("tunwg", a.unit, SIOCSIFMTU, ifreq_mtu(MTU))
    assert await a.node.write(old) == MTU


@pytest.mark.parametrize("mtu", [0, 575, 65536, -1])
async def test_mtu_out_of_bounds_is_einval(kernel: Kernel, sockdir: Path, mtu: int) -> None:
    await load(kernel, sockdir)
    with pytest.raises(DeviceError) as ei:
        await kernel.ioctl("tunwg", 0, SIOCSIFMTU, ifreq_mtu(mtu))
    assert errno_of(ei) == errno.EINVAL
    out = await kernel.ioctl("tunwg", 0, SIOCGIFMTU)
    assert struct.unpack_from("=i", out, 16)[0] == MTU


async def test_mtu_set_by_non_root_is_eperm_and_others_enotty(kernel: Kernel, sockdir: Path) -> None:
    await load(kernel, sockdir)
    dev = kernel.dev("tunwg", 0)
    with pytest.raises(DeviceError) as ei:
        await kernel.spec.ioctl(dev, SIOCSIFMTU, ifreq_mtu(1280), Lwp(os.getpid(), 1000, 1000))
    assert errno_of(ei) == errno.EPERM
    with pytest.raises(DeviceError) as ei:
        await kernel.ioctl("tunwg", 0, IOW(ord("i"), 128, 144), ifreq_mtu(1280))
    assert errno_of(ei) == errno.ENOTTY


def test_mtu_ioctl_is_the_same_in_the_driver_and_the_bridge() -> None:
    from devfsd.tools.tunwg_bridge import NODE_SIOCSIFMTU
    from modules.tunwg.tun import SIOCSIFMTU as DRIVER_SIOCSIFMTU

    assert NODE_SIOCSIFMTU == DRIVER_SIOCSIFMTU


@pytest.mark.parametrize("first", [0x00, 0x50, 0xF0])
async def test_write_of_a_non_ip_packet_is_eafnosupport(kernel: Kernel, sockdir: Path, first: int) -> None:
    await load(kernel, sockdir)
    f = await kernel.open("tunwg", 0)
    with pytest.raises(DeviceError) as ei:
        await f.write(bytes([first]) + ipv4("198.51.100.1", "198.51.100.2")[1:])
    assert errno_of(ei) == errno.EAFNOSUPPORT
    await f.close()


async def test_unrouted_packet_is_dropped(kernel: Kernel, sockdir: Path) -> None:
    a, b = await open_pair(kernel, sockdir)
    p = ipv4(a.inner4, "198.51.100.99")  # no peer's allowed-ips cover it
    assert await a.node.write(p) == len(p)  # the write succeeds, as WireGuard's
    assert dict(await uapi_get(a.sock))["tx_bytes"] == "0"  # nothing went out, no handshake begun
    # Dropped, not kept for later: once b has the address, a packet to it
    # goes through the new handshake alone.
    await uapi_set(a.sock, f"public_key={b.public.hex()}\nallowed_ip=198.51.100.99/32\n")
    p2 = ipv4(a.inner4, "198.51.100.99", 2)
    await a.node.write(p2)
    assert await read(b.node) == p2
    assert await nothing_queued(b)


# -- read -----------------------------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
async def test_packets_cross_both_ways(kernel: Kernel, sockdir: Path, family: int) -> None:
    a, b = await open_pair(kernel, sockdir)
    make = ipv4 if family == 4 else ipv6
    for src, dst in ((a, b), (b, a)):
        attr = "inner4" if family == 4 else "inner6"
        p = make(getattr(src, attr), getattr(dst, attr))
        assert await src.node.write(p) == len(p)
        assert await read(dst.node) == p  # whole, padding trimmed


async def test_each_read_is_one_packet_cut_to_the_buffer(kernel: Kernel, sockdir: Path) -> None:
    a, b = await established(kernel, sockdir)
    ps = [ipv4(a.inner4, b.inner4, i, payload=bytes([i]) * 100) for i in (1, 2, 3)]
    p1, p2, p3 = ps
    rx0 = await counter(b, "rx_bytes")
    for p in ps:
        await a.node.write(p)
    await wait_received(b, rx0, ps, "three packets queued on b")
    assert await read(b.node, 10) == p1[:10]  # the rest of p1 is dropped
    assert await read(b.node, 65536) == p2  # one packet, not two
    assert await read(b.node, len(p3)) == p3
    assert await nothing_queued(b)


async def test_nonblocking_read_with_nothing_queued_is_eagain(kernel: Kernel, sockdir: Path) -> None:
    await load(kernel, sockdir)
    f = await kernel.open("tunwg", 0, os.O_RDWR | os.O_NONBLOCK)
    with pytest.raises(DeviceError) as ei:
        await f.read(2000)
    assert errno_of(ei) == errno.EAGAIN
    await f.close()


async def test_read_sleeps_until_a_packet_arrives(kernel: Kernel, sockdir: Path) -> None:
    a, b = await established(kernel, sockdir)
    got: list[bytes] = []

    async def reader() -> None:
        got.append(await read(b.node))

    p = ipv4(a.inner4, b.inner4, 7)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []  # asleep in d_read
        await a.node.write(p)
    assert got == [p]


@in_process_only
async def test_a_sleeping_reader_receives_from_the_socket_itself(kernel: Kernel, sockdir: Path) -> None:
    # Interface.wait_packet: the reader's task waits on the UDP socket, and
    # the receive loop stands aside, so the packet is answered in one step.
    a, b = await established(kernel, sockdir)
    iface = kernel.loader.modules["tunwg"].pymod._state.units[b.unit]
    got: list[bytes] = []

    async def reader() -> None:
        got.append(await read(b.node))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await wait_for(lambda: iface._reader_waiting and not iface._recv_waiting, "the reader on the socket")
        p = ipv4(a.inner4, b.inner4, 9)
        await a.node.write(p)
    assert got == [p]
    assert not iface._reader_waiting


async def test_packets_still_arrive_after_the_reader_stops_reading(kernel: Kernel, sockdir: Path) -> None:
    # A program that read once and then only writes: the receive loop takes
    # the socket back (STAND_ASIDE), so the peer's packets are still taken
    # in (queued, counted) and handshakes answered.
    a, b = await established(kernel, sockdir)
    ps = [ipv4(a.inner4, b.inner4, i) for i in range(3)]
    rx0 = await counter(b, "rx_bytes")
    for p in ps:
        await a.node.write(p)
    await wait_received(b, rx0, ps, "three packets taken in by b with no reader")
    for i in range(3):
        assert await read(b.node) == ipv4(a.inner4, b.inner4, i)


async def test_a_reader_asleep_on_the_socket_follows_a_new_listen_port(kernel: Kernel, sockdir: Path) -> None:
    a, b = await established(kernel, sockdir)
    got: list[bytes] = []

    async def reader() -> None:
        got.append(await read(b.node))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        await uapi_set(b.sock, "listen_port=0\n")  # a new socket, a new port
        port = int(dict(await uapi_get(b.sock))["listen_port"])
        assert port != b.port
        await uapi_set(a.sock, f"public_key={b.public.hex()}\nendpoint=127.0.0.1:{port}\n")
        p = ipv4(a.inner4, b.inner4, 11)
        await a.node.write(p)
    assert got == [p]


class PollHandle:
    """What ``selrecord`` keeps: ``notify()`` is the wakeup a poller gets."""

    def __init__(self) -> None:
        self.event = trio.Event()

    def notify(self) -> None:
        self.event.set()


async def test_poll_is_readable_when_a_packet_waits_and_always_writable(
    kernel: Kernel, sockdir: Path
) -> None:
    a, b = await established(kernel, sockdir)
    handle = PollHandle()
    assert await b.node.poll(POLL_ALL, handle) == POLL_WRITE
    await a.node.write(ipv4(a.inner4, b.inner4, 1))
    with trio.fail_after(TIMEOUT):
        await handle.event.wait()  # the arrival notifies the recorded poll
    assert await b.node.poll(POLL_ALL) == POLL_ALL
    assert await b.node.poll(POLL_READ) == POLL_READ
    await read(b.node)
    assert await b.node.poll(POLL_ALL) == POLL_WRITE


async def test_queue_holds_256_packets_and_drops_the_rest(kernel: Kernel, sockdir: Path) -> None:
    a, b = await established(kernel, sockdir)
    total, chunk = QUEUE_MAX + 44, 25
    for start in range(0, total, chunk):
        ps = [ipv4(a.inner4, b.inner4, i) for i in range(start, start + chunk)]
        rx0 = await counter(b, "rx_bytes")
        for p in ps:
            await a.node.write(p)
        # In steps, each one waited for, so the UDP socket buffer never overflows.
        await wait_received(b, rx0, ps, f"b to take {start + chunk} packets")
    idents = [struct.unpack_from("!H", await read(b.node), 4)[0] for _ in range(QUEUE_MAX)]
    assert idents == list(range(QUEUE_MAX))  # the first 256 kept ...
    assert await nothing_queued(b)  # ... the 44 after them, all received, dropped


# -- batch framing (minor BATCH | N) ---------------------------------------------------

BATCH: Final = 0x10000


def frame(*packets: bytes) -> bytes:
    """Packets in tunwg's batch framing: each after its length, 2 bytes big-endian."""
    return b"".join(struct.pack("!H", len(p)) + p for p in packets)


async def batch_pair(k: Kernel, sockdir: Path) -> tuple[Side, Side]:
    """Two peered interfaces whose nodes are opened with batch framing, with a session."""
    a, b = await configure_pair(k, sockdir, await load(k, sockdir, count=2))
    a.f = await k.open("tunwg", BATCH | a.unit)
    b.f = await k.open("tunwg", BATCH | b.unit)
    p = ipv4(a.inner4, b.inner4)
    assert await a.node.write(frame(p)) == len(p) + 2
    assert await read(b.node) == frame(p)
    return a, b


def packets(a: Side, b: Side, n: int, size: int = 100) -> list[bytes]:
    return [ipv4(a.inner4, b.inner4, i, payload=bytes([i]) * size) for i in range(1, n + 1)]


async def test_batch_write_sends_each_packet_and_a_read_returns_them_framed(
    kernel: Kernel, sockdir: Path
) -> None:
    a, b = await batch_pair(kernel, sockdir)
    ps = [*packets(a, b, 3), ipv6(a.inner6, b.inner6)]
    rx0 = await counter(b, "rx_bytes")
    assert await a.node.write(frame(*ps)) == sum(len(p) + 2 for p in ps)
    await wait_received(b, rx0, ps, "four packets queued on b")
    assert await read(b.node) == frame(*ps)
    assert await nothing_queued(b)


async def test_batch_read_returns_the_whole_packets_that_fit(kernel: Kernel, sockdir: Path) -> None:
    a, b = await batch_pair(kernel, sockdir)
    p1, p2, p3 = packets(a, b, 3)
    rx0 = await counter(b, "rx_bytes")
    await a.node.write(frame(p1, p2, p3))
    await wait_received(b, rx0, [p1, p2, p3], "three packets queued on b")
    assert await read(b.node, 2 * (len(p1) + 2) + len(p3)) == frame(p1, p2)  # p3's frame does not fit
    assert await read(b.node) == frame(p3)


async def test_batch_read_cuts_a_first_packet_that_does_not_fit(kernel: Kernel, sockdir: Path) -> None:
    a, b = await batch_pair(kernel, sockdir)
    p1, p2 = packets(a, b, 2)
    rx0 = await counter(b, "rx_bytes")
    await a.node.write(frame(p1, p2))
    await wait_received(b, rx0, [p1, p2], "two packets queued on b")
    assert await read(b.node, 12) == frame(p1[:10])  # as tun(4) cuts; the rest is dropped
    assert await read(b.node) == frame(p2)


async def test_batch_read_of_two_bytes_is_einval(kernel: Kernel, sockdir: Path) -> None:
    a, b = await batch_pair(kernel, sockdir)
    ps = packets(a, b, 1)
    rx0 = await counter(b, "rx_bytes")
    await a.node.write(frame(*ps))
    await wait_received(b, rx0, ps, "a packet queued on b")
    with pytest.raises(DeviceError) as ei:
        await b.node.read(2)
    assert errno_of(ei) == errno.EINVAL
    assert await read(b.node) == frame(*ps)  # nothing taken


@pytest.mark.parametrize(
    ("tail", "code"),
    [
        (b"\x00\x00", errno.EIO),  # a zero length
        (struct.pack("!H", MTU + 1) + bytes([0x45]) * (MTU + 1), errno.EIO),  # past the MTU
        (struct.pack("!H", 40) + bytes([0x45]) * 39, errno.EIO),  # runs past the end
        (b"\x00", errno.EIO),  # half a length
        (frame(bytes([0x20]) * 40), errno.EAFNOSUPPORT),  # neither IPv4 nor IPv6
    ],
    ids=["zero", "over-mtu", "past-end", "half-length", "not-ip"],
)
async def test_malformed_batch_write_sends_none_of_its_packets(
    kernel: Kernel, sockdir: Path, tail: bytes, code: int
) -> None:
    a, b = await batch_pair(kernel, sockdir)
    before = dict(await uapi_get(a.sock))["tx_bytes"]
    good = packets(a, b, 2)
    with pytest.raises(DeviceError) as ei:
        await a.node.write(frame(*good) + tail)
    assert errno_of(ei) == code
    assert dict(await uapi_get(a.sock))["tx_bytes"] == before  # all or nothing
    assert await nothing_queued(b)


async def test_empty_batch_write_is_eio(kernel: Kernel, sockdir: Path) -> None:
    a, _b = await batch_pair(kernel, sockdir)
    with pytest.raises(DeviceError) as ei:
        await a.node.write(b"")
    assert errno_of(ei) == errno.EIO


async def test_batch_node_and_plain_node_are_one_interface(kernel: Kernel, sockdir: Path) -> None:
    await load(kernel, sockdir)
    f = await kernel.open("tunwg", BATCH | 0)
    with pytest.raises(DeviceError) as ei:
        await kernel.open("tunwg", 0)
    assert errno_of(ei) == errno.EBUSY
    await f.close()
    await (await kernel.open("tunwg", 0)).close()


async def test_batch_node_queue_holds_more_than_256_packets(kernel: Kernel, sockdir: Path) -> None:
    a, b = await batch_pair(kernel, sockdir)
    total, chunk = QUEUE_MAX + 44, 25
    for start in range(0, total, chunk):
        ps = [ipv4(a.inner4, b.inner4, i) for i in range(start, start + chunk)]
        rx0 = await counter(b, "rx_bytes")
        await a.node.write(frame(*ps))
        await wait_received(b, rx0, ps, f"b to take {start + chunk} packets")
    got = b""
    while len(got) < total * (2 + 84):
        got += await read(b.node)
    idents = [struct.unpack_from("!H", got, i * 86 + 2 + 4)[0] for i in range(total)]
    assert idents == list(range(total))  # every one queued, none dropped
    assert await nothing_queued(b)


@pytest.mark.parametrize(
    ("family", "source"),
    [
        (socket.AF_INET6, "192.0.2.194"),
        (socket.AF_INET6, "2001:db8::194"),
        (socket.AF_INET6, "fe80::1%7"),
        (socket.AF_INET, "192.0.2.194"),
    ],
)
def test_sticky_source_packet_info_round_trip(family: int, source: str) -> None:
    """The control message tunwg sends from ``source`` with is the packet info a
    datagram to ``source`` comes with (the local-address field of it):
    ``in6_pktinfo`` on the dual-stack socket (IPv4 mapped), ``in_pktinfo``
    on an IPv4-only one, where the kernel fills the header's destination
    in ``ipi_addr``, which is what is read back."""
    ((level, kind, data),) = _pktinfo(family, source)
    if family == socket.AF_INET6:
        assert (level, kind, len(data)) == (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, 20)
        received = data
    else:
        assert (level, kind, len(data)) == (socket.IPPROTO_IP, 8, 12)
        received = data[:8] + data[4:8]  # spec_dst and addr alike on receive
    assert _local_address(received) == source
    assert _local_address(b"") == ""


def test_batch_bit_is_the_same_in_the_driver_and_the_bridge() -> None:
    # The driver imports the driver API only, so the bridge (and the bench
    # and test helpers, which import the bridge's) keeps its own copy.
    from devfsd.tools.tunwg_bridge import BATCH as BRIDGE_BATCH
    from modules.tunwg.tun import BATCH as DRIVER_BATCH

    assert BATCH == DRIVER_BATCH == BRIDGE_BATCH


# -- UAPI on the socket -----------------------------------------------------------------


async def test_uapi_get_after_traffic_has_counters_and_latest_handshake(
    kernel: Kernel, sockdir: Path
) -> None:
    t0 = time.time()
    a, b = await open_pair(kernel, sockdir)
    p = ipv4(a.inner4, b.inner4)  # 84 bytes, padded to 96, 128 on the wire
    await a.node.write(p)
    assert await read(b.node) == p
    t1 = time.time()
    got_a, got_b = dict(await uapi_get(a.sock)), dict(await uapi_get(b.sock))
    # a sent the initiation and the packet; b the response: each side's rx
    # is the other's tx, exactly as wireguard-go counts.
    assert (int(got_a["tx_bytes"]), int(got_a["rx_bytes"])) == (INITIATION + 128, RESPONSE)
    assert (int(got_b["tx_bytes"]), int(got_b["rx_bytes"])) == (RESPONSE, INITIATION + 128)
    for got in (got_a, got_b):
        hs = int(got["last_handshake_time_sec"]) + int(got["last_handshake_time_nsec"]) / 1e9
        assert t0 <= hs <= t1


async def test_uapi_get_reply_in_wireguard_go_order(kernel: Kernel, sockdir: Path) -> None:
    prefix = await load(kernel, sockdir, count=2)
    a, b = side(kernel, sockdir, prefix, 0), side(kernel, sockdir, prefix, 1)
    psk = os.urandom(32)
    await uapi_set(
        a.sock,
        f"private_key={a.private.hex()}\nlisten_port=0\nfwmark=7\nreplace_peers=true\n"
        f"public_key={b.public.hex()}\npreshared_key={psk.hex()}\nendpoint=[2001:db8::9]:51820\n"
        f"persistent_keepalive_interval=25\nreplace_allowed_ips=true\n"
        f"allowed_ip=198.51.100.0/25\nallowed_ip=2001:db8:1::/48\n",
    )
    got = await uapi_get(a.sock)
    port = dict(got)["listen_port"]
    assert got == [
        ("private_key", a.private.hex()),
        ("listen_port", port),
        ("fwmark", "7"),
        ("public_key", b.public.hex()),
        ("preshared_key", psk.hex()),
        ("protocol_version", "1"),
        ("endpoint", "[2001:db8::9]:51820"),
        ("last_handshake_time_sec", "0"),
        ("last_handshake_time_nsec", "0"),
        ("tx_bytes", "0"),
        ("rx_bytes", "0"),
        ("persistent_keepalive_interval", "25"),
        ("allowed_ip", "198.51.100.0/25"),
        ("allowed_ip", "2001:db8:1::/48"),
    ]


BAD_KEY: Final = "zz" * 32


@pytest.mark.parametrize(
    ("body", "reply"),
    [
        (f"private_key={BAD_KEY}\n", EINVAL_REPLY),
        ("listen_port=seven\n", EINVAL_REPLY),
        ("listen_port=65536\n", EINVAL_REPLY),
        ("no_such_key=1\n", EINVAL_REPLY),
        ("replace_peers=yes\n", EINVAL_REPLY),
        (f"public_key={'11' * 32}\nprotocol_version=2\n", EINVAL_REPLY),
        (f"public_key={'11' * 32}\nendpoint=example.net:51820\n", EINVAL_REPLY),
        (f"public_key={'11' * 32}\nallowed_ip=198.51.100.1/33\n", EINVAL_REPLY),
        ("private_key\n", b"errno=-71\n\n"),  # EPROTO: a line without '='
    ],
)
async def test_uapi_set_errors_use_wireguard_go_errno_values(
    kernel: Kernel, sockdir: Path, body: str, reply: bytes
) -> None:
    prefix = await load(kernel, sockdir)
    assert await uapi(sockdir / f"{prefix}0.sock", b"set=1\n" + body.encode() + b"\n") == reply


async def test_uapi_listen_port_in_use_is_eaddrinuse(kernel: Kernel, sockdir: Path) -> None:
    a, b = await configure_pair(kernel, sockdir, await load(kernel, sockdir, count=2))
    reply = await uapi(b.sock, f"set=1\nlisten_port={a.port}\n\n".encode())
    assert reply == b"errno=-98\n\n"


async def test_uapi_listen_port_set_again_to_its_own_port(kernel: Kernel, sockdir: Path) -> None:
    # wg setconf always sends listen_port, usually the port already bound.
    a, b = await configure_pair(kernel, sockdir, await load(kernel, sockdir, count=2))
    await uapi_set(a.sock, f"listen_port={a.port}\n")
    assert dict(await uapi_get(a.sock))["listen_port"] == str(a.port)
    a.f = await kernel.open("tunwg", a.unit)
    b.f = await kernel.open("tunwg", b.unit)
    p = ipv4(b.inner4, a.inner4)
    await b.node.write(p)
    assert await read(a.node) == p  # still listening there


async def test_uapi_get_with_a_trailing_byte_is_einval(kernel: Kernel, sockdir: Path) -> None:
    prefix = await load(kernel, sockdir)
    assert await uapi(sockdir / f"{prefix}0.sock", b"get=1\nx") == EINVAL_REPLY


async def test_uapi_serves_several_requests_on_one_connection(kernel: Kernel, sockdir: Path) -> None:
    prefix = await load(kernel, sockdir)
    sock = sockdir / f"{prefix}0.sock"
    key = generate_private_key(os.urandom)
    reply = await uapi(sock, f"set=1\nprivate_key={key.hex()}\n\nget=1\n\n".encode(), replies=2)
    assert reply == f"errno=0\n\nprivate_key={key.hex()}\nerrno=0\n\n".encode()


async def test_uapi_unknown_request_closes_without_a_reply(kernel: Kernel, sockdir: Path) -> None:
    prefix = await load(kernel, sockdir)
    assert await uapi(sockdir / f"{prefix}0.sock", b"hello=1\n\n") == b""


# -- key log ------------------------------------------------------------------------------


KEYLOG_NAMES: Final = (
    "LOCAL_STATIC_PRIVATE_KEY",
    "REMOTE_STATIC_PUBLIC_KEY",
    "LOCAL_EPHEMERAL_PRIVATE_KEY",
    "PRESHARED_KEY",
)


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


async def test_keylog_gets_four_lines_per_handshake_message(
    kernel: Kernel, sockdir: Path, tmp_path: Path
) -> None:
    keylog = tmp_path / "keys"
    a, b = await established(kernel, sockdir, keylog=str(keylog))
    lines = keylog.read_text().splitlines()
    # One handshake: a logs its initiation, b its response, 4 lines each.
    assert len(lines) == 8
    blocks = [dict(ln.split(" = ") for ln in lines[i : i + 4]) for i in (0, 4)]
    for block, (me, other) in zip(blocks, ((a, b), (b, a)), strict=True):
        assert tuple(block) == KEYLOG_NAMES
        assert block["LOCAL_STATIC_PRIVATE_KEY"] == b64(me.private)
        assert block["REMOTE_STATIC_PUBLIC_KEY"] == b64(other.public)
        assert block["PRESHARED_KEY"] == b64(bytes(32))
        ephemeral = base64.b64decode(block["LOCAL_EPHEMERAL_PRIVATE_KEY"], validate=True)
        assert len(ephemeral) == 32 and ephemeral not in (me.private, other.private)
    assert blocks[0]["LOCAL_EPHEMERAL_PRIVATE_KEY"] != blocks[1]["LOCAL_EPHEMERAL_PRIVATE_KEY"]


async def test_keylog_ephemeral_keys_are_the_ones_on_the_wire(
    kernel: Kernel, sockdir: Path, tmp_path: Path
) -> None:
    """What a dissector needs: each logged ephemeral private key is the one whose
    public half went out in the initiation (bytes 8..40) or response (12..44).
    a's datagrams pass through a tap, a UDP relay that keeps a copy."""
    keylog = tmp_path / "keys"
    a, b = await configure_pair(kernel, sockdir, await load(kernel, sockdir, count=2, keylog=str(keylog)))
    wire: list[bytes] = []
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tap:
        await tap.bind(("127.0.0.1", 0))
        await uapi_set(a.sock, f"public_key={b.public.hex()}\nendpoint=127.0.0.1:{tap.getsockname()[1]}\n")

        async def relay() -> None:
            while True:
                data, (_, port) = await tap.recvfrom(65536)
                wire.append(data)
                await tap.sendto(data, ("127.0.0.1", b.port if port == a.port else a.port))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay)
            a.f = await kernel.open("tunwg", a.unit)
            b.f = await kernel.open("tunwg", b.unit)
            p = ipv4(a.inner4, b.inner4)
            await a.node.write(p)
            assert await read(b.node) == p
            nursery.cancel_scope.cancel()
    initiation, response = (d for d in wire if d[0] in (1, 2))
    assert (len(initiation), len(response)) == (INITIATION, RESPONSE)
    lines = dict(enumerate(keylog.read_text().splitlines()))
    eph_a = base64.b64decode(lines[2].removeprefix("LOCAL_EPHEMERAL_PRIVATE_KEY = "))
    eph_b = base64.b64decode(lines[6].removeprefix("LOCAL_EPHEMERAL_PRIVATE_KEY = "))
    assert public_key(eph_a) == initiation[8:40]
    assert public_key(eph_b) == response[12:44]


async def test_no_keylog_property_no_file(kernel: Kernel, sockdir: Path, tmp_path: Path) -> None:
    await established(kernel, sockdir)
    assert names(tmp_path) == []


async def test_a_datagram_the_socket_refuses_is_not_counted_as_sent(
    kernel: Kernel, sockdir: Path, tmp_path: Path
) -> None:
    """wireguard-go adds to tx_bytes only what its bind accepted."""
    keylog = tmp_path / "keys"
    prefix = await load(kernel, sockdir, keylog=str(keylog))
    a = side(kernel, sockdir, prefix, 0)
    other = generate_private_key(os.urandom)
    await uapi_set(
        a.sock,
        f"private_key={a.private.hex()}\nlisten_port=0\npublic_key={public_key(other).hex()}\n"
        "endpoint=255.255.255.255:9\nallowed_ip=198.51.100.2/32\n",  # broadcast: sendto fails EACCES
    )
    a.f = await kernel.open("tunwg", 0)
    await a.node.write(ipv4(a.inner4, "198.51.100.2"))  # staged; the handshake initiation is sent
    # The initiation's keys are logged in the step that sends it: once they
    # are in the key log, its sendto has failed.
    await wait_for(lambda: keylog.exists() and len(keylog.read_text().splitlines()) >= 4, "the initiation")
    got = dict(await uapi_get(a.sock))
    assert (got["tx_bytes"], got["last_handshake_time_sec"]) == ("0", "0")
