"""Reading zeros: devfsd's ``mm`` zero against raw pyfuse3 and the kernel.

``python bench/bench_read.py [--quick] [--rounds N] [--pin C:S|none] [--label WORD] [--no-json]``

Starts, side by side in one run, a real devfsd (``DevfsdMount``; ``modload
mm``; ``mknod zero c 2 12``) and ``rawfs.py`` (the least pyfuse3 can do to
serve the same reads), each on its own temporary mountpoint, and reads
zeros from them and from the kernel's ``/dev/zero`` (for scale) with:

- 1-byte ``os.read`` calls on one open file: the cost of one round trip;
- 128 KiB and 1 MiB ``os.readv`` calls into a page-aligned (mmap) buffer,
  so that each call is exactly one READ request (an unaligned 1 MiB buffer
  spans 257 pages and splits in two, fuse.md 4.2): throughput.

The reader and both servers are pinned to CPU 0 by default (``--pin``):
unpinned, the scheduler puts reader and server on one CPU for some runs and
on two for others, which on this VM doubles the round trip (a cross-CPU
wake-up), and the samples come out bimodal. After a warm-up, the runs are
interleaved: each round runs every size on every server (the server order
rotating from round to round), and the figures are the medians over the
rounds, so drift in the machine's speed falls on both servers alike.

"devfsd vs raw" is devfsd's speed relative to raw pyfuse3: raw's time per
call over devfsd's (1.0 is as fast; the target is 0.9 or better). It is
computed per round, from the two runs that sat side by side, and the
median of those is reported with its range.

Prints a table and writes every sample as JSON to ``bench/results/``. A
benchmark, not a test: it asserts only that the bytes read are zeros and
as many as asked. Both file systems are unmounted in ``finally`` blocks
whatever happens; nothing is left mounted or running.

Needs root and /dev/fuse (as the ``fuse`` tests).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pyfuse3
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tree, for bench.* and tests.*

from bench.benchinfo import machine_info, machine_ticks, proc_ticks, rotations
from devfsd.testing.mount import DevfsdMount, is_mounted, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable

BENCH_DIR: Final = Path(__file__).resolve().parent
RESULTS_DIR: Final = BENCH_DIR / "results"
RAWFS: Final = BENCH_DIR / "rawfs.py"

#: mm's /dev/zero minor (NetBSD ``DEV_ZERO``).
MM_ZERO_MINOR: Final = 12

KIB: Final = 1024
MIB: Final = 1024 * KIB
GIB: Final = 1024 * MIB

CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
#: Other load (in CPUs) above which the table carries a warning.
OTHER_LOAD_WARN: Final = 0.05

START_TIMEOUT: Final = 20.0
STOP_TIMEOUT: Final = 20.0

SERVERS: Final = ("/dev/zero", "rawfs", "devfsd")

#: Reader and both servers on CPU 0. Left to the scheduler, each run lands
#: either on one CPU (~26 µs per 1-byte read here) or on two (~50 µs: the
#: cross-CPU wake-up of a VM), and the samples are bimodal; pinned, they
#: agree within a few per cent and show the CPU cost of the round trip.
DEFAULT_PIN: Final = "0:0"


@dataclass(frozen=True, slots=True, kw_only=True)
class Test:
    """One kind of read: ``size`` bytes per call, ``calls`` calls per run."""

    name: str
    size: int
    calls: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """One run of one test on one server."""

    test: str
    server: str
    round: int
    calls: int
    nbytes: int
    seconds: float


def _tests(quick: bool) -> list[Test]:
    """1-byte latency, then 128 KiB and 1 MiB throughput."""
    if quick:
        return [
            Test(name="1 B", size=1, calls=5_000),
            Test(name="128 KiB", size=128 * KIB, calls=256 * MIB // (128 * KIB)),
            Test(name="1 MiB", size=MIB, calls=256),
        ]
    return [
        Test(name="1 B", size=1, calls=50_000),
        Test(name="128 KiB", size=128 * KIB, calls=2 * GIB // (128 * KIB)),
        Test(name="1 MiB", size=MIB, calls=2 * GIB // MIB),
    ]


# -- the read loops -------------------------------------------------------


def _run_small(fd: int, calls: int) -> tuple[int, float]:
    """``calls`` 1-byte reads; returns (bytes, seconds)."""
    read = os.read
    n = 0
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        n += len(read(fd, 1))
    t1 = time.perf_counter_ns()
    return n, (t1 - t0) / 1e9


def _run_large(fd: int, buf: mmap.mmap, calls: int) -> tuple[int, float]:
    """``calls`` reads of ``len(buf)`` into the aligned ``buf``; (bytes, seconds)."""
    readv = os.readv
    bufs = [buf]
    n = 0
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        n += readv(fd, bufs)
    t1 = time.perf_counter_ns()
    return n, (t1 - t0) / 1e9


def _run(test: Test, fd: int, bufs: dict[int, mmap.mmap], server: str, rnd: int) -> Sample:
    if test.size == 1:
        n, secs = _run_small(fd, test.calls)
    else:
        n, secs = _run_large(fd, bufs[test.size], test.calls)
    want = test.size * test.calls
    if n != want:
        raise RuntimeError(f"{server}: {test.name}: read {n} bytes, not {want}")
    return Sample(test=test.name, server=server, round=rnd, calls=test.calls, nbytes=n, seconds=secs)


def _check_zeros(server: str, fd: int, buf: mmap.mmap) -> None:
    """One full aligned read, every byte zero (also the first warm-up)."""
    buf[:] = b"\xff" * len(buf)
    n = os.readv(fd, [buf])
    if n != len(buf) or buf[:].count(0) != len(buf):
        raise RuntimeError(f"{server}: did not read {len(buf)} zero bytes (got {n})")


# -- the servers ----------------------------------------------------------


def _pin(pid: int, cpus: set[int]) -> None:
    """Pin every thread of ``pid`` to ``cpus``."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), cpus)


class RawFs:
    """``rawfs.py`` on ``path`` in a child process."""

    def __init__(self, path: Path, log: Path) -> None:
        self.path = path
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(RAWFS), str(self.path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        wait_for(self._ready, START_TIMEOUT, f"rawfs on {self.path}")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"rawfs exited with {self.proc.returncode}: {self.log.read_text()}")
        return is_mounted(self.path)

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL and a lazy unmount past the deadline."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], check=False, capture_output=True)


def _mm_zero(dm: DevfsdMount) -> Path:
    """Load mm into ``dm`` and make its zero node; the node's path."""
    client = dm.client()
    client.modload("mm")
    majors = [maj for name, maj, attached in client.drivers() if name == "mm" and attached]
    if not majors:
        raise RuntimeError("mm loaded but not attached")
    node = dm.path / "zero"
    os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(majors[0], MM_ZERO_MINOR))
    return node


# -- other load -----------------------------------------------------------


class LoadGauge:
    """CPU used by anything but ``pids`` over a span, in CPUs (1.0 = one CPU busy).

    Pinned runs share CPU 0 with whatever else runs there: a test suite
    started beside the benchmark shows up here, and in the printed warning.
    """

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self._t0 = time.monotonic()
        self._busy0 = machine_ticks()[0]
        self._ours0 = sum(proc_ticks(p) for p in pids)

    def other_cpus(self) -> float:
        busy = machine_ticks()[0] - self._busy0
        ours = sum(proc_ticks(p) for p in self.pids) - self._ours0
        secs = time.monotonic() - self._t0
        return max(0, busy - ours) / CLK_TCK / secs if secs > 0 else 0.0


# -- the report -----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    test: str
    server: str
    us_per_call: float
    calls_per_s: float
    gb_per_s: float
    #: devfsd's speed over raw's, median of per-round pairs (devfsd rows).
    vs_raw: float | None = None
    vs_raw_min: float | None = None
    vs_raw_max: float | None = None


def _summarise(tests: list[Test], samples: list[Sample]) -> list[Row]:
    rows: list[Row] = []
    for test in tests:
        by: dict[str, list[Sample]] = {
            s: [x for x in samples if x.test == test.name and x.server == s] for s in SERVERS
        }
        ratios = [r.seconds / d.seconds for r, d in zip(by["rawfs"], by["devfsd"], strict=True)]
        for server in SERVERS:
            secs = statistics.median(x.seconds for x in by[server])
            calls, nbytes = test.calls, test.size * test.calls
            is_devfsd = server == "devfsd"
            rows.append(
                Row(
                    test=test.name,
                    server=server,
                    us_per_call=secs / calls * 1e6,
                    calls_per_s=calls / secs,
                    gb_per_s=nbytes / secs / 1e9,
                    vs_raw=statistics.median(ratios) if is_devfsd else None,
                    vs_raw_min=min(ratios) if is_devfsd else None,
                    vs_raw_max=max(ratios) if is_devfsd else None,
                )
            )
    return rows


def _table(rows: list[Row]) -> str:
    head = (
        f"{'read size':<9}  {'server':<9}  {'µs/call':>8}  {'calls/s':>9}  {'GB/s':>7}  devfsd vs raw pyfuse3"
    )
    lines = [head, "-" * len(head)]
    last = ""
    for r in rows:
        size = r.test if r.test != last else ""
        last = r.test
        vs = ""
        if r.vs_raw is not None:
            vs = f"{r.vs_raw:.3f}  ({r.vs_raw_min:.3f}-{r.vs_raw_max:.3f})"
        lines.append(
            f"{size:<9}  {r.server:<9}  {r.us_per_call:8.2f}  {r.calls_per_s:9.0f}  {r.gb_per_s:7.3f}  {vs}"
        )
    lines.append("")
    lines.append("devfsd vs raw: raw's time / devfsd's time (1.0 = as fast; target >= 0.9);")
    lines.append("median of the per-round pairs, (min-max) over the rounds.")
    return "\n".join(lines)


def _machine() -> dict[str, object]:
    return machine_info(pyfuse3=pyfuse3.__version__, trio=trio.__version__)


def _write_json(
    args: argparse.Namespace, tests: list[Test], samples: list[Sample], rows: list[Row], other: float
) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    label = f"-{args.label}" if args.label else ""
    out = RESULTS_DIR / f"read-{stamp}{'-quick' if args.quick else ''}{label}.json"
    doc = {
        "benchmark": "bench_read",
        "machine": _machine(),
        "options": {"quick": args.quick, "rounds": args.rounds, "pin": args.pin, "label": args.label},
        "other_cpu_load": other,
        "tests": [asdict(t) for t in tests],
        "summary": [asdict(r) for r in rows],
        "samples": [asdict(s) for s in samples],
    }
    out.write_text(json.dumps(doc, indent=2) + "\n")
    return out


# -- main -----------------------------------------------------------------


def _measure(
    args: argparse.Namespace,
    tests: list[Test],
    fds: dict[str, int],
    say: Callable[[str], None],
    gauge_pids: list[int],
) -> tuple[list[Sample], float]:
    bufs = {t.size: mmap.mmap(-1, t.size) for t in tests if t.size > 1}
    try:
        for server, fd in fds.items():
            _check_zeros(server, fd, bufs[max(bufs)])
        say("warming up")
        for test in tests:
            warm = Test(name=test.name, size=test.size, calls=max(1, test.calls // 5))
            for server, fd in fds.items():
                _run(warm, fd, bufs, server, -1)
        samples: list[Sample] = []
        gauge = LoadGauge(gauge_pids)
        for rnd, order in enumerate(rotations(SERVERS, args.rounds)):
            for test in tests:
                for server in order:
                    samples.append(_run(test, fds[server], bufs, server, rnd))
            say(f"round {rnd + 1}/{args.rounds} done")
        return samples, gauge.other_cpus()
    finally:
        for b in bufs.values():
            b.close()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="a short run (fewer calls and rounds)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7, quick 3)")
    p.add_argument(
        "--pin",
        metavar="C:S",
        default=DEFAULT_PIN,
        help=f"pin this process to CPU list C and both servers to S (default {DEFAULT_PIN}: all on"
        " one CPU; 0:1 splits them; 'none' leaves placement to the scheduler)",
    )
    p.add_argument("--no-json", action="store_true", help="do not write bench/results/*.json")
    p.add_argument("--label", default="", help="a word for the JSON file name and record (e.g. a patch)")
    return p


def _cpus(spec: str) -> set[int]:
    return {int(c) for c in spec.split(",") if c}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.rounds is None:
        args.rounds = 3 if args.quick else 7
    tests = _tests(args.quick)

    def say(msg: str) -> None:
        print(f"bench_read: {msg}", file=sys.stderr, flush=True)

    fds: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench_read.") as tmp:
        base = Path(tmp)
        dm = DevfsdMount(base / "devfsd")
        raw = RawFs(base / "raw" / "mnt", base / "raw" / "rawfs.log")
        try:
            dm.start()
            raw.start()
            node = _mm_zero(dm)
            if args.pin != "none":
                client_cpus, server_cpus = (_cpus(x) for x in args.pin.split(":"))
                os.sched_setaffinity(0, client_cpus)
                assert dm.proc is not None and raw.proc is not None
                _pin(dm.proc.pid, server_cpus)
                _pin(raw.proc.pid, server_cpus)
            paths = {"/dev/zero": Path("/dev/zero"), "rawfs": raw.path / "zero", "devfsd": node}
            for server in SERVERS:
                fds[server] = os.open(paths[server], os.O_RDONLY)
            say(f"devfsd on {dm.path}, rawfs on {raw.path}; {args.rounds} rounds")
            assert dm.proc is not None and raw.proc is not None
            samples, other = _measure(args, tests, fds, say, [os.getpid(), dm.proc.pid, raw.proc.pid])
        finally:
            for fd in fds.values():
                os.close(fd)
            try:
                raw.stop()
            finally:
                dm.stop()
    rows = _summarise(tests, samples)
    print(_table(rows))
    print(f"other CPU load during the rounds: {other:.2f} CPUs (pin {args.pin})")
    if other > OTHER_LOAD_WARN:
        print("WARNING: something else was running; the figures are disturbed, run again when idle")
    if not args.no_json:
        out = _write_json(args, tests, samples, rows, other)
        print(f"\nsamples: {out.relative_to(BENCH_DIR.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
