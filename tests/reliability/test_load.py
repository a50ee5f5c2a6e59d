"""Load: many sleepers, a big directory, load/unload cycles under readers.

Each test measures rather than times: it compares an operation's median
latency under load with the same operation before it and asserts only a
generous ratio (plus a small absolute floor, so a microsecond baseline
cannot make noise fail the test). The figures go to the ``figures``
fixture (printed; ``$DEVFSD_FIGURES`` collects them for docs/reliability.md).
"""

from __future__ import annotations

import errno
import os
import stat
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from devfsd.cdevsw import makedev
from devfsd.errors import ControlError
from devfsd.testing.mount import DevfsdMount, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

MODS = Path(__file__).resolve().parent.parent / "modules"
SLEEPERS = 1000
#: Sleepers per msgq unit: a write wakes every sleeper on its unit.
PER_UNIT = 20
#: Under load an operation may be this many times slower (median) ...
RATIO = 20.0
#: ... or take this long, whichever is more.
FLOOR = 0.05


@pytest.fixture(params=["in-process", "isolated"])
def isolate(request: pytest.FixtureRequest) -> list[str]:
    """msgq and faulty in process, or each in a host of its own (``--isolate``)."""
    return ["--isolate"] if request.param == "isolated" else []


@pytest.fixture
def mnt(tmp_path: Path, isolate: list[str]) -> Iterator[DevfsdMount]:
    """A mount, in process and isolated: the tests on it run both ways."""
    with DevfsdMount(tmp_path, modpath=[MODS], args=isolate) as m:
        yield m


def median_time(op: Callable[[int], object], n: int) -> float:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        op(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def major_of(m: DevfsdMount, driver: str) -> int:
    return {n: mj for n, mj, _ in m.client().drivers()}[driver]


def daemon_usage(m: DevfsdMount) -> tuple[int, int]:
    """The daemon's (VmRSS in kB, open file descriptors)."""
    assert m.proc is not None
    pid = m.proc.pid
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


class Ops:
    """The "normal" operations timed before and under load."""

    def __init__(self, m: DevfsdMount, tag: str) -> None:
        self.m = m
        self.tag = tag
        self.dir = m.path / tag
        self.dir.mkdir()
        self.fmaj = major_of(m, "faulty")
        self.q = m.path / f"{tag}-q"
        os.mknod(self.q, stat.S_IFCHR | 0o666, makedev(major_of(m, "msgq"), 999))

    def mknod(self, i: int) -> None:
        os.mknod(self.dir / f"n{i}", stat.S_IFCHR | 0o600, makedev(self.fmaj, 1))

    def stat(self, i: int) -> None:
        os.stat(self.dir / f"n{i}")

    def rw(self, i: int) -> None:
        fd = os.open(self.q, os.O_RDWR)
        try:
            os.write(fd, b"x")
            assert os.read(fd, 8) == b"x"
        finally:
            os.close(fd)

    def modload(self, i: int) -> None:
        c = self.m.client()
        c.modunload("faulty")
        c.modload("faulty")

    def measure(self, n: int, modloads: int) -> dict[str, float]:
        """Medians of ``n`` of each, but ``modloads`` modload cycles."""
        times = {name: median_time(getattr(self, name), n) for name in ("mknod", "stat", "rw")}
        return times | {"modload": median_time(self.modload, modloads)}


def test_1000_sleepers_others_keep_normal_speed(
    mnt: DevfsdMount, figures: dict[str, Any], isolate: list[str]
) -> None:
    """Isolated, each modload starts a host (a new Python): 5 of them, not 50."""
    modloads = 5 if isolate else 50
    c = mnt.client()
    c.modload("msgq")
    c.modload("faulty")
    qmaj = major_of(mnt, "msgq")
    units = SLEEPERS // PER_UNIT
    qs = []
    for u in range(units):
        p = mnt.path / f"q{u}"
        os.mknod(p, stat.S_IFCHR | 0o666, makedev(qmaj, u))
        qs.append(p)
    before = Ops(mnt, "before").measure(50, modloads)
    rss0, fds0 = daemon_usage(mnt)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        t0 = time.monotonic()
        for i in range(SLEEPERS):
            procs.append(
                subprocess.Popen(
                    ["dd", f"if={qs[i % units]}", "bs=64", "count=1", "status=none"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
        wait_for(lambda: c.status()["sleepers"] >= SLEEPERS, 120, f"{SLEEPERS} sleepers", 0.1)
        figures["spawn_and_block_1000_s"] = round(time.monotonic() - t0, 2)
        during = Ops(mnt, "during").measure(50, modloads)
        figures["rss_kb_with_1000_sleepers"], figures["fds_with_1000_sleepers"] = daemon_usage(mnt)
        assert c.status()["sleepers"] == SLEEPERS  # nobody woke or died
        # Release them: one message per sleeper; each gets exactly one.
        sent = set()
        for u, p in enumerate(qs):
            fd = os.open(p, os.O_WRONLY)
            try:
                for j in range(PER_UNIT):
                    msg = f"m{u}.{j}".encode()
                    sent.add(msg)
                    os.write(fd, msg)
            finally:
                os.close(fd)
        got = set()
        for pr in procs:
            out, err = pr.communicate(timeout=60)
            assert pr.returncode == 0, err
            got.add(out)
        assert got == sent
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.kill()
                pr.wait()
            # Their pipes too, also when the test failed: 2,000 files left to
            # the garbage collector fail whichever later test it runs in.
            for f in (pr.stdout, pr.stderr):
                if f is not None:
                    f.close()
    wait_for(lambda: c.status()["sleepers"] == 0, 30, "no sleepers")
    wait_for(lambda: daemon_usage(mnt)[1] <= fds0, 30, "fds back")
    rss1, fds1 = daemon_usage(mnt)
    figures.update(
        {f"{k}_ms_before": round(v * 1e3, 3) for k, v in before.items()}
        | {f"{k}_ms_1000_sleepers": round(v * 1e3, 3) for k, v in during.items()}
        | {"rss_kb_before": rss0, "rss_kb_after": rss1, "fds_before": fds0, "fds_after": fds1}
    )
    for k in before:
        assert during[k] < max(RATIO * before[k], FLOOR), (k, before[k], during[k])
    assert fds1 <= fds0


def test_10000_nodes_in_one_directory(tmp_path: Path, figures: dict[str, Any]) -> None:
    """In process only: the nodes are the daemon's (mknod, readdir, lookup,
    stat); faulty is loaded for its major and never called."""
    with DevfsdMount(tmp_path, modpath=[MODS]) as mnt:
        nodes_in_one_directory(mnt, figures)


def nodes_in_one_directory(mnt: DevfsdMount, figures: dict[str, Any]) -> None:
    mnt.client().modload("faulty")
    maj = major_of(mnt, "faulty")
    small, big = mnt.path / "small", mnt.path / "big"
    small.mkdir()
    big.mkdir()
    for i in range(10):
        os.mknod(small / f"n{i}", stat.S_IFCHR | 0o600, makedev(maj, 1))
    t0 = time.monotonic()
    for i in range(10_000):
        os.mknod(big / f"n{i}", stat.S_IFCHR | 0o600, makedev(maj, 1))
    figures["mknod_10000_s"] = round(time.monotonic() - t0, 2)

    def listdir_small(i: int) -> None:
        assert len(os.listdir(small)) == 10

    def listdir_big(i: int) -> None:
        assert len(os.listdir(big)) == 10_000

    ls_small = median_time(listdir_small, 20)
    ls_big = median_time(listdir_big, 5)
    # A name not there always reaches the daemon (no cached dentry).
    miss_small = median_time(lambda i: os.path.exists(small / f"missing{i}"), 200)
    miss_big = median_time(lambda i: os.path.exists(big / f"missing{i}"), 200)
    stat_last = median_time(lambda i: os.stat(big / "n9999"), 50)
    stat_small = median_time(lambda i: os.stat(small / "n9"), 50)
    figures.update(
        {
            "listdir_10_ms": round(ls_small * 1e3, 3),
            "listdir_10000_ms": round(ls_big * 1e3, 3),
            "listdir_us_per_entry_10": round(ls_small / 10 * 1e6, 2),
            "listdir_us_per_entry_10000": round(ls_big / 10_000 * 1e6, 2),
            "lookup_miss_10_ms": round(miss_small * 1e3, 3),
            "lookup_miss_10000_ms": round(miss_big * 1e3, 3),
            "stat_last_of_10000_ms": round(stat_last * 1e3, 3),
            "stat_last_of_10_ms": round(stat_small * 1e3, 3),
        }
    )
    # readdir is linear (per entry no dearer than in a tiny directory);
    # lookup does not depend on the directory's size.
    assert ls_big / 10_000 < max(RATIO * ls_small / 10, 1e-4)
    assert miss_big < max(RATIO * miss_small, FLOOR)
    assert stat_last < max(RATIO * stat_small, FLOOR)


HAMMER = """
import errno, os, sys, time
path, stop = sys.argv[1], sys.argv[2]
ok = bad = 0
while not os.path.exists(stop):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        bad += 1
        continue
    try:
        while not os.path.exists(stop):
            os.read(fd, 16)
            ok += 1
    except OSError as e:
        assert e.errno == errno.ENXIO, e
        bad += 1
    finally:
        os.close(fd)
print(ok, bad)
"""


def test_100_load_unload_cycles_under_readers(
    mnt: DevfsdMount, tmp_path: Path, figures: dict[str, Any], isolate: list[str]
) -> None:
    """100 cycles in process; isolated, each load starts a host (a new
    Python), so 20."""
    cycles = 20 if isolate else 100
    c = mnt.client()
    c.modload("faulty")
    maj = major_of(mnt, "faulty")
    node = mnt.path / "f"
    os.mknod(node, stat.S_IFCHR | 0o666, makedev(maj, 1))
    # Warm up (imports, caches), then measure the starting level.
    for _ in range(3):
        c.modunload("faulty")
        c.modload("faulty")
    rss0, fds0 = daemon_usage(mnt)
    stop = tmp_path / "stop"
    readers = [
        subprocess.Popen([sys.executable, "-c", HAMMER, str(node), str(stop)], stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    try:
        wait_for(lambda: c.status()["open_files"] >= len(readers), 30, "readers hammering")
        t0 = time.monotonic()
        for _ in range(cycles):
            c.modunload("faulty")
            try:
                c.modload("faulty")
            except ControlError as exc:  # a reader's open autoloaded it first
                if exc.errno != errno.EEXIST:
                    raise
        figures[f"cycles_{cycles}_s"] = round(time.monotonic() - t0, 2)
        stop.touch()
        counts = []
        for r in readers:
            out, _ = r.communicate(timeout=60)
            assert r.returncode == 0
            counts.append([int(x) for x in out.split()])
    finally:
        stop.touch()
        for r in readers:
            if r.poll() is None:
                r.kill()
                r.wait()
    figures["reader_reads_ok_enxio"] = counts
    wait_for(lambda: daemon_usage(mnt)[1] <= fds0, 30, "daemon fds back to start")
    rss1, fds1 = daemon_usage(mnt)
    figures.update({"rss_kb_before": rss0, "rss_kb_after": rss1, "fds_before": fds0, "fds_after": fds1})
    assert all(ok > 0 for ok, _ in counts)
    assert fds1 <= fds0
    assert rss1 <= rss0 + max(8 * 1024, rss0 // 10)
    c.ping()
