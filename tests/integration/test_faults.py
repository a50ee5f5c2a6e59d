"""Driver faults behind a real mount: each harms only its own nodes.

A driver that raises, hangs, or returns the wrong thing gives its caller
``EIO`` (``ETIMEDOUT`` for a hang past ``--entry-timeout``), logs a line
with the traceback, and leaves every other node working and the module
unloadable. See tests/modules/faulty for the bugs, one per minor.
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
from devfsd.errors import ControlError
from devfsd.testing.mount import DevfsdMount, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

MODS = Path(__file__).resolve().parent.parent / "modules"
#: Short enough to test quickly, shorter than faulty's 1 s NAP.
LIMIT = 0.5


@pytest.fixture(params=["in-process", "isolated"])
def mnt(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DevfsdMount]:
    """In process, or every module in a host of its own (``--isolate``)."""
    isolate = ["--isolate"] if request.param == "isolated" else []
    args = ["--debug", *isolate, "--entry-timeout", str(LIMIT)]
    with DevfsdMount(tmp_path, modpath=[MODS], args=args) as m:
        yield m


def nodes(m: DevfsdMount, driver: str, units: range) -> dict[int, Path]:
    c = m.client()
    c.modload(driver)
    maj = {n: mj for n, mj, _ in c.drivers()}[driver]
    out = {}
    for u in units:
        p = m.path / f"{driver}{u}"
        os.mknod(p, stat.S_IFCHR | 0o666, makedev(maj, u))
        out[u] = p
    return out


def read_errno(p: Path) -> int:
    with pytest.raises(OSError) as ei, open(p, "rb", buffering=0) as f:
        f.read(10)
    assert ei.value.errno is not None
    return ei.value.errno


def test_each_fault_hurts_only_its_node(mnt: DevfsdMount) -> None:
    f = nodes(mnt, "faulty", range(7))
    q = nodes(mnt, "msgq", range(1))[0]
    assert read_errno(f[0]) == errno.EIO
    assert read_errno(f[3]) == errno.EIO
    assert read_errno(f[4]) == errno.EIO
    assert read_errno(f[6]) == errno.EIO  # d_open returned garbage
    log = mnt.log_text()
    assert "ZeroDivisionError: a driver bug" in log
    assert "driver d_read returned 42, not None" in log
    assert "TypeError" in log
    assert "driver d_open returned 'garbage', not None" in log
    # Everything else still works: the good minor, another driver, the tree.
    with open(f[1], "rb", buffering=0) as fp:
        assert fp.read(10) == b"fine\n"
    with open(q, "r+b", buffering=0) as fp:
        fp.write(b"hello")
        assert fp.read(10) == b"hello"
    os.mkdir(mnt.path / "still")
    mnt.client().modunload("faulty")
    assert "faulty" not in loaded(mnt)


def test_hang_is_etimedout_and_others_keep_working(mnt: DevfsdMount) -> None:
    f = nodes(mnt, "faulty", range(3))
    q = nodes(mnt, "msgq", range(1))[0]
    got: list[int] = []
    t = threading.Thread(target=lambda: got.append(read_errno(f[2])))
    t0 = time.monotonic()
    t.start()
    try:
        # While the read hangs, other nodes answer.
        with open(q, "r+b", buffering=0) as fp:
            fp.write(b"during")
            assert fp.read(10) == b"during"
        with open(f[1], "rb", buffering=0) as fp:
            assert fp.read(10) == b"fine\n"
    finally:
        t.join(30)
    assert not t.is_alive()
    assert got == [errno.ETIMEDOUT]
    assert time.monotonic() - t0 >= LIMIT
    log = mnt.log_text()
    assert f"driver d_read still running after {LIMIT:g} s: cancelled" in log
    assert "in faulty_read" in log
    mnt.client().modunload("faulty")


def test_sleeping_is_not_hanging(mnt: DevfsdMount) -> None:
    # Minor 5 sleeps on a WaitChannel for 1 s, twice the limit.
    f = nodes(mnt, "faulty", range(5, 6))
    with open(f[5], "rb", buffering=0) as fp:
        assert fp.read(10) == b"slept\n"


def _threads(m: DevfsdMount) -> int:
    """The daemon's threads but trio's workers (a module's import runs in
    one), which name themselves ("Trio thread N", or their job's name):
    the others keep the process's name."""
    pid = _pid(m)
    comm = Path(f"/proc/{pid}/comm").read_text()
    return sum((t / "comm").read_text() == comm for t in Path(f"/proc/{pid}/task").iterdir())


def test_failed_init_leaves_nothing(mnt: DevfsdMount) -> None:
    c = mnt.client()
    # A load first, so that trio's worker thread (the import runs in one)
    # is already in the count; a worker names itself only once it runs.
    c.modload("badinit", {"ok": True})
    c.modunload("badinit")
    threads = _threads(mnt)
    with pytest.raises(ControlError) as ei:
        c.modload("badinit")
    assert ei.value.errno == errno.ENOSPC
    assert "badinit" not in loaded(mnt)
    assert [a for n, _, a in c.drivers() if n == "badinit"] in ([], [False])
    assert os.listdir(mnt.path) == []
    wait_for(lambda: _threads(mnt) == threads, 5, f"the daemon back to {threads} threads")
    c.modload("badinit", {"ok": True})  # and it loads once fixed
    c.modunload("badinit")


def test_unload_while_open_netbsd_rule(mnt: DevfsdMount) -> None:
    q = nodes(mnt, "msgq", range(1))[0]
    f = nodes(mnt, "faulty", range(1, 2))[1]
    c = mnt.client()
    with open(q, "rb", buffering=0), open(f, "r+b", buffering=0) as ff:
        with pytest.raises(ControlError) as ei:
            c.modunload("msgq")  # msgq refuses while open
        assert ei.value.errno == errno.EBUSY
        c.modunload("faulty")  # faulty allows it; its open file is dead
        with pytest.raises(OSError) as oi:
            ff.read(10)
        assert oi.value.errno == errno.ENXIO
        with pytest.raises(OSError) as oi:
            ff.write(b"x")
        assert oi.value.errno == errno.ENXIO
    c.modunload("msgq")
    c.ping()


def _pid(m: DevfsdMount) -> int:
    assert m.proc is not None
    return m.proc.pid


def loaded(m: DevfsdMount) -> list[str]:
    return [str(r["name"]) for r in m.client().modstat()["modules"]]


def test_hang_inside_the_drivers_own_cancel_scope(mnt: DevfsdMount) -> None:
    # tests/modules/scopehang: the read hangs inside trio cancel scopes of
    # the driver's own, which the limit's scope must go under.
    s = nodes(mnt, "scopehang", range(8))
    got: dict[int, tuple[int, float]] = {}

    def hang(unit: int) -> None:
        t0 = time.monotonic()
        e = read_errno(s[unit])
        got[unit] = (e, time.monotonic() - t0)

    threads = [threading.Thread(target=hang, args=(u,)) for u in (0, 1, 3)]
    for t in threads:
        t.start()
    try:
        # Meanwhile: its own timeout, and a 1 s sleep (twice the limit)
        # inside a scope of its own, both answer.
        with open(s[6], "rb", buffering=0) as fp:
            assert fp.read(10) == b"own\n"
        with open(s[7], "rb", buffering=0) as fp:
            assert fp.read(10) == b"slept\n"
    finally:
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert {u: e for u, (e, _) in got.items()} == {0: errno.ETIMEDOUT, 1: errno.ETIMEDOUT, 3: errno.ETIMEDOUT}
    assert got[0][1] >= LIMIT
    assert got[3][1] >= 1.0 + LIMIT  # asleep 1 s first: not counted
    log = mnt.log_text()
    assert log.count(f"driver d_read still running after {LIMIT:g} s: cancelled") == 3
    assert "in scopehang_read" in log
    assert "corrupted" not in log
    mnt.client().modunload("scopehang")
    assert "scopehang" not in loaded(mnt)
