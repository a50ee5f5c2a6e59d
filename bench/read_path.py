"""Where a READ's time goes in devfsd, in process, step by step.

``python bench/read_path.py [--number N]``

No mount: builds the ``DevFs``/``SpecFs`` pair the daemon builds, attaches
``mm``, makes and opens its zero node, and times with ``timeit`` (best of
five, CPU 0) the whole READ handler against rawfs's (``rawfs.py``), then
each step of devfsd's chain on its own. A handler is timed to completion
by ``coroutine.send(None)`` (none of them sleeps), so each handler row
carries the same driving cost, shown on its own first. All of it runs
inside one trio task (``trio.run``), since entry points ask trio for the
current task (the time limit, ``devfsd.cdevsw._wait``).

Behind a mount the same work costs more (caches are cold after the
kernel's part of the round trip): ``bench_read.py`` measures that. This
script says which lines the difference is made of; run it before and
after a change to the read path (``PYTHONPATH=/path/to/patched/tree``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import stat
import sys
import timeit
import types
import typing
from pathlib import Path
from typing import Final

import pyfuse3
import trio

from devfsd.cdevsw import devsw_attach, major, makedev, minor
from devfsd.cdevsw._uio import UIO_READ, Uio
from devfsd.fs import DevFs
from devfsd.specfs import SpecFs

REPO: Final = Path(__file__).resolve().parent.parent
MM_ZERO: Final = 12


def _drive(coro: typing.Coroutine[object, None, object]) -> object:
    """Run a coroutine that never sleeps; its result."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("the handler slept")


async def _nothing() -> None:
    return None


def _setup() -> dict[str, object]:
    sys.path.insert(0, str(REPO))
    mm = importlib.import_module("modules.mm.mm")
    rawfs = importlib.import_module("rawfs")  # beside this script
    devsw_attach("mm", mm.mm_cdevsw)
    spec = SpecFs(None)
    fs = DevFs(spec)
    node = fs.table.mknod(pyfuse3.ROOT_INODE, b"zero", stat.S_IFCHR | 0o666, makedev(2, MM_ZERO), 0, 0, 0)
    ctx = types.SimpleNamespace(pid=os.getpid(), uid=0, gid=0, umask=0)
    info = _drive(fs.open(node.inode, os.O_RDONLY, ctx))  # type: ignore[arg-type]
    assert isinstance(info, pyfuse3.FileInfo)
    fh = info.fh
    fp = fs.files[fh][0]
    return {
        "_drive": _drive,
        "_nothing": _nothing,
        "raw": rawfs.RawFs(),
        "fs": fs,
        "spec": spec,
        "fh": fh,
        "fp": fp,
        "dev": fp.dev,
        "mm_read": mm.mm_read,
        "zero": mm._zero,
        "Uio": Uio,
        "UIO_READ": UIO_READ,
        "major": major,
        "minor": minor,
        "cast": typing.cast,
        "b": b"",
    }


#: (what, statement): the chain from the outside in. "+" rows repeat the
#: row above and add one step (a uio is used up by its first uiomove).
STEPS: Final = [
    ("driving a coroutine (in every handler row)", "_drive(_nothing())"),
    ("rawfs.py RawFs.read: the whole handler", "_drive(raw.read(fh, 0, 1))"),
    ("devfsd fs.py DevFs.read: the whole handler", "_drive(fs.read(fh, 0, 1))"),
    ("  specfs.py SpecFs.read", "_drive(spec.read(fp, 1, 0))"),
    ("    SpecFs._live(fp)", "spec._live(fp)"),
    ("      cdevsw._dev.major(dev)", "major(dev)"),
    ("    mm.py mm_read(dev, Uio(...), 0)", "_drive(mm_read(dev, Uio(UIO_READ, 0, 1, fp.lwp, 0), 0))"),
    ("      cdevsw._dev.minor(dev)", "minor(dev)"),
    ("      Uio(UIO_READ, 0, 1, lwp, 0)", "Uio(UIO_READ, 0, 1, fp.lwp, 0)"),
    ("      + .uiomove(zero)", "Uio(UIO_READ, 0, 1, fp.lwp, 0).uiomove(zero)"),
    ("      + .moved()", "u = Uio(UIO_READ, 0, 1, fp.lwp, 0); u.uiomove(zero); u.moved()"),
    ("  typing.cast('bytes', ...)", "cast('bytes', b)"),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--number", type=int, default=200_000, help="calls per timing (default 200000)")
    args = p.parse_args(argv)
    os.sched_setaffinity(0, {0})

    async def run() -> None:
        g = _setup()
        print(f"{'step (1-byte READ on mm zero)':<46} {'ns':>7}")
        for what, stmt in STEPS:
            best = min(timeit.repeat(stmt, number=args.number, repeat=5, globals=g))
            print(f"{what:<46} {best / args.number * 1e9:7.0f}")

    trio.run(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
