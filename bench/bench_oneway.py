"""One packet's trip through two tunwg daemons, cold, for A/B comparison of source trees.

``python bench/bench_oneway.py [--count N] [--rounds N] [--gap S]... [--plain] [--public] TREE...``

Each TREE (a checkout of this project: its ``devfsd`` package and
``modules/``) gets two devfsd daemons, A and B, each with one tunwg
interface, configured with ``wg``; the two are WireGuard peers over the
loopback of one network namespace the script makes. A reader thread
sleeps in a pread(2) of B's node; every ``--gap`` seconds the writer
pwrite(2)s an ICMP echo request to A's node and waits until the reader has
it. The time between is one packet's trip: A's write step (FUSE WRITE,
encrypt, ``sendto``) and B's receive step (datagram, decrypt, answer the
sleeping READ), each in a daemon asleep since the last packet, as the two
ends of a ping's trip through tunwg are (``bench_tunwg.py`` measures the
ping itself; this isolates devfsd and tunwg from the bridge, the far end
and the veth, so a change shows against less noise).

The trees run side by side, alternating in every round (the first tree
first in even rounds, last in odd ones). The reference is the first tree:
each line gives the median trip and its ratio to the first tree's, overall
and per round, and the 99th percentile. With ``--public`` every tree runs twice, the
second time with ``DEVFSD_PUBLIC_ONLY=1`` (its fast paths off). Needs root, /dev/fuse, ``ip netns``
and ``wg``. Everything it makes (the namespace, mounts, daemons, UAPI
sockets, temporary directories) is removed on exit, also on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tree, for devfsd

from tests.netns import KeyPair, NetNs
from tests.tunwg import TunwgHost

ROOT: Final = Path(__file__).resolve().parent.parent
INNER: Final = ("198.51.100.1", "198.51.100.2")
#: UDP ports in the benchmark's own namespace: tree k's daemons get PORT + 2k and + 2k + 1.
PORT: Final = 51900


def echo_request(src: str, dst: str) -> bytes:
    """An IPv4 ICMP echo request of 84 bytes, as ping(8) sends by default."""
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x7477, 1) + bytes(56)
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0, socket.inet_aton(src), socket.inet_aton(dst)
    )
    return header + icmp


class Pair:
    """Tree ``tree``'s two daemons in ``ns``, peered over its loopback, with A's node and B's node open."""

    def __init__(
        self, tree: Path, ns: NetNs, stack: contextlib.ExitStack, k: int, batch: bool, public: bool = False
    ) -> None:
        keys = [KeyPair.generate() for _ in range(2)]
        hosts: list[TunwgHost] = []
        for _ in range(2):
            base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_oneway.")))
            host = TunwgHost(ns, base)
            os.environ["PYTHONPATH"] = str(tree)  # the daemon imports this tree's devfsd and modules
            if public:
                os.environ["DEVFSD_PUBLIC_ONLY"] = "1"
            try:
                stack.enter_context(host)
            finally:
                del os.environ["PYTHONPATH"]
                os.environ.pop("DEVFSD_PUBLIC_ONLY", None)
            hosts.append(host)
        self.fds: list[int] = []
        for i, host in enumerate(hosts):
            port, peer_port = PORT + 2 * k + i, PORT + 2 * k + 1 - i
            host.set(
                "private-key", str(keys[i].write_private(host.mount.base)), "listen-port", str(port),
                "peer", keys[1 - i].public, "endpoint", f"127.0.0.1:{peer_port}",
                "allowed-ips", f"{INNER[1 - i]}/32",
            )  # fmt: skip
            fd = os.open(host.mknod(batch=batch), os.O_RDWR)
            stack.callback(os.close, fd)
            self.fds.append(fd)
        packet = echo_request(INNER[0], INNER[1])
        self.packet = struct.pack("!H", len(packet)) + packet if batch else packet
        os.pwrite(self.fds[0], self.packet, 0)  # the handshake, then the packet
        os.pread(self.fds[1], 65536, 0)

    def trips(self, count: int, gap: float) -> list[int]:
        """``count`` trips, ``gap`` seconds apart: nanoseconds each."""
        arrived: list[int] = []
        ready = threading.Semaphore(0)
        a, b = self.fds

        def reader() -> None:
            for _ in range(count):
                os.pread(b, 65536, 0)
                arrived.append(time.perf_counter_ns())
                ready.release()

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        out = []
        for _ in range(count):
            time.sleep(gap)
            t = time.perf_counter_ns()
            os.pwrite(a, self.packet, 0)
            if not ready.acquire(timeout=10):
                raise RuntimeError("a packet did not arrive within 10 s")
            out.append(arrived[-1] - t)
        thread.join(10)
        return out


def positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: ``kind`` of the text, refused unless > 0."""

    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("trees", nargs="*", type=Path, help=f"source trees (default: this one, {ROOT})")
    p.add_argument("--count", type=positive(int), default=150, help="trips per tree, gap and round (150)")
    p.add_argument("--rounds", type=positive(int), default=6, help="alternations of the trees (6)")
    p.add_argument(
        "--gap", type=positive(float), action="append", help="seconds between trips (repeatable; 0.01)"
    )
    p.add_argument("--plain", action="store_true", help="plain nodes (one packet per call), not batch-framed")
    p.add_argument("--public", action="store_true", help="each tree also with DEVFSD_PUBLIC_ONLY=1")
    args = p.parse_args(argv)
    trees = [t.resolve() for t in args.trees] or [ROOT]
    for t in trees:
        if not (t / "devfsd" / "__init__.py").exists() or not (t / "modules" / "tunwg").is_dir():
            p.error(f"{t}: not a devfsd tree")
    runs = [(t, False) for t in trees] + [(t, True) for t in trees if args.public]
    labels = [f"{t}{' public only' if public else ''}" for t, public in runs]
    gaps = args.gap or [0.01]
    with contextlib.ExitStack() as stack:
        ns = stack.enter_context(NetNs("ow"))
        pairs = [Pair(t, ns, stack, k, not args.plain, public) for k, (t, public) in enumerate(runs)]
        every: dict[tuple[int, float], list[int]] = {(k, g): [] for k in range(len(runs)) for g in gaps}
        rounds: dict[tuple[int, float], list[float]] = {(k, g): [] for k in range(len(runs)) for g in gaps}
        for r in range(args.rounds):
            for g in gaps:
                order = list(range(len(runs)))
                for k in order if r % 2 == 0 else order[::-1]:
                    got = pairs[k].trips(args.count, g)
                    every[(k, g)] += got
                    rounds[(k, g)].append(statistics.median(got))
        print(f"{'gap ms':>6}  {'tree':<40} {'trip µs':>8} {'ratio':>6}  {'per round':<11} {'p99 µs':>7}")
        for g in gaps:
            ref, ref_rounds = statistics.median(every[(0, g)]), rounds[(0, g)]
            for k, t in enumerate(labels):
                med = statistics.median(every[(k, g)])
                p99 = statistics.quantiles(every[(k, g)], n=100)[98]
                per = [x / y for x, y in zip(rounds[(k, g)], ref_rounds, strict=True)]
                spread = f"{min(per):.3f}-{max(per):.3f}"
                row = f"{med / 1e3:>8.1f} {med / ref:>6.3f}  {spread:<11} {p99 / 1e3:>7.0f}"
                print(f"{g * 1e3:>6g}  {t!s:<40} {row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
