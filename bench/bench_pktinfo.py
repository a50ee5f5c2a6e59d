"""What tunwg's sticky source (issue 17 point 1) costs per datagram.

``taskset -c 0 python bench/bench_pktinfo.py`` (no root needed; loopback only).

recvmsg with packet info (and the cache key tunwg makes of it) against
recvfrom, and sendmsg with an ``IPV6_PKTINFO`` control message against
sendto, on one dual-stack socket to an IPv4-mapped loopback address,
128-byte datagrams in batches of ``N``, the median of ``ROUNDS`` batches,
each pair measured in the same process.
"""

from __future__ import annotations

import socket
import statistics
import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable

N: Final = 2000
ROUNDS: Final = 5
CMSG_ROOM: Final = socket.CMSG_SPACE(20)
DATA: Final = bytes(128)


def _socket() -> socket.socket:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    return s


def main() -> None:
    r, s = _socket(), _socket()
    r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    r.bind(("::", 0))
    r.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    dst = ("::ffff:127.0.0.1", r.getsockname()[1])
    mapped = bytes(10) + b"\xff\xff" + socket.inet_aton("127.0.0.1") + bytes(4)
    cmsg = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, mapped)]

    def fill() -> None:
        for _ in range(N):
            s.sendto(DATA, dst)

    def drain() -> None:
        for _ in range(N):
            r.recvfrom(65536)

    def recvfrom() -> float:
        fill()
        t = time.perf_counter()
        drain()
        return time.perf_counter() - t

    def recvmsg() -> float:
        fill()
        t = time.perf_counter()
        for _ in range(N):
            _, anc, _, addr = r.recvmsg(65536, CMSG_ROOM)
            (addr, anc[0][2] if anc else b"")
        return time.perf_counter() - t

    def sendto() -> float:
        t = time.perf_counter()
        fill()
        elapsed = time.perf_counter() - t
        drain()
        return elapsed

    def sendmsg() -> float:
        t = time.perf_counter()
        for _ in range(N):
            s.sendmsg((DATA,), cmsg, 0, dst)
        elapsed = time.perf_counter() - t
        drain()
        return elapsed

    fns: list[Callable[[], float]] = [recvfrom, recvmsg, sendto, sendmsg]
    times: dict[str, list[float]] = {f.__name__: [] for f in fns}
    for _ in range(ROUNDS):
        for f in fns:
            times[f.__name__].append(f())
    us = {k: statistics.median(v) / N * 1e6 for k, v in times.items()}
    print(" ".join(f"{k} {v:.2f} us" for k, v in us.items()))
    recv, send = us["recvmsg"] / us["recvfrom"], us["sendmsg"] / us["sendto"]
    print(f"recvmsg/recvfrom {recv:.2f} sendmsg/sendto {send:.2f}")


if __name__ == "__main__":
    main()
