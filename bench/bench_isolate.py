"""Isolated against in-process: reading mm's zero through ``modload -I``.

``python bench/bench_isolate.py [--quick] [--rounds N] [--pin C|none] [--before TREE]``

Starts two devfsd side by side in one run, one with ``mm`` loaded in
process and one with ``mm`` loaded isolated (``modload -I``: every read
crosses the daemon-host socket twice more), pins both daemons, the host
and this reader to one CPU (``--pin``, default 0; hosts started later
inherit the daemon's affinity), and reads zeros from each with 1-byte
``os.read`` calls (the round trip) and 128 KiB ``os.readv`` calls into a
page-aligned buffer (throughput). Rounds are interleaved, the order
alternating, and each round gives a ratio: in-process time per call over
isolated time per call (1.0: isolation costs nothing; issue 14's targets
are 0.5 at 1 byte and 0.8 at 128 KiB). Prints the median ratio with its
range and the per-call times, and where the CPU time of a call goes: the
time on CPU per call of the daemon, the module host (isolated only) and
this reader, from ``/proc/PID/schedstat`` (load-independent where the wall
time is not: on a shared machine the wall time counts other programs'
turns too). A benchmark, not a test; both mounts are removed however it
ends.

``--before TREE`` runs a third daemon, also with ``mm`` isolated, on the
code of TREE (a source tree, e.g. ``git archive COMMIT | tar -x -C
TREE``: the daemon and its host import devfsd from it through
``PYTHONPATH``), in the same rounds against the same in-process daemon,
so that one run compares the code before a change and after it under the
same load (rows ``isolated, before``; its ratio is in-process time over
its time, as the others).

Each round also times the floor of any isolated design on this machine,
no devfsd code at all: a bare round trip between this process and a new
Python program pinned alike (``_Echo``: a blocking ``send`` of a
24-byte request over a socket pair, the other side's blocking
``recv_into`` and its reply), and for 128 KiB the same plus the other
side's copy of 128 KiB into a buffer shared with this process (the copy
an isolated driver's data needs to reach the daemon). An isolated read
costs at least the in-process read plus that floor (the FUSE side stays
in the daemon, the driver's own code moves to the host), so the row
``ceiling`` (in-process time / (in-process time + floor), per round) is
the best ratio the targets can be held against here.
"""

from __future__ import annotations

import argparse
import contextlib
import mmap
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tree, for bench.*

from bench.bench_read import _mm_zero, _pin, _run_large, _run_small
from devfsd.testing.mount import DevfsdMount

if TYPE_CHECKING:
    from collections.abc import Iterator

KIB: Final = 1024

#: The other side of ``_Echo``: answers each request on the socket (fd
#: argv[1]); a request whose first byte is 1 first copies 128 KiB into the
#: shared buffer (fd argv[2]).
_ECHO: Final = """
import mmap, socket, sys
s = socket.socket(fileno=int(sys.argv[1]))
shm = mmap.mmap(int(sys.argv[2]), 131072)
src = bytes(131072)
buf = bytearray(64)
small = bytes(25)
while n := s.recv_into(buf):
    if buf[0]:
        shm[:] = src
    s.send(small)
"""


class _Echo:
    """A new Python program answering a socket pair, as a host would with
    no devfsd code: the floor of a call into another process."""

    def __init__(self, cpus: set[int] | None) -> None:
        self.sock, theirs = socket.socketpair()
        fd = os.memfd_create("bench-echo")
        os.ftruncate(fd, 128 * KIB)
        self.shm = mmap.mmap(fd, 128 * KIB)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _ECHO, str(theirs.fileno()), str(fd)], pass_fds=(theirs.fileno(), fd)
        )
        theirs.close()
        os.close(fd)
        if cpus is not None:
            _pin(self.proc.pid, cpus)
        self.round_trips(100, big=False)
        self.round_trips(20, big=True)

    def round_trips(self, calls: int, *, big: bool) -> float:
        """Seconds per round trip (with the 128 KiB copy if ``big``)."""
        req = (b"\1" if big else b"\0") * 24
        buf = bytearray(64)
        send, recv_into = self.sock.send, self.sock.recv_into
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            send(req)
            recv_into(buf)
        return (time.perf_counter_ns() - t0) / 1e9 / calls

    def close(self) -> None:
        self.sock.close()
        self.proc.wait(10)
        self.shm.close()


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _cpu_ns(pid: int) -> int:
    """Nanoseconds ``pid`` has run (all its threads), from ``/proc/PID/schedstat``."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            total += int(f.read().split()[0])
    return total


@contextlib.contextmanager
def _pythonpath(tree: str | None) -> Iterator[None]:
    """``PYTHONPATH`` set to ``tree`` (a daemon started meanwhile, and its
    hosts, import devfsd from it), if not ``None``."""
    old = os.environ.get("PYTHONPATH")
    if tree is not None:
        os.environ["PYTHONPATH"] = str(Path(tree).resolve())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def print_ratios(
    what: str, ratios: dict[str, list[float]], per_call: dict[tuple[str, str], list[float]]
) -> None:
    """The table: per row, median seconds per call in process and isolated
    (``per_call[(row, "in process" | "isolated")]``), and the ratio's median and range."""
    print(f"{what:<8} {'in process':>12} {'isolated':>12} {'ratio':>6}  range")
    for row, rs in ratios.items():
        a = statistics.median(per_call[(row, "in process")]) * 1e6
        b = statistics.median(per_call[(row, "isolated")]) * 1e6
        r = statistics.median(rs)
        print(f"{row:<8} {a:>10.1f}us {b:>10.1f}us {r:>6.2f}  {min(rs):.2f}-{max(rs):.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--pin", default="0", help="CPU to pin to, or none")
    p.add_argument("--before", metavar="TREE", help="also an isolated mm on the code of TREE")
    args = p.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 7)
    small_calls = 3_000 if args.quick else 20_000
    large_calls = 1_000 if args.quick else 8_000
    cpus = None if args.pin == "none" else {int(args.pin)}
    with tempfile.TemporaryDirectory(prefix="devfsd-bench-iso-") as tmp:
        inproc = DevfsdMount(Path(tmp) / "inproc", args=["--entry-timeout", "10"])
        isos = {"isolated": DevfsdMount(Path(tmp) / "iso", args=["--entry-timeout", "10"])}
        if args.before:
            isos["isolated, before"] = DevfsdMount(Path(tmp) / "before", args=["--entry-timeout", "10"])
        echo: _Echo | None = None
        try:
            inproc.start()
            for name, m in isos.items():
                with _pythonpath(args.before if name == "isolated, before" else None):
                    m.start()
            if cpus is not None:
                os.sched_setaffinity(0, cpus)
                for m in (inproc, *isos.values()):
                    assert m.proc is not None
                    _pin(m.proc.pid, cpus)
            assert inproc.proc is not None
            procs: dict[str, dict[str, int]] = {"in process": {"daemon": inproc.proc.pid}}
            fds = {"in process": os.open(_mm_zero(inproc), os.O_RDONLY)}
            for name, m in isos.items():
                m.client().modload("mm", isolated=True)
                node = m.path / "zero"
                os.mknod(node, 0o20666, os.makedev(2, 12))
                assert m.proc is not None
                if cpus is not None:
                    for child in _children(m.proc.pid):
                        _pin(child, cpus)
                procs[name] = {"daemon": m.proc.pid, "host": _children(m.proc.pid)[0]}
                fds[name] = os.open(node, os.O_RDONLY)
            for who in procs.values():
                who["reader"] = os.getpid()
            buf = mmap.mmap(-1, 128 * KIB)
            echo = _Echo(cpus)
            for fd in fds.values():  # warm-up
                _run_small(fd, 500)
                _run_large(fd, buf, 100)
            ratios: dict[str, list[float]] = {"1 B": [], "128 KiB": []}
            ratios_before: dict[str, list[float]] = {"1 B": [], "128 KiB": []}
            ceiling: dict[str, list[float]] = {"1 B": [], "128 KiB": []}
            per_call: dict[tuple[str, str], list[float]] = {}
            #: (test, variant, process) -> CPU seconds per call, per round.
            cpu: dict[tuple[str, str, str], list[float]] = {}

            def on_cpu(test: str, name: str, calls: int, before: dict[str, int]) -> None:
                for who, pid in procs[name].items():
                    cpu.setdefault((test, name, who), []).append((_cpu_ns(pid) - before[who]) / calls / 1e9)

            for rnd in range(rounds):
                order = list(fds) if rnd % 2 == 0 else list(reversed(fds))
                t: dict[tuple[str, str], float] = {}
                for name in order:
                    before = {who: _cpu_ns(pid) for who, pid in procs[name].items()}
                    n, secs = _run_small(fds[name], small_calls)
                    assert n == small_calls
                    t[("1 B", name)] = secs / small_calls
                    on_cpu("1 B", name, small_calls, before)
                    before = {who: _cpu_ns(pid) for who, pid in procs[name].items()}
                    n, secs = _run_large(fds[name], buf, large_calls)
                    assert n == large_calls * 128 * KIB
                    t[("128 KiB", name)] = secs / large_calls
                    on_cpu("128 KiB", name, large_calls, before)
                floor = {"1 B": echo.round_trips(small_calls, big=False)}
                floor["128 KiB"] = echo.round_trips(large_calls, big=True)
                for test in ratios:
                    ratios[test].append(t[(test, "in process")] / t[(test, "isolated")])
                    t[(test, "floor")] = floor[test]
                    ceiling[test].append(t[(test, "in process")] / (t[(test, "in process")] + floor[test]))
                    if args.before:
                        ratios_before[test].append(t[(test, "in process")] / t[(test, "isolated, before")])
                for k, v in t.items():
                    per_call.setdefault(k, []).append(v)
            for fd in fds.values():
                os.close(fd)
        finally:
            if echo is not None:
                echo.close()
            for m in isos.values():
                m.stop()
            inproc.stop()
    print(f"{rounds} rounds, pinned to {args.pin}; ratio = in-process time / isolated time per call")
    print_ratios("test", ratios, per_call)
    if args.before:
        print(f"the code of {args.before}, isolated, in the same rounds:")
        renamed = {
            (row, "isolated" if v == "isolated, before" else v): x
            for (row, v), x in per_call.items()
            if v != "isolated"
        }
        print_ratios("before", ratios_before, renamed)
    print("floor: a bare round trip to another Python program (128 KiB: and its copy into shared memory)")
    print(f"{'floor':<8} {'floor':>12} {'in + floor':>12} {'ceil.':>6}  range")
    for row, rs in ceiling.items():
        f = statistics.median(per_call[(row, "floor")]) * 1e6
        a = statistics.median(per_call[(row, "in process")]) * 1e6
        r = statistics.median(rs)
        print(f"{row:<8} {f:>10.1f}us {a + f:>10.1f}us {r:>6.2f}  {min(rs):.2f}-{max(rs):.2f}")
    print("CPU time per call (medians): daemon + host + reader = total")
    for test in ratios:
        for name in fds:
            parts = {who: statistics.median(cpu[(test, name, who)]) * 1e6 for who in procs[name]}
            shown = " + ".join(f"{who} {us:.1f}" for who, us in parts.items())
            print(f"{test:<8} {name:<11} {shown} = {sum(parts.values()):.1f}us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
