"""What tunwg's batches save per packet (issue 17 point 4), in one process.

``taskset -c 0 python bench/bench_wgbatch.py`` (no root needed; loopback only).

1. The sans-I/O device: ``packet_from_tun`` and ``datagram_received`` once
   per packet against ``packets_from_tun`` and ``datagrams_received`` on
   batches of ``BATCH`` (a TUN wake-up's worth; a GRO receive's), for
   full-sized packets (1420 bytes) and ACK-sized ones (52 bytes).
2. The receive edge: a tunwg ``Interface`` (no daemon: its UDP socket, its
   device and its receive queue, drained by ``Interface._drain`` as its
   receive loop would) takes ``N`` transport messages from a peer over
   loopback, sent one per datagram against sent in ``UDP_SEGMENT`` groups
   of ``BATCH``, which loopback hands to the ``UDP_GRO`` socket coalesced.
   Time from the first ``recvmsg`` to the last packet queued.

Microseconds per packet, the median of ``ROUNDS``, each pair measured in
the same process.
"""

from __future__ import annotations

import os
import socket
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modules.tunwg.iface import SOL_UDP, UDP_SEGMENT, Interface
from modules.tunwg.wg import Device, Endpoint, SendDatagram, UapiReader
from modules.tunwg.wg.crypto import generate_private_key, public_key

if TYPE_CHECKING:
    from collections.abc import Callable

    from modules.tunwg.wg import Effect

N: Final = 2000
BATCH: Final = 40
ROUNDS: Final = 5
MTU: Final = 1420


def _request(text: str) -> object:
    r = UapiReader()
    r.receive_data(b"set=1\n" + text.encode() + b"\n")
    return r.next_request()


def _ipv4(size: int) -> bytes:
    """An IPv4 packet of ``size`` bytes, 198.51.100.1 -> .2."""
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, size, 0, 0, 64, 6, 0, bytes([198, 51, 100, 1]), bytes([198, 51, 100, 2])
    )
    return head + bytes(size - 20)


def _sent(effects: list[Effect]) -> list[bytes]:
    return [e.data for e in effects if isinstance(e, SendDatagram)]


def _configure(dev: Device, key: bytes, port: int, peer_key: bytes, peer_port: int, peer_inner: int) -> None:
    """``dev`` on ``port``, its peer at 127.0.0.1:``peer_port`` with 198.51.100.``peer_inner``."""
    dev.uapi_set(
        _request(  # type: ignore[arg-type]
            f"private_key={key.hex()}\nlisten_port={port}\npublic_key={public_key(peer_key).hex()}\n"
            f"endpoint=127.0.0.1:{peer_port}\nallowed_ip=198.51.100.{peer_inner}/32\n"
        ),
        now=0.0,
        wall_ns=time.time_ns(),
    )


def _pair(port_a: int, port_b: int) -> tuple[Device, Device]:
    """Two devices peered (a: 198.51.100.1, b: .2), a session established."""
    sk = [generate_private_key(os.urandom) for _ in range(2)]
    devs = [Device(rng=os.urandom, bind=lambda p: p, mtu=MTU) for _ in range(2)]
    ports = (port_a, port_b)
    for i, d in enumerate(devs):
        j = 1 - i
        _configure(d, sk[i], ports[i], sk[j], ports[j], j + 1)
        d.up(now=0.0)
    eps = [Endpoint(host="127.0.0.1", port=p) for p in ports]
    (init,) = _sent(devs[0].packet_from_tun(_ipv4(84), now=0.0, wall_ns=time.time_ns()))
    (resp,) = _sent(devs[1].datagram_received(init, eps[0], now=0.0, wall_ns=time.time_ns()))
    for data in _sent(devs[0].datagram_received(resp, eps[1], now=0.0, wall_ns=time.time_ns())):
        devs[1].datagram_received(data, eps[0], now=0.0, wall_ns=time.time_ns())
    return devs[0], devs[1]


def _timed(fn: Callable[[], list[bytes]]) -> tuple[float, list[bytes]]:
    """``fn()``'s result and microseconds per packet of ``N``."""
    t = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t) / N * 1e6, out


def sans_io() -> None:
    a, b = _pair(51820, 51821)
    src = Endpoint(host="127.0.0.1", port=51820)
    wall = time.time_ns()

    def encrypt_each(packets: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for p in packets:
            out += _sent(a.packet_from_tun(p, now=1.0, wall_ns=wall))
        return out

    def encrypt_batches(packets: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for i in range(0, len(packets), BATCH):
            out += _sent(a.packets_from_tun(packets[i : i + BATCH], now=1.0, wall_ns=wall))
        return out

    def decrypt_each(datagrams: list[bytes]) -> list[bytes]:
        for d in datagrams:
            b.datagram_received(d, src, now=1.0, wall_ns=wall)
        return []

    def decrypt_batches(datagrams: list[bytes]) -> list[bytes]:
        for i in range(0, len(datagrams), BATCH):
            b.datagrams_received(datagrams[i : i + BATCH], src, now=1.0, wall_ns=wall)
        return []

    for size in (MTU, 52):
        packets = [_ipv4(size)] * N
        times: dict[str, list[float]] = {"enc1": [], "encb": [], "dec1": [], "decb": []}
        for _ in range(ROUNDS):
            t, out = _timed(lambda: encrypt_each(packets))  # noqa: B023
            times["enc1"].append(t)
            times["dec1"].append(_timed(lambda: decrypt_each(out))[0])  # noqa: B023
            t, out = _timed(lambda: encrypt_batches(packets))  # noqa: B023
            times["encb"].append(t)
            times["decb"].append(_timed(lambda: decrypt_batches(out))[0])  # noqa: B023
        m = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"sans-I/O, {size}-byte packets: encrypt {m['enc1']:.2f} -> {m['encb']:.2f} us,"
            f" decrypt {m['dec1']:.2f} -> {m['decb']:.2f} us (one by one -> batches of {BATCH})"
        )


async def _edge() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.bind(("127.0.0.1", 0))
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        peer_port = raw.getsockname()[1]
        ifp = Interface(0, "bwgbatch0", "/nonexistent", mtu=MTU)
        peer = Device(rng=os.urandom, bind=lambda _: peer_port, mtu=MTU)
        sk = [generate_private_key(os.urandom) for _ in range(2)]
        _configure(ifp.device, sk[0], 0, sk[1], peer_port, 1)
        ifp.up()
        ifp.queue_max = N + 10
        sock = ifp._sock
        assert sock is not None
        port = sock.getsockname()[1]
        _configure(peer, sk[1], peer_port, sk[0], port, 2)
        peer.up(now=0.0)
        dst = ("127.0.0.1", port)
        them = Endpoint(host="127.0.0.1", port=port)
        raw.settimeout(5)
        for d in _sent(peer.packet_from_tun(_ipv4(84), now=0.0, wall_ns=time.time_ns())):
            raw.sendto(d, dst)
        await trio.lowlevel.wait_readable(sock)
        ifp._drain(sock)
        resp = raw.recv(65536)
        for d in _sent(peer.datagram_received(resp, them, now=0.0, wall_ns=time.time_ns())):
            raw.sendto(d, dst)
        await trio.lowlevel.wait_readable(sock)
        ifp._drain(sock)
        ifp.queue.clear()
        packet = _ipv4(MTU)
        results: dict[str, list[float]] = {"one": [], "gro": []}
        for _ in range(ROUNDS):
            for how in results:
                datagrams = _sent(peer.packets_from_tun([packet] * N, now=1.0, wall_ns=time.time_ns()))
                if how == "one":
                    for d in datagrams:
                        raw.sendto(d, dst)
                else:
                    size = len(datagrams[0])
                    cmsg = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]
                    for i in range(0, N, BATCH):
                        raw.sendmsg(datagrams[i : i + BATCH], cmsg, 0, dst)
                t = time.perf_counter()
                while len(ifp.queue) < N:
                    ifp._drain(sock)
                results[how].append((time.perf_counter() - t) / N * 1e6)
                ifp.queue.clear()
        print(
            f"receive edge, {MTU}-byte packets: {statistics.median(results['one']):.2f} us one datagram per"
            f" recvmsg -> {statistics.median(results['gro']):.2f} us coalesced by {BATCH} (UDP GRO);"
            f" {ifp.received_coalesced} datagrams came coalesced, {ifp.device.stats.dropped_invalid} dropped"
        )
        ifp.stop()


def main() -> None:
    sans_io()
    trio.run(_edge)


if __name__ == "__main__":
    main()
