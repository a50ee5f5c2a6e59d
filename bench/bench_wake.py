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

Not pinned (both servers and the reader go where the scheduler puts them,
as a daemon does). Needs root and /dev/fuse. Everything it starts
(mounts, servers) is stopped on exit, also on failure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tree, for bench.*

from bench.bench_read import RawFs
from devfsd.testing.mount import DevfsdMount, run

MM_ZERO: Final = 12


def on_cpu_ns(pid: int) -> int:
    """Nanoseconds ``pid``'s main thread has run (``/proc/PID/schedstat``, first field)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def measure(path: str, pid: int, pause: float, count: int) -> tuple[float, float]:
    """(median µs per pread, server µs on CPU per pread) over ``count`` reads."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.pread(fd, 1, 0)  # warm the path once
        lat = []
        cpu0 = on_cpu_ns(pid)
        for _ in range(count):
            if pause:
                time.sleep(pause)
            t = time.perf_counter_ns()
            os.pread(fd, 1, 0)
            lat.append(time.perf_counter_ns() - t)
        cpu = (on_cpu_ns(pid) - cpu0) / count
    finally:
        os.close(fd)
    return statistics.median(lat) / 1e3, cpu / 1e3


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
    with tempfile.TemporaryDirectory(prefix="bench_wake.") as tmp:
        base = Path(tmp)
        raw = RawFs(base / "raw" / "mnt", base / "raw" / "rawfs.log")
        raw.start()
        try:
            with DevfsdMount(base / "devfsd") as m:
                assert m.proc is not None and raw.proc is not None
                for argv_ in (["modload", "mm"], ["devfs-mknod", f"{m.path}/zero", "c", "mm", str(MM_ZERO)]):
                    r = run(argv_, env=m.env)
                    if r.returncode:
                        raise RuntimeError(f"{argv_[0]}: {r.stderr.decode().strip()}")
                servers = [
                    ("rawfs", str(raw.path / "zero"), raw.proc.pid),
                    ("devfsd", f"{m.path}/zero", m.proc.pid),
                ]
                print(f"{'server':<8} {'pause s':>8} {'µs/read':>9} {'server CPU µs/read':>19}")
                for rnd in range(args.rounds):
                    for name, path, pid in servers if rnd % 2 == 0 else servers[::-1]:
                        for pause in pauses:
                            lat, cpu = measure(path, pid, pause, args.count)
                            print(f"{name:<8} {pause:>8g} {lat:>9.1f} {cpu:>19.1f}", flush=True)
        finally:
            raw.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
