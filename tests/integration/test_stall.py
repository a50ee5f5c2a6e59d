"""Driver code that never yields, behind a real mount: the stall watchdog.

A driver that spins or blocks without an ``await`` holds the daemon's one
thread; no cancel scope reaches it. The watchdog (devfsd/watchdog.py)
interrupts it after ``--entry-timeout``: the caller gets ``ETIMEDOUT``,
the log has the stack, every other node works again and the module still
unloads. See tests/modules/stall, one way of stalling per minor.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devfsd.cdevsw import makedev
from devfsd.testing.mount import DevfsdMount, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

MODS = Path(__file__).resolve().parent.parent / "modules"
LIMIT = 0.5
#: How long an interrupted read may take: the limit, the watchdog's period
#: (a quarter of it) and slack for a loaded machine.
DEADLINE = 10.0


@pytest.fixture(params=["in-process", "isolated"])
def mnt(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DevfsdMount]:
    """stall in process, or in a host of its own (``--isolate``): the
    host's own watchdog interrupts it there."""
    isolate = ["--isolate"] if request.param == "isolated" else []
    with DevfsdMount(tmp_path, modpath=[MODS], args=["--entry-timeout", str(LIMIT), *isolate]) as m:
        c = m.client()
        c.modload("stall")
        maj = {n: mj for n, mj, _ in c.drivers()}["stall"]
        for u in range(4):
            os.mknod(m.path / f"stall{u}", stat.S_IFCHR | 0o666, makedev(maj, u))
        yield m


def bounded(p: Path, data: bytes | None = None, timeout: float = DEADLINE) -> bytes:
    """Read ``p`` (or write ``data`` to it) in a thread; fail, not hang, if
    the daemon stays stuck (the fixture's teardown kills it, which ends the
    call)."""
    got: list[bytes | BaseException] = []

    def call() -> None:
        try:
            with open(p, "rb" if data is None else "wb", buffering=0) as f:
                got.append(f.read(10) if data is None else b"%d" % f.write(data))
        except OSError as exc:
            got.append(exc)

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        pytest.fail(f"{p.name} still blocked after {timeout} s: the watchdog did not interrupt")
    if isinstance(got[0], BaseException):
        raise got[0]
    return got[0]


def read(p: Path) -> bytes:
    return bounded(p)


@pytest.mark.parametrize(("minor", "how"), [(0, "while True: pass"), (1, "time.sleep(3600)")])
def test_a_stalled_entry_point_is_interrupted_with_etimedout(mnt: DevfsdMount, minor: int, how: str) -> None:
    started = time.monotonic()
    with pytest.raises(OSError) as ei:
        read(mnt.path / f"stall{minor}")
    took = time.monotonic() - started
    assert ei.value.errno == errno.ETIMEDOUT
    assert LIMIT * 0.9 <= took < DEADLINE
    assert read(mnt.path / "stall2") == b"fine\n"  # the daemon serves again
    log = mnt.log_text()
    assert "devfsd_modules.stall" in log and "without yielding: interrupted" in log
    assert "stall_read" in log  # the stack shows where
    mnt.client().modunload("stall")


def test_a_stalled_module_thread_dies_and_the_daemon_goes_on(mnt: DevfsdMount) -> None:
    bounded(mnt.path / "stall3", b"go")  # starts a thread that spins after its first await
    wait_for(
        lambda: "thread spinner died" in mnt.log_text(), DEADLINE, "the spinning thread to be interrupted"
    )
    assert read(mnt.path / "stall2") == b"fine\n"
    mnt.client().modunload("stall")


def test_no_stall_no_interruption(mnt: DevfsdMount) -> None:
    for _ in range(200):
        assert read(mnt.path / "stall2") == b"fine\n"
    assert "interrupted" not in mnt.log_text()
