"""devfsd's fast paths against trio's public API only: 1-byte reads of mm zero.

``python bench/bench_public.py [--rounds N] [--calls N] [--pin CPUS|none]``

Starts two real daemons side by side (``DevfsdMount``; ``modload mm``;
``mknod zero c 2 12``): one as usual, one with ``-o public_only`` (as
``DEVFSD_PUBLIC_ONLY=1``, or a trio newer than the fast paths know). The
reader and both daemons are pinned to CPU 0 (``--pin``, as ``bench_read.py``
does: unpinned, the samples are bimodal). Each round reads ``--calls``
single bytes from each daemon's node, the order alternating, and the
figure is public's time over fast's per round: the median of those and
their range. Both daemons are stopped and unmounted whatever happens.

Needs root and /dev/fuse.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tree, for bench.*

from bench.bench_read import _mm_zero, _pin, _run_small
from devfsd.testing.mount import DevfsdMount

SERVERS = ("fast", "public")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=9, help="alternations of the daemons (default 9)")
    p.add_argument("--calls", type=int, default=20_000, help="1-byte reads per daemon and round")
    p.add_argument("--pin", default="0", help="CPU list for the reader and both daemons, or none (default 0)")
    args = p.parse_args(argv)
    cpus = None if args.pin == "none" else {int(c) for c in args.pin.split(",")}
    with tempfile.TemporaryDirectory(prefix="bench-public-") as tmp:
        daemons = {
            "fast": DevfsdMount(Path(tmp) / "fast"),
            "public": DevfsdMount(Path(tmp) / "public", args=["-o", "public_only"]),
        }
        fds: dict[str, int] = {}
        try:
            for name, m in daemons.items():
                m.start()
                assert m.proc is not None
                fds[name] = os.open(_mm_zero(m), os.O_RDONLY)
                if cpus is not None:
                    _pin(m.proc.pid, cpus)
            if cpus is not None:
                os.sched_setaffinity(0, cpus)
            for name in SERVERS:  # warm-up
                _run_small(fds[name], args.calls // 4)
            times: dict[str, list[float]] = {s: [] for s in SERVERS}
            for rnd in range(args.rounds):
                order = SERVERS if rnd % 2 == 0 else SERVERS[::-1]
                for name in order:
                    n, secs = _run_small(fds[name], args.calls)
                    if n != args.calls:
                        raise RuntimeError(f"{name}: read {n} bytes, not {args.calls}")
                    times[name].append(secs / args.calls)
                fast, public = times["fast"][-1] * 1e6, times["public"][-1] * 1e6
                print(f"round {rnd}: fast {fast:6.2f} us, public {public:6.2f} us", flush=True)
        finally:
            for fd in fds.values():
                os.close(fd)
            for m in daemons.values():
                m.stop()
    ratios = [pub / fast for fast, pub in zip(times["fast"], times["public"], strict=True)]
    print()
    for name in SERVERS:
        us = statistics.median(times[name]) * 1e6
        print(f"{name:6}: {us:6.2f} us per 1-byte read (median of {args.rounds})")
    print(
        f"public / fast: {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}),"
        " time per read, per-round pairs"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
