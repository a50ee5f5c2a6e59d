"""What a FUSE request costs a Python server woken after a pause, devfsd against raw pyfuse3.

``python bench/bench_wake.py [--count N] [--rounds N] [--pause S]...``

``bench_read.py`` reads back to back, so the servers' caches stay hot. A
tunnel's ping, or any interactive use, reaches the daemon after it has
slept for milliseconds, and on this VM a Python server woken then runs
several times slower (see README.md, tunwg, "Round-trip time"). This
script measures that: a 1-byte pread(2) of devfsd's ``mm`` zero node and of
``rawfs.py``'s zero file, ``--count`` times per pause, with ``time.sleep``
of each ``--pause`` before every read (0: back to back), the servers
alternating over ``--rounds``. For each it prints the median latency seen
by the reader and the CPU the server spent per read (``/proc/PID/schedstat``
on-CPU time over the reads), so the reference for "cold" is raw pyfuse3
measured the same way in the same run.

Two more servers, with no FUSE, give the floors under those: ``python``, a
child of the same interpreter blocked in read(2) on a pipe that writes one
byte back on another (the least a Python process woken after a pause can
cost), and ``trio``, the same under ``trio.run`` (``wait_readable`` on the
pipe, then read(2) and write(2)): what trio's loop adds to a wake-up. So
devfsd's cold cost splits into the interpreter's, trio's, pyfuse3's and
its own.

Not pinned (both servers and the reader go where the scheduler puts them,
as a daemon does). Needs root and /dev/fuse. Everything it starts
(mounts, servers) is stopped on exit, also on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tree, for bench.*

from bench.bench_read import RawFs
from devfsd.testing.mount import DevfsdMount, run

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

MM_ZERO: Final = 12

# The pipe servers: read one byte from fd 0, write it to fd 1, until EOF.
PIPE_SERVERS: Final = {
    "python": """
import os
while (b := os.read(0, 1)):
    os.write(1, b)
""",
    "trio": """
import os, trio
async def main():
    while True:
        await trio.lowlevel.wait_readable(0)
        if not (b := os.read(0, 1)):
            return
        os.write(1, b)
trio.run(main)
""",
}


def on_cpu_ns(pid: int) -> int:
    """Nanoseconds ``pid``'s main thread has run (``/proc/PID/schedstat``, first field)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def measure(request: Callable[[], object], pid: int, pause: float, count: int) -> tuple[float, float]:
    """(median µs per request, server µs on CPU per request) over ``count`` requests."""
    request()  # warm the path once
    lat = []
    cpu0 = on_cpu_ns(pid)
    for _ in range(count):
        if pause:
            time.sleep(pause)
        t = time.perf_counter_ns()
        request()
        lat.append(time.perf_counter_ns() - t)
    cpu = (on_cpu_ns(pid) - cpu0) / count
    return statistics.median(lat) / 1e3, cpu / 1e3


@contextlib.contextmanager
def pread_one(path: str) -> Iterator[Callable[[], object]]:
    """A 1-byte pread(2) of ``path`` per call."""
    fd = os.open(path, os.O_RDONLY)
    try:
        yield lambda: os.pread(fd, 1, 0)
    finally:
        os.close(fd)


@contextlib.contextmanager
def pipe_server(source: str) -> Iterator[tuple[Callable[[], object], int]]:
    """A ``PIPE_SERVERS`` child: (one byte there and back per call, its pid)."""
    proc = subprocess.Popen([sys.executable, "-c", source], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    wfd, rfd = proc.stdin.fileno(), proc.stdout.fileno()

    def request() -> bytes:
        os.write(wfd, b"x")
        return os.read(rfd, 1)

    try:
        yield request, proc.pid
    finally:
        proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--count", type=int, default=300, help="reads per server, pause and round (default 300)")
    p.add_argument("--rounds", type=int, default=2, help="alternations of the servers (default 2)")
    p.add_argument(
        "--pause",
        type=float,
        action="append",
        help="seconds slept before each read (repeatable; default 0 and 0.01)",
    )
    args = p.parse_args(argv)
    pauses = args.pause or [0.0, 0.01]
    with tempfile.TemporaryDirectory(prefix="bench_wake.") as tmp, contextlib.ExitStack() as stack:
        base = Path(tmp)
        raw = RawFs(base / "raw" / "mnt", base / "raw" / "rawfs.log")
        stack.callback(raw.stop)
        raw.start()
        m = stack.enter_context(DevfsdMount(base / "devfsd"))
        assert m.proc is not None and raw.proc is not None
        for argv_ in (["modload", "mm"], ["devfs-mknod", f"{m.path}/zero", "c", "mm", str(MM_ZERO)]):
            r = run(argv_, env=m.env)
            if r.returncode:
                raise RuntimeError(f"{argv_[0]}: {r.stderr.decode().strip()}")
        servers = [(name, *stack.enter_context(pipe_server(src))) for name, src in PIPE_SERVERS.items()]
        servers += [
            ("rawfs", stack.enter_context(pread_one(str(raw.path / "zero"))), raw.proc.pid),
            ("devfsd", stack.enter_context(pread_one(f"{m.path}/zero")), m.proc.pid),
        ]
        results: dict[tuple[str, float], list[float]] = {}
        print(f"{'server':<8} {'pause s':>8} {'µs/req':>9} {'server CPU µs/req':>18}")
        for rnd in range(args.rounds):
            k = rnd % len(servers)
            for name, request, pid in servers[k:] + servers[:k]:
                for pause in pauses:
                    lat, cpu = measure(request, pid, pause, args.count)
                    results.setdefault((name, pause), []).append(cpu)
                    print(f"{name:<8} {pause:>8g} {lat:>9.1f} {cpu:>18.1f}", flush=True)
        print("\nmedian server CPU µs per request over the rounds")
        for (name, pause), cpus in results.items():
            print(f"{name:<8} {pause:>8g} {statistics.median(cpus):>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
