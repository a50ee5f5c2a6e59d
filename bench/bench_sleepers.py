"""The idle daemon's CPU time with many sleeping readers, and Ctrl-C latency.

``python bench/bench_sleepers.py [--counts 1000,4000] [--seconds 10] [--kills 20] [--quick]``

For each count N and each way of sleeping (N ``cat`` processes, or N
threads of one process, each blocked in read(2) on an empty msgq node),
and for each signal path of devfsd (the FUSE request's INTERRUPT, which is
the default, and, as the reference, ``DEVFSD_PUBLIC_ONLY=1``: the caller's
signals looked for in ``/proc`` every 50 ms backing off to 400 ms), this:

1. starts a daemon, blocks the N readers, waits until the daemon reports N
   sleepers and then 2 s more (the first checks of every sleep are over);
   (The threads share one descriptor and use pread(2): read(2) on a shared
   descriptor of a seekable file waits for the file position lock, as on
   any regular file, so only one of them would reach the daemon.)
2. measures the daemon's CPU time (utime + stime, ``/proc/PID/stat``) over
   ``--seconds`` of idleness, as a percentage of one CPU;
3. (processes only) sends SIGINT to ``--kills`` of the readers, one at a
   time, and times each from ``kill(2)`` to its exit: the median and the
   worst. A reader killed by SIGINT dies as ``cat`` does at a terminal.

Reference figures, not a test. Needs root and /dev/fuse.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devfsd.cdevsw import makedev  # noqa: E402
from devfsd.testing.mount import DevfsdMount, wait_for  # noqa: E402

MODS = ROOT / "tests" / "modules"
HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


THREADS = """\
import os, sys, threading
fd = os.open(sys.argv[1], os.O_RDONLY)
for _ in range(int(sys.argv[2])):
    threading.Thread(target=os.pread, args=(fd, 1, 0), daemon=True).start()
print("started", flush=True)
sys.stdin.read()
"""


def one(n: int, mode: str, public: bool, seconds: float, kills: int) -> dict[str, object]:
    env_before = os.environ.get("DEVFSD_PUBLIC_ONLY")
    if public:
        os.environ["DEVFSD_PUBLIC_ONLY"] = "1"
    else:
        os.environ.pop("DEVFSD_PUBLIC_ONLY", None)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory() as d, DevfsdMount(d, modpath=[MODS]) as m:
            c = m.client()
            c.modload("msgq")
            maj = {name: mj for name, mj, _ in c.drivers()}["msgq"]
            node = m.path / "q"
            os.mknod(node, stat.S_IFCHR | 0o666, makedev(maj, 0))
            if mode == "processes":
                for _ in range(n):
                    procs.append(
                        subprocess.Popen(
                            ["cat", str(node)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                        )
                    )
            else:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-c", THREADS, str(node), str(n)],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                    )
                )
            try:
                wait_for(lambda: c.status()["sleepers"] == n, 120, f"{n} sleepers")
            except TimeoutError:
                tail = m.log_text().splitlines()[-5:]
                raise TimeoutError(
                    f"{n} sleepers never all asleep; the log ends:\n" + "\n".join(tail)
                ) from None
            time.sleep(2.0)
            st = c.status()
            assert m.proc is not None
            pid = st["pid"]
            t0, c0 = time.monotonic(), cpu_seconds(pid)
            time.sleep(seconds)
            t1, c1 = time.monotonic(), cpu_seconds(pid)
            out: dict[str, object] = {
                "n": n,
                "mode": mode,
                "path": "/proc" if public else "INTERRUPT",
                "watched": st.get("sleepers_interruptible", 0),
                "cpu_pct": 100 * (c1 - c0) / (t1 - t0),
            }
            if mode == "processes":
                lat = []
                for p in procs[:kills]:
                    t = time.monotonic()
                    p.send_signal(signal.SIGINT)
                    p.wait(10)
                    lat.append(time.monotonic() - t)
                out["ctrl_c_median_ms"] = 1000 * statistics.median(lat)
                out["ctrl_c_worst_ms"] = 1000 * max(lat)
            for p in procs:
                p.kill()
            for p in procs:
                p.wait()
            return out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if env_before is None:
            os.environ.pop("DEVFSD_PUBLIC_ONLY", None)
        else:
            os.environ["DEVFSD_PUBLIC_ONLY"] = env_before


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="1000,4000")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--modes", default="processes,threads")
    ap.add_argument("--paths", default="INTERRUPT,/proc")
    ap.add_argument("--quick", action="store_true", help="100 sleepers, 3 s")
    a = ap.parse_args()
    counts = [100] if a.quick else [int(x) for x in a.counts.split(",")]
    seconds = 3.0 if a.quick else a.seconds
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    threading.stack_size(256 * 1024)
    head = ("sleepers", "as", "signals by", "watched", "CPU %", "Ctrl-C median", "worst")
    print("{:>8} {:<9} {:<10} {:>7} {:>6} {:>13} {:>8}".format(*head))
    for n in counts:
        for mode in a.modes.split(","):
            for public in [p == "/proc" for p in a.paths.split(",")]:
                r = one(n, mode, public, seconds, a.kills)
                med = f"{r['ctrl_c_median_ms']:.1f} ms" if "ctrl_c_median_ms" in r else "-"
                worst = f"{r['ctrl_c_worst_ms']:.1f} ms" if "ctrl_c_worst_ms" in r else "-"
                row = f"{n:>8} {mode:<9} {r['path']:<10} {r['watched']:>7} {r['cpu_pct']:>6.2f}"
                print(f"{row} {med:>13} {worst:>8}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
