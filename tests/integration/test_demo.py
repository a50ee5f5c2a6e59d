"""./demo, the README's first command (issue 12, point 5): the tour, and a last check that checks.

Run with ``DEVFSD_DEMO_SKIP_SETUP=1`` (./setup has run: the suite runs in
its venv) on a mount of its own. Shims on ``PATH`` stand in for what a
fresh Debian lacks (``pgrep``: procps, not installed there) and for an
``umount`` that leaves the daemon running, which the demo must notice.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devfsd.testing.mount import is_mounted, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def work() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="devfsd-demo-", dir="/tmp"))
    (d / "bin").mkdir()
    for name in ("pgrep", "pkill", "ps"):  # procps: a fresh Debian has none of them
        (d / "bin" / name).write_text(f"#!/bin/sh\ntouch {d}/used-{name}\nexit 99\n")
        (d / "bin" / name).chmod(0o755)
    try:
        yield d
    finally:
        if is_mounted(d / "dev"):
            subprocess.run(["fusermount3", "-u", "-z", str(d / "dev")], capture_output=True, timeout=30)
        shutil.rmtree(d, ignore_errors=True)


def _demo(work: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{work}/bin:{os.environ['PATH']}",
        "DEVFSD_DEMO_SKIP_SETUP": "1",
        "DEVFSD_DEMO_MOUNT": str(work / "dev"),
    }
    env.pop("DEVFSD_CONTROL", None)
    return subprocess.run(
        [str(ROOT / "demo")], cwd="/", env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_demo_runs_the_tour(work: Path) -> None:
    r = _demo(work)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^crandom +driver +filesys", r.stdout, re.M)
    m = re.search(r"devfsd \(pid (\d+)\) exited cleanly\.\n\Z", r.stdout)
    assert m is not None, r.stdout[-500:]
    assert not Path(f"/proc/{m[1]}").exists()
    assert not list(work.glob("used-*"))
    assert not is_mounted(work / "dev")


def test_demo_fails_when_the_daemon_lives_on(work: Path) -> None:
    """An umount that reports success but leaves the mount: the last check fails."""
    once = work / "fake-umount-once"
    once.touch()
    (work / "bin" / "umount").write_text(
        f'#!/bin/sh\nif [ -e {once} ]; then rm -f {once}; exit 0; fi\nexec {shutil.which("umount")} "$@"\n'
    )
    (work / "bin" / "umount").chmod(0o755)
    r = _demo(work)
    assert r.returncode == 1
    m = re.search(r"^demo: devfsd \(pid (\d+)\) did not exit\n\Z", r.stderr, re.M)
    assert m is not None, r.stderr[-500:]
    # Its own clean-up unmounted, and the daemon ended then.
    wait_for(lambda: not Path(f"/proc/{m[1]}").exists(), 10, "devfsd to exit after the clean-up")
    assert not is_mounted(work / "dev")
    assert not list(work.glob("used-*"))
