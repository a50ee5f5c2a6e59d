"""What every benchmark records and repeats: the machine, tool versions, CPU
ticks, and the rotating order of interleaved rounds.

Used by the scripts in ``bench/``; reads ``/proc`` and runs ``--version``
commands, nothing else.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = ["machine_info", "machine_ticks", "proc_ticks", "rotations", "tool_version"]


def tool_version(argv: Sequence[str]) -> str:
    """The first line a ``--version`` command prints (or its error)."""
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except OSError as exc:
        return str(exc)
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else ""


def machine_info(**extra: object) -> dict[str, object]:
    """Date, kernel, CPU count, Python, plus ``extra`` (versions of what ran)."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        **extra,
    }


def proc_ticks(pid: int) -> int:
    """utime + stime of every thread of ``pid``, in clock ticks; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(rest[11]) + int(rest[12])


def machine_ticks() -> tuple[int, int]:
    """(busy, total) ticks of all CPUs since boot, steal counted busy (/proc/stat)."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:9]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def rotations(names: Sequence[str], n: int) -> Iterator[list[str]]:
    """``n`` orders of ``names``, each starting one further: round ``i`` runs
    ``names[i:] + names[:i]``, so no path always goes first."""
    order = list(names)
    for i in range(n):
        k = i % len(order)
        yield order[k:] + order[:k]
