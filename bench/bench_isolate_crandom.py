"""Isolated against in-process: crandom's 1 MiB reads through ``modload -I``.

``python bench/bench_isolate_crandom.py [--quick] [--rounds N] [--pin C|none]``

Issue 14's crandom figure. Starts two devfsd side by side in one run, one
with ``crandom`` loaded in process and one with it loaded isolated (its
permutation runs in the host, and the 1 MiB it returns crosses the
host-daemon socket on top of FUSE), pins both daemons, the host and this
process to one CPU (``--pin``, default 0), writes the same string to
minor 0 of each, and reads it back permuted: 16-byte strings (the round
trip, the permutation's cost negligible) and crandom's longest string,
``MAX_READ`` bytes (1 MiB - 4095: one FUSE request; the permutation, ~25
ms, dominates). Rounds interleave the two, the order alternating; each
round gives a ratio, in-process time per read over isolated time per
read (1.0: isolation costs nothing). Prints the median ratio with its
range and the per-read times. A benchmark, not a test; both mounts are
removed however it ends.
"""

from __future__ import annotations

import argparse
import mmap
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tree, for bench.*

from bench.bench_isolate import _children, print_ratios
from bench.bench_read import _pin
from devfsd.testing.mount import DevfsdMount
from modules.crandom.crandom import MAX_READ

CRANDOM_MAJOR: Final = 420
SIZES: Final = {"16 B": 16, "1 MiB": MAX_READ}


def _node(m: DevfsdMount, isolated: bool) -> Path:
    m.client().modload("crandom", isolated=isolated)
    node = m.path / "crandom0"
    os.mknod(node, 0o20666, os.makedev(CRANDOM_MAJOR, 0))
    return node


def _store(node: Path, data: bytes) -> None:
    fd = os.open(node, os.O_WRONLY)
    try:
        assert os.write(fd, data) == len(data)
    finally:
        os.close(fd)


def _reads(fd: int, buf: mmap.mmap, size: int, calls: int) -> float:
    """Seconds for ``calls`` reads of the whole ``size``-byte string."""
    readv = os.readv
    bufs = [memoryview(buf)[:size]]
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        if readv(fd, bufs) != size:
            raise RuntimeError("short read")
    return (time.perf_counter_ns() - t0) / 1e9


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--pin", default="0", help="CPU to pin to, or none")
    args = p.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 9)
    calls = {"16 B": 300 if args.quick else 2_000, "1 MiB": 4 if args.quick else 12}
    cpus = None if args.pin == "none" else {int(args.pin)}
    ratios: dict[str, list[float]] = {k: [] for k in SIZES}
    per_read: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="devfsd-bench-isocr-") as tmp:
        mounts = {
            "in process": DevfsdMount(Path(tmp) / "inproc", args=["--entry-timeout", "10"]),
            "isolated": DevfsdMount(Path(tmp) / "iso", args=["--entry-timeout", "10"]),
        }
        try:
            for m in mounts.values():
                m.start()
            nodes = {name: _node(m, name == "isolated") for name, m in mounts.items()}
            if cpus is not None:
                os.sched_setaffinity(0, cpus)
                for m in mounts.values():
                    assert m.proc is not None
                    _pin(m.proc.pid, cpus)
                    for child in _children(m.proc.pid):
                        _pin(child, cpus)
            buf = mmap.mmap(-1, MAX_READ + mmap.PAGESIZE)
            for label, size in SIZES.items():
                data = os.urandom(size)
                fds = {}
                for name, node in nodes.items():
                    _store(node, data)
                    fds[name] = os.open(node, os.O_RDONLY)
                try:
                    for fd in fds.values():  # warm-up (the host's first numpy call)
                        _reads(fd, buf, size, 3)
                    for rnd in range(rounds):
                        order = list(fds) if rnd % 2 == 0 else list(reversed(fds))
                        n = calls[label]
                        t = {name: _reads(fds[name], buf, size, n) / n for name in order}
                        ratios[label].append(t["in process"] / t["isolated"])
                        for name, secs in t.items():
                            per_read.setdefault((label, name), []).append(secs)
                finally:
                    for fd in fds.values():
                        os.close(fd)
        finally:
            for m in mounts.values():
                m.stop()
    print(f"{rounds} rounds, pinned to {args.pin}; ratio = in-process time / isolated time per read")
    print_ratios("read", ratios, per_read)
    return 0


if __name__ == "__main__":
    sys.exit(main())
