"""How long a stat(2) on the mount waits while ``modload crandom`` imports numpy, cold.

Reference numbers, not a test. As root::

    python bench/bench_modload_stat.py [-n ROUNDS] [--before TREE]

Each round starts a fresh daemon (so numpy is not yet imported), makes an
mm node, drops the page cache (``/proc/sys/vm/drop_caches``), then runs
``modload crandom`` in a thread while the main thread stat(2)s the node
in a loop, and reports the longest and median stat and the modload time.
With ``--before TREE`` (a checkout of devfsd, e.g. ``git archive`` of an
older commit), rounds alternate between the daemon from ``TREE`` and the
one from this checkout, so the machine's load falls on both alike.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import statistics
import tempfile
import threading
import time
from pathlib import Path

from devfsd.cdevsw import makedev
from devfsd.testing.mount import DevfsdMount


def one_round(base: Path, tree: Path | None) -> tuple[float, float, float, int]:
    """(longest stat, median stat, modload seconds, stats done) for one cold load."""
    env_before = os.environ.get("PYTHONPATH")
    if tree is not None:
        os.environ["PYTHONPATH"] = str(tree)
    try:
        with DevfsdMount(base) as m:
            c = m.client()
            c.modload("mm")
            maj = {n: mj for n, mj, _ in c.drivers()}["mm"]
            node = m.path / "zero"
            os.mknod(node, stat.S_IFCHR | 0o666, makedev(maj, 12))
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
            done = threading.Event()
            took: list[float] = []

            def load() -> None:
                t0 = time.perf_counter()
                try:
                    c.modload("crandom")
                finally:
                    took.append(time.perf_counter() - t0)
                    done.set()

            th = threading.Thread(target=load)
            lat: list[float] = []
            th.start()
            while not done.is_set():
                t0 = time.perf_counter()
                os.stat(node)
                lat.append(time.perf_counter() - t0)
            th.join(60)
            return max(lat), statistics.median(lat), took[0], len(lat)
    finally:
        if env_before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = env_before


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("-n", "--rounds", type=int, default=5)
    ap.add_argument("--before", type=Path, help="a devfsd tree to compare with, rounds interleaved")
    args = ap.parse_args(argv)
    trees: list[tuple[str, Path | None]] = [("this tree", None)]
    if args.before is not None:
        trees.insert(0, ("before", args.before.resolve()))
    results: dict[str, list[tuple[float, float, float, int]]] = {name: [] for name, _ in trees}
    scratch = Path(tempfile.mkdtemp(prefix="bench-modload-"))
    try:
        for i in range(args.rounds):
            for name, tree in trees:
                r = one_round(scratch / f"{i}-{name.replace(' ', '-')}", tree)
                results[name].append(r)
                print(
                    f"round {i} {name:9}: longest stat {r[0] * 1e3:8.1f} ms, median {r[1] * 1e6:7.1f} us,"
                    f" modload {r[2] * 1e3:7.1f} ms, {r[3]} stats",
                    flush=True,
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print()
    for name, rs in results.items():
        longest = statistics.median(r[0] for r in rs) * 1e3
        worst = max(r[0] for r in rs) * 1e3
        load = statistics.median(r[2] for r in rs) * 1e3
        print(
            f"{name:9}: longest stat, median of {len(rs)} rounds {longest:8.1f} ms"
            f" (worst {worst:.1f} ms); modload {load:.1f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
