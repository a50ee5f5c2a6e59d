"""One tunwg interface: a WireGuard ``Device`` and the I/O around it.

The trio edge around the sans-I/O core (``wg.Device``): the UDP socket, the
timer task, the UAPI socket ``wg`` talks to, and the receive queue the
node's readers take packets from. Imports trio and sockets; the protocol is
all in ``wg/``.

Each interface runs one supervisor task (a module thread) holding three
tasks: the UDP receive loop, the timer loop and the UAPI server. While a
reader of the node sleeps, it receives from the UDP socket itself and the
receive loop stands aside (``Interface.wait_packet``). Effects the
device returns are carried out at once: ``SendDatagram`` is a non-blocking
``sendto`` (a full socket buffer drops the datagram, as a congested link
would), ``DeliverPacket`` queues the packet for readers (at most
``QUEUE_MAX``, tun(4)'s 256, or ``QUEUE_MAX_BATCH`` while a batch-framed
node has it open; beyond, dropped and counted), ``KeyLog`` appends to the
key log file.

The UDP socket is one dual-stack IPv6 socket (IPv4 peers appear as
``::ffff:a.b.c.d``), or IPv4 only where IPv6 is off. It is bound when the
UAPI sets ``listen_port`` (the device calls ``bind``), so ``wg set`` can
configure the interface before its node is opened. Its datagrams are never
fragmented (``_dont_fragment``). Each datagram is received with the local
address it arrived on (``IPV6_RECVPKTINFO``, or ``IP_PKTINFO``), which the
``Endpoint`` handed to the device carries as ``source``; a datagram to an
endpoint with a source is sent from it (``sendmsg`` with a packet-info
control message), and if the host no longer has that address
(``_SOURCE_GONE``) the peer forgets it and the datagram goes
again from the address the host chooses.

Batches, both ways (issue 17, point 4). ``write_packets`` hands a batch of
packets (a TUN's or a batch node's) to the device in one call
(``Device.packets_from_tun``) and sends the datagrams it makes for one
endpoint, all of one size but the last, in one ``sendmsg`` with
``UDP_SEGMENT`` (UDP GSO: the kernel cuts them apart; one by one again on
any error, and for good after ``GSO_TRIES`` failures in a row, as on a
kernel without it). The socket has ``UDP_GRO`` on: the kernel may hand
one ``recvmsg`` several datagrams of one sender, one size but the last,
coalesced, with a ``UDP_GRO`` control message giving that size; they are
cut apart and go to the device in one call (``Device.datagrams_received``),
each decrypted, checked and counted as if it had come alone, with the
packet info of the coalesced whole (the same destination address). So do
the datagrams of consecutive receives of one wake-up from one source
(address and packet info), coalesced or not: a sender without GSO still
gets its datagrams to the device in batches.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import socket
import struct
import sys
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final, TextIO, final

import trio

from devfsd.cdevsw import WaitChannel
from devfsd.kern import bind_unix_listener, kthread_create

from .wg.constants import REKEY_AFTER_TIME
from .wg.device import DeliverPacket, Device, DeviceStats, SendDatagram
from .wg.uapi import CLOSED, NEED_DATA, Endpoint, GetRequest, UapiError, UapiReader, format_errno

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from devfsd.cdevsw import Lwp
    from devfsd.kern.loader import LoadedModule

    from .carrier import Carrier
    from .wg.device import Effect

__all__ = ["MTU_MAX", "MTU_MIN", "QUEUE_MAX", "QUEUE_MAX_BATCH", "Interface", "InterfaceStats"]

log = logging.getLogger(__name__)

#: Packets waiting for readers, at most (tun(4)'s IFQ_MAXLEN).
QUEUE_MAX: Final = 256
#: The receive queue behind a batch-framed node: a reader empties it tens of
#: packets at a time, and a TCP window's worth arriving between two reads
#: must not overflow it (measured: 256 dropped packets of a stream).
QUEUE_MAX_BATCH: Final = 2048
#: ``_timer_scope`` while the timer task is between two sleeps: a deadline
#: of -inf, which ``_poke`` never moves (the task reads the device's next
#: deadline itself before it sleeps again).
_BETWEEN_SLEEPS: Final = trio.CancelScope(deadline=-math.inf)
#: While readers take turns receiving (``Interface.wait_packet``), the
#: receive loop looks this often (seconds) whether one still waits.
STAND_ASIDE: Final = 0.1
#: Datagrams drained per wake-up of the receive loop before yielding.
RECV_BATCH: Final = 64
#: <linux/in.h> and <linux/in6.h> values the socket module lacks.
IP_MTU_DISCOVER: Final = 10
IP_PMTUDISC_DO: Final = 2
IPV6_MTU_DISCOVER: Final = 23
IPV6_PMTUDISC_DO: Final = 2
IP_PKTINFO: Final = 8
#: <linux/udp.h>: send one buffer as datagrams of a given size (UDP GSO),
#: and receive several datagrams in one buffer (UDP GRO).
SOL_UDP: Final = 17
UDP_SEGMENT: Final = 103
UDP_GRO: Final = 104
#: Datagrams per GSO send, at most (the kernel's UDP_MAX_SEGMENTS is 64,
#: and the whole must stay under 64 KiB: 44 full datagrams at MTU 1420).
GSO_MAX: Final = 40
GSO_BYTES: Final = 65000
#: GSO sends failing in a row before the interface sends one datagram per call.
GSO_TRIES: Final = 8
#: Room for the control messages a datagram comes with: the packet info,
#: and the segment size of coalesced datagrams (an ``int``).
CMSG_ROOM: Final = socket.CMSG_SPACE(20) + socket.CMSG_SPACE(4)
_V4_MAPPED: Final = bytes(10) + b"\xff\xff"
#: ``sendmsg`` from a source address the host no longer has: IPv4 fails
#: ``ENETUNREACH`` (no route from it), IPv6 ``EINVAL``. A real want of a
#: route fails again without the source, and counts as a send error.
_SOURCE_GONE: Final = frozenset({errno.EINVAL, errno.EADDRNOTAVAIL, errno.ENETUNREACH})
IFNAMSIZ: Final = 16
#: An interface's MTU bounds (the ``mtu`` load property, ``SIOCSIFMTU``).
MTU_MIN: Final = 576
MTU_MAX: Final = 65535


@dataclass(frozen=True, slots=True, kw_only=True)
class InterfaceStats:
    """One interface's counters at one moment (``Interface.statistics()``).

    Attributes:
        is_open: the node is open (the interface is up).
        queued: packets waiting for readers.
        dropped_queue_full: packets for readers dropped because ``QUEUE_MAX`` waited.
        send_errors: datagrams ``sendto`` refused (full buffer, unreachable,
            too big for the path since they are never fragmented, no socket).
        device: a copy of the ``wg.Device``'s drop and event counters.
        received_coalesced: datagrams that arrived coalesced with others in
            one receive (UDP GRO).
        sent_segmented: datagrams sent several to one ``sendmsg`` (UDP GSO).
    """

    is_open: bool
    queued: int
    dropped_queue_full: int
    send_errors: int
    device: DeviceStats
    received_coalesced: int = 0
    sent_segmented: int = 0


@final
class Interface:
    """tunwg unit ``unit``: interface ``name`` with its UAPI socket in ``sockdir``."""

    def __init__(
        self,
        unit: int,
        name: str,
        sockdir: str,
        *,
        mtu: int,
        keylog: TextIO | None = None,
        rekey_after_time: float = REKEY_AFTER_TIME,
    ) -> None:
        if not name or len(name) >= IFNAMSIZ or "/" in name:
            raise ValueError(f"bad interface name {name!r}")
        self.unit = unit
        self.name = name
        self.sockdir = sockdir
        self.mtu = mtu
        self.keylog = keylog
        self.device = Device(
            rng=os.urandom,
            bind=self._bind,
            mtu=mtu,
            keylog=keylog is not None,
            log=self._debug,
            rekey_after_time=rekey_after_time,
        )
        self.queue: deque[bytes] = deque()
        self.rchan = WaitChannel(f"{name}.read")
        self.is_open = False
        self.queue_max = QUEUE_MAX
        self.dropped_queue_full = 0
        self.send_errors = 0
        self.received_coalesced = 0
        self.sent_segmented = 0
        #: Datagrams of one batch to one endpoint go out as one ``sendmsg``.
        self.gso = True
        self._gso_failures = 0
        self._sock: socket.socket | None = None
        self._sock_changed = trio.Event()
        #: A reader is asleep in ``wait_packet``, receiving from the socket.
        self._reader_waiting = False
        #: Readers take turns on the socket: the receive loop stands aside.
        self._readers_receive = False
        #: The receive loop waits for the socket to be readable.
        self._recv_waiting = False
        #: The timer task's sleep; ``_poke`` moves its deadline.
        self._timer_scope = _BETWEEN_SLEEPS
        self._uapi: trio.socket.SocketType | None = None
        self._scope: trio.CancelScope | None = None
        self._addr_cache: dict[object, Endpoint] = {}
        self._dst_cache: dict[tuple[str, int], tuple[str, int]] = {}
        self._src_cmsg: dict[str, list[tuple[int, int, bytes]]] = {}
        #: The module whose threads this interface's tasks are (``start``).
        self.module: LoadedModule | None = None
        #: The in-daemon carrying on a Linux TUN, if any (carrier.py).
        self.carrier: Carrier | None = None
        #: A carrying asks its TUN for offloads (the ``offload`` load property).
        self.offload = True

    def _debug(self, text: str) -> None:
        log.debug("%s: %s", self.name, text)

    @property
    def uapi_path(self) -> str:
        return os.path.join(self.sockdir, f"{self.name}.sock")

    def statistics(self) -> InterfaceStats:
        return InterfaceStats(
            is_open=self.is_open,
            queued=len(self.queue),
            dropped_queue_full=self.dropped_queue_full,
            send_errors=self.send_errors,
            device=replace(self.device.stats),
            received_coalesced=self.received_coalesced,
            sent_segmented=self.sent_segmented,
        )

    # -- life ---------------------------------------------------------------

    def start(self, module: LoadedModule) -> None:
        """Make the UAPI socket and start the tasks (as ``module``'s threads).

        Raises:
            OSError: ``EADDRINUSE`` if a live process serves the socket path.
        """
        self.module = module
        self._uapi = trio.socket.from_stdlib_socket(bind_unix_listener(self.uapi_path, 0o700, backlog=16))
        self._scope = kthread_create(self._run, name=self.name, module=module)

    def stop(self) -> None:
        """Stop the tasks, close the sockets, remove the UAPI socket."""
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None
        if self._uapi is not None:
            self._uapi.close()
            self._uapi = None
            with contextlib.suppress(OSError):
                os.unlink(self.uapi_path)
        self._close_udp()
        self.device.down()

    async def _run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._uapi_loop, nursery)
            nursery.start_soon(self._recv_loop)
            nursery.start_soon(self._timer_loop)

    # -- the node -------------------------------------------------------------

    def up(self, *, batch: bool = False) -> None:
        self.is_open = True
        self.queue_max = QUEUE_MAX_BATCH if batch else QUEUE_MAX
        self._apply(self.device.up(now=trio.current_time()))
        self._poke()

    def down(self) -> None:
        if self.carrier is not None:
            self.carrier.stop()
        self.is_open = False
        self.device.down()
        self.queue.clear()
        self.rchan.wakeup()
        self._readers_receive = False  # the receive loop drains (and drops) again
        self._sock_changed.set()

    def set_mtu(self, mtu: int) -> None:
        """The live interface's MTU is now ``mtu``: bigger writes fail ``EIO``
        (the node checks ``mtu``), and padding stops at it."""
        self.mtu = mtu
        self.device.set_mtu(mtu)

    def write_packet(self, packet: bytes) -> None:
        self._apply(self.device.packet_from_tun(packet, now=trio.current_time(), wall_ns=time.time_ns()))
        self._poke()

    def write_packets(self, packets: Sequence[bytes]) -> None:
        """``write_packet`` for each of ``packets``, in order, as one batch: the
        datagrams for one endpoint leave in GSO groups (module docstring)."""
        effects = self.device.packets_from_tun(packets, now=trio.current_time(), wall_ns=time.time_ns())
        held: list[SendDatagram] = []
        for e in effects:
            if type(e) is SendDatagram:
                held.append(e)
            else:
                self._apply((e,))
        if len(held) == 1 or not self.gso:
            self._apply(held)
        else:
            self._send_held(held)
        self._poke()

    # -- effects ----------------------------------------------------------------

    def _send_held(self, held: list[SendDatagram]) -> None:
        """``held`` datagrams, in order: each run for one endpoint, all of one
        size but the last, as one ``sendmsg`` with ``UDP_SEGMENT``."""
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
                    self._send(e)
            i = j

    def _send_gso(self, group: list[SendDatagram], size: int) -> bool:
        """``group`` as one ``sendmsg`` with ``UDP_SEGMENT``; False to send them one by one."""
        ep = group[0].endpoint
        sock = self._sock
        if sock is None:
            return False
        dst = self._destination(sock, ep)
        cmsg = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]
        if ep.source:
            cmsg += self._source_cmsg(sock, ep.source)
        try:
            sock.sendmsg([e.data for e in group], cmsg, 0, dst)
        except BlockingIOError:  # a full buffer: all lost, as one by one
            self.send_errors += len(group)
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
            log.debug("%s: UDP_SEGMENT: %s; one datagram per call", self.name, exc)
            return False
        else:
            self.sent_segmented += len(group)
        self._gso_failures = 0
        return True

    def _apply(self, effects: Iterable[Effect]) -> None:
        for e in effects:
            if type(e) is SendDatagram:
                self._send(e)
            elif type(e) is DeliverPacket:
                self._deliver(e.packet)
            else:
                self._log_key(e.line)

    def _send(self, e: SendDatagram) -> None:
        data, ep = e.data, e.endpoint
        sock = self._sock
        if sock is None:
            self.send_errors += 1
            if e.peer is not None:
                e.peer.unsent(data)
            return
        dst = self._destination(sock, ep)
        try:
            if ep.source:
                self._send_from(sock, data, dst, e)
            else:
                sock.sendto(data, dst)
        except OSError as exc:  # full buffer, unreachable, too big: a lost datagram
            self.send_errors += 1
            if e.peer is not None:
                e.peer.unsent(data)  # wireguard-go counts only what its bind took
            log.debug("%s: sendto %s: %s", self.name, ep, exc)

    def _destination(self, sock: socket.socket, ep: Endpoint) -> tuple[str, int]:
        """``ep``'s address as ``sock`` takes it (IPv4 mapped on a dual-stack socket)."""
        # Keyed by (host, port), whose hash and == are C's, not by the
        # Endpoint, whose are generated Python (two more functions per packet).
        key = (ep.host, ep.port)
        dst = self._dst_cache.get(key)
        if dst is None:
            host = ep.host
            if sock.family == socket.AF_INET6 and ":" not in host:
                host = "::ffff:" + host
            dst = (host, ep.port)
            if len(self._dst_cache) > 1024:
                self._dst_cache.clear()
            self._dst_cache[key] = dst
        return dst

    def _source_cmsg(self, sock: socket.socket, source: str) -> list[tuple[int, int, bytes]]:
        """The packet-info control message that sends from ``source``."""
        cmsg = self._src_cmsg.get(source)
        if cmsg is None:
            cmsg = _pktinfo(sock.family, source)
            if len(self._src_cmsg) > 64:
                self._src_cmsg.clear()
            self._src_cmsg[source] = cmsg
        return cmsg

    def _send_from(self, sock: socket.socket, data: bytes, dst: tuple[str, int], e: SendDatagram) -> None:
        """Send ``data`` to ``dst`` from ``e.endpoint.source``; from any address if that is gone."""
        source = e.endpoint.source
        try:
            sock.sendmsg((data,), self._source_cmsg(sock, source), 0, dst)
        except OSError as exc:
            if exc.errno not in _SOURCE_GONE:
                raise
            log.debug("%s: %s no longer a local address: %s", self.name, source, exc)
            if e.peer is not None:
                e.peer.forget_source(e.endpoint)
            sock.sendto(data, dst)

    def _deliver(self, packet: bytes) -> None:
        if self.carrier is not None:
            self.carrier.deliver(packet)
            return
        if not self.is_open:
            return
        if len(self.queue) >= self.queue_max:
            self.dropped_queue_full += 1
            return
        self.queue.append(packet)
        self.rchan.wakeup()

    def _log_key(self, line: str) -> None:
        if self.keylog is not None:
            self.keylog.write(line if line.endswith("\n") else line + "\n")
            self.keylog.flush()

    # -- UDP ------------------------------------------------------------------------

    def _bind(self, port: int) -> int:
        """The device's ``bind``: (re)bind the UDP socket; returns the port.

        The old socket is closed first, as wireguard-go's ``BindUpdate``
        does: ``wg setconf`` sends the port the interface already has, and
        binding a second socket to it would fail ``EADDRINUSE``. So a
        failed bind leaves the interface with no socket (the device then
        counts as unbound), as in wireguard-go.

        Raises:
            UapiError: ``EADDRINUSE`` when the port is taken.
        """
        self._close_udp()
        try:
            new = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            new.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            addr: tuple[str, int] = ("::", port)
        except OSError:
            new = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            addr = ("0.0.0.0", port)
        try:
            new.bind(addr)
        except OSError as exc:
            new.close()
            raise UapiError(exc.errno or errno.EADDRINUSE) from None
        new.setblocking(False)
        for opt, size in ((socket.SO_RCVBUF, 4 << 20), (socket.SO_SNDBUF, 4 << 20)):
            with contextlib.suppress(OSError):
                new.setsockopt(socket.SOL_SOCKET, opt, size)
        _dont_fragment(new)
        with contextlib.suppress(OSError):  # a kernel without UDP GRO: one datagram per receive
            new.setsockopt(SOL_UDP, UDP_GRO, 1)
        if new.family == socket.AF_INET6:
            new.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        else:
            new.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        self._sock = new
        self._sock_changed.set()
        return int(new.getsockname()[1])

    def _close_udp(self) -> None:
        old, self._sock = self._sock, None
        if old is not None:
            trio.lowlevel.notify_closing(old)
            old.close()

    def _endpoint(self, addr: tuple[str, int] | tuple[str, int, int, int], info: bytes) -> Endpoint:
        """The ``Endpoint`` of a datagram from ``addr`` whose packet info is ``info``."""
        key = (addr, info)
        ep = self._addr_cache.get(key)
        if ep is None:
            host = addr[0]
            if host.startswith("::ffff:") and "." in host:
                host = host[7:]
            ep = Endpoint(host=host, port=addr[1], source=_local_address(info))
            if len(self._addr_cache) > 1024:
                self._addr_cache.clear()
            self._addr_cache[key] = ep
        return ep

    def _drain(self, sock: socket.socket) -> None:
        """Take what ``sock`` has (up to ``RECV_BATCH`` receives) to the device:
        the datagrams of consecutive receives from one source, coalesced or
        not, in one call (``Device.datagrams_received``)."""
        run: list[bytes] = []
        run_source: Endpoint | None = None
        for _ in range(RECV_BATCH):
            try:
                data, anc, _, addr = sock.recvmsg(65536, CMSG_ROOM)
            except BlockingIOError:
                break
            except OSError as exc:  # e.g. ICMP port unreachable reported here
                log.debug("%s: recvmsg: %s", self.name, exc)
                break
            info = b""
            segment = 0
            for level, kind, value in anc:
                if level == SOL_UDP:
                    if kind == UDP_GRO and len(value) >= 4:
                        segment = int.from_bytes(value[:4], sys.byteorder)
                else:
                    info = value
            source = self._endpoint(addr, info)
            if source is not run_source:
                if run_source is not None:
                    self._received(run, run_source)
                run, run_source = [], source
            if 0 < segment < len(data):
                datagrams = [data[i : i + segment] for i in range(0, len(data), segment)]
                self.received_coalesced += len(datagrams)
                run += datagrams
            else:
                run.append(data)
        if run_source is not None:
            self._received(run, run_source)
        self._poke()

    def _received(self, datagrams: list[bytes], source: Endpoint) -> None:
        now, wall_ns = trio.current_time(), time.time_ns()
        self._apply(self.device.datagrams_received(datagrams, source, now=now, wall_ns=wall_ns))

    async def _recv_loop(self) -> None:
        while True:
            sock = self._sock
            if sock is None:
                self._sock_changed = trio.Event()
                await self._sock_changed.wait()
                continue
            if self._readers_receive:
                # Readers take turns on the socket (wait_packet): stand
                # aside, and look now and then whether one still waits (a
                # program may read once and then only write).
                with trio.move_on_after(STAND_ASIDE):
                    self._sock_changed = trio.Event()
                    await self._sock_changed.wait()
                self._readers_receive = self._reader_waiting
                continue
            self._recv_waiting = True
            try:
                await trio.lowlevel.wait_readable(sock)
            except (trio.ClosedResourceError, OSError):
                continue  # rebound, or a reader took the socket: look again
            finally:
                self._recv_waiting = False
            self._drain(sock)  # wait_readable, next, yields: no checkpoint needed

    async def wait_packet(self, lwp: Lwp) -> None:
        """Sleep until packets are queued or ``rchan`` is woken; the caller re-checks.

        A node's reader finding the queue empty calls this. While it sleeps,
        its own task receives from the UDP socket in place of the receive
        loop (``WaitChannel.sleep(fd=...)``): the datagram carrying the
        packet is read, decrypted and handed to the reader in the step that
        answers its read(2), rather than waking the receive loop, which
        would wake the reader in a second pass of trio's loop. That is on
        the path of every packet a waiting reader gets, such as a ping's
        reply (``bench/bench_oneway.py``: 0.88x the trip). The receive loop
        stands aside while readers keep coming back (``STAND_ASIDE``), so
        a reader's turn does not wake it either.
        """
        sock = self._sock
        if sock is None or self._reader_waiting:
            await self.rchan.sleep(lwp)
            return
        self._readers_receive = self._reader_waiting = True
        if self._recv_waiting:
            trio.lowlevel.notify_closing(sock)  # out of the receive loop's wait
        try:
            while await self.rchan.sleep(lwp, fd=sock) and self._sock is sock:
                self._drain(sock)
                if self.queue:
                    return
        finally:
            self._reader_waiting = False

    def receive_now(self) -> None:
        """Take in what waits on the socket, for a reader that will not sleep on it.

        A poll, or a non-blocking read, finding the queue empty calls this.
        While readers take turns on the socket (``wait_packet``) the receive
        loop stands aside, and between two turns nobody receives: a
        datagram that has arrived would be a packet neither readable nor
        polled readable until the loop looks again (``STAND_ASIDE``, 0.1 s).
        So, when no reader has the socket, this drains it into the queue
        now and sends the receive loop back to it, so that the next
        datagram wakes a waiting poll at once. A reader that sleeps on the
        socket (the fast path) takes its turn again as before.
        """
        sock = self._sock
        if sock is None or not self._readers_receive or self._reader_waiting:
            return  # the receive loop or a reader is on the socket
        self._drain(sock)
        self._readers_receive = False
        self._sock_changed.set()  # out of its stand-aside wait, onto the socket

    # -- timers -------------------------------------------------------------------------

    def _poke(self) -> None:
        """Effects applied: the packets a carrier holds go to its TUN (coalesced,
        carrier.py), and the timer task's wake-up is brought forward if the
        device's next deadline moved earlier.

        Moves the sleeping timer task's cancel-scope deadline rather than
        waking it: a packet arms a timer (new handshake, keepalive) nearly
        every time, and a woken task per packet could run before the reader
        the packet is for (measured: RTT 2-5 % lower without).
        """
        carrier = self.carrier
        if carrier is not None and carrier.pending:
            carrier.flush()
        d = self.device.next_deadline()
        cs = self._timer_scope
        if d is not None and d < cs.deadline:
            cs.deadline = d

    async def _timer_loop(self) -> None:
        while True:
            d = self.device.next_deadline()
            with trio.CancelScope(deadline=d if d is not None else math.inf) as cs:
                self._timer_scope = cs
                await trio.sleep_forever()
            self._timer_scope = _BETWEEN_SLEEPS
            now = trio.current_time()
            if now >= cs.deadline:
                self._apply(self.device.tick(now=now, wall_ns=time.time_ns()))
                carrier = self.carrier
                if carrier is not None and carrier.pending:
                    carrier.flush()

    # -- UAPI --------------------------------------------------------------------------

    async def _uapi_loop(self, nursery: trio.Nursery) -> None:
        assert self._uapi is not None
        while True:
            conn, _ = await self._uapi.accept()
            nursery.start_soon(self._uapi_conn, conn)

    async def _uapi_conn(self, conn: trio.socket.SocketType) -> None:
        reader = UapiReader()
        with conn:
            try:
                while True:
                    try:
                        req = reader.next_request()
                    except UapiError as exc:
                        await _sendall(conn, format_errno(exc.errno))
                        continue
                    if req is NEED_DATA:
                        with trio.move_on_after(30):
                            reader.receive_data(await conn.recv(65536))
                            continue
                        return  # idle client
                    if req is CLOSED:
                        return
                    if isinstance(req, GetRequest):
                        await _sendall(conn, self.device.uapi_get())
                        continue
                    try:
                        effects = self.device.uapi_set(req, now=trio.current_time(), wall_ns=time.time_ns())
                    except UapiError as exc:
                        await _sendall(conn, format_errno(exc.errno))
                    else:
                        self._apply(effects)
                        self._poke()
                        await _sendall(conn, format_errno(0))
            except OSError as exc:
                log.debug("%s: uapi connection: %s", self.name, exc)


def _local_address(info: bytes) -> str:
    """The local address in an ``in6_pktinfo`` (20 bytes) or ``in_pktinfo`` (12
    bytes), as ``Endpoint`` writes addresses, a link-local one with its
    interface index (``fe80::1%2``); empty for anything else."""
    if len(info) == 20:
        addr = info[:16]
        if addr.startswith(_V4_MAPPED):
            return socket.inet_ntop(socket.AF_INET, addr[12:])
        if addr.startswith(b"\xfe\x80"):
            return f"{socket.inet_ntop(socket.AF_INET6, addr)}%{int.from_bytes(info[16:], sys.byteorder)}"
        return socket.inet_ntop(socket.AF_INET6, addr)
    if len(info) == 12:
        return socket.inet_ntop(socket.AF_INET, info[8:])
    return ""


def _pktinfo(family: int, source: str) -> list[tuple[int, int, bytes]]:
    """The control message that sends a datagram from ``source`` on a socket of
    ``family``: the address only (interface 0, the route chosen as usual, as
    the kernel does), but for a link-local address, its interface."""
    if family == socket.AF_INET6:
        if ":" in source:
            text, _, index = source.partition("%")
            addr = socket.inet_pton(socket.AF_INET6, text)
            ifindex = int(index or 0).to_bytes(4, sys.byteorder)
        else:
            addr, ifindex = _V4_MAPPED + socket.inet_pton(socket.AF_INET, source), bytes(4)
        return [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, addr + ifindex)]
    return [(socket.IPPROTO_IP, IP_PKTINFO, bytes(4) + socket.inet_pton(socket.AF_INET, source) + bytes(4))]


def _dont_fragment(sock: socket.socket) -> None:
    """Never fragment ``sock``'s datagrams: one too big for the path fails ``EMSGSIZE``.

    So a peer endpoint routed back through the tunnel itself cannot loop:
    each round wraps the packet in 32 more bytes until the kernel refuses
    it (counted in ``send_errors``), where fragments would each go round
    again and multiply (issue 17 saw 176 MB in 2 s). The IPv4 option also
    covers the IPv4-mapped peers of a dual-stack socket.
    """
    sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_DONTFRAG, 1)


async def _sendall(conn: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = await conn.send(view)
        view = view[n:]
