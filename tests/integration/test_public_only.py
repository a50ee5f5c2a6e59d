"""A real daemon on trio's public API only (``-o public_only``, as
``$DEVFSD_PUBLIC_ONLY``): it says so, serves, and keeps the hang limit."""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

import pytest

from devfsd import _trioloop
from devfsd.cdevsw import makedev
from devfsd.testing.mount import DevfsdMount, wait_for

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

MODS = Path(__file__).resolve().parent.parent / "modules"
LIMIT = 0.5


def _node(m: DevfsdMount, driver: str, unit: int) -> Path:
    c = m.client()
    c.modload(driver)
    maj = {n: mj for n, mj, _ in c.drivers()}[driver]
    p = m.path / f"{driver}{unit}"
    os.mknod(p, stat.S_IFCHR | 0o666, makedev(maj, unit))
    return p


def test_public_only_option(tmp_path: Path) -> None:
    args = ["--debug", "--entry-timeout", str(LIMIT), "-o", "public_only"]
    with DevfsdMount(tmp_path, modpath=[MODS], args=args) as m:
        wait_for(lambda: " (trio " in m.log_text(), 10, "the fast-path line in the log")
        assert "fast paths off (trio " in m.log_text()
        assert "): " not in next(x for x in m.log_text().splitlines() if "fast paths" in x)
        # Not passed to FUSE (which would refuse the mount), and serving:
        zero = _node(m, "mm", 12)
        with open(zero, "rb", buffering=0) as f:
            assert f.read(4) == b"\0\0\0\0"
        hang = _node(m, "scopehang", 0)  # hangs inside move_on_after(3600)
        t0 = time.monotonic()
        with pytest.raises(OSError) as ei, open(hang, "rb", buffering=0) as f:
            f.read(10)
        assert ei.value.errno == errno.ETIMEDOUT
        assert LIMIT <= time.monotonic() - t0 < LIMIT + 5
        assert f"driver d_read still running after {LIMIT:g} s: cancelled" in m.log_text()
        assert "in scopehang_read" in m.log_text()


def test_fast_paths_said_on_when_known(tmp_path: Path) -> None:
    with DevfsdMount(tmp_path, modpath=[MODS], args=["--debug"]) as m:
        wait_for(lambda: " (trio " in m.log_text(), 10, "the fast-path line in the log")
        # On unless this run is the public-only one (CI's second pass).
        on = _trioloop.PRIVATE is not None
        line = next(x for x in m.log_text().splitlines() if "fast paths" in x)
        assert f"fast paths {'on' if on else 'off'} (trio " in line
        # Each fast path the daemon installs is named: a daemon that stops
        # calling one of them (or one that stops taking) fails here.
        installed = line.partition("): ")[2]
        assert installed == ("instruments, io wakeups, fuse loop" if on else "")
