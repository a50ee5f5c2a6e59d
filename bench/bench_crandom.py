"""Benchmark crandom's permutation against random.SystemRandom().shuffle.

Reference numbers, not a test: ``python bench/bench_crandom.py [-n RUNS]``.
Times the driver's own ``permute`` (what one read costs, FUSE aside) on 16
bytes and on 1 MiB (crandom's default ``maxlen`` is 4095 bytes less), and, in the same run and
on the same data, the standard library's CSPRNG shuffle, and prints the
median of several runs of each and their ratio. The target for 1 MiB is
50 ms on the project's 2-core machine.

Short inputs are timed in batches (the median of per-call averages) so the
clock's resolution does not show.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

TARGET_1MIB_MS = 50.0


def median_seconds(fn: Callable[[], object], runs: int, batch: int) -> float:
    """Median over ``runs`` of the mean time of ``batch`` calls of ``fn``.

    Returns:
        Seconds per call.
    """
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        times.append((time.perf_counter() - t0) / batch)
    return statistics.median(times)


def fmt(seconds: float) -> str:
    """``seconds`` in us or ms, 8 wide."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:6.1f} us"
    return f"{seconds * 1e3:6.1f} ms"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table.

    Returns:
        0.
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("-n", "--runs", type=int, default=7, help="runs per measurement (default 7)")
    args = ap.parse_args(argv)

    # Run from anywhere: the driver lives in the project's modules/.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from modules.crandom.crandom import PLAIN_MAX, permute

    sysrandom = random.SystemRandom()
    cases = [
        # size, batch of calls for crandom, batch for SystemRandom
        (16, 2000, 2000),
        (1 << 20, 1, 1),
    ]
    print(f"crandom permute vs random.SystemRandom().shuffle; median of {args.runs} runs")
    print(f"(strings up to {PLAIN_MAX} bytes take the plain path, longer ones the fast one)")
    print()
    print(f"{'size':>9}  {'crandom':>9}  {'SystemRandom':>12}  {'ratio':>7}")
    ours_1mib = 0.0
    for size, batch, sys_batch in cases:
        data = os.urandom(size)
        ours = median_seconds(functools.partial(permute, data), args.runs, batch)
        buf = bytearray(data)
        # SystemRandom on 1 MiB is ~1 s a run: fewer runs keep the total sane.
        sys_runs = args.runs if size <= 4096 else max(3, args.runs // 2)
        theirs = median_seconds(functools.partial(sysrandom.shuffle, buf), sys_runs, sys_batch)
        label = f"{size} B" if size < 1024 else f"{size >> 20} MiB"
        print(f"{label:>9}  {fmt(ours):>9}  {fmt(theirs):>12}  {theirs / ours:6.1f}x")
        if size == 1 << 20:
            ours_1mib = ours
    verdict = "meets" if ours_1mib * 1e3 <= TARGET_1MIB_MS else "MISSES"
    print()
    print(f"1 MiB: {ours_1mib * 1e3:.1f} ms {verdict} the {TARGET_1MIB_MS:.0f} ms target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
