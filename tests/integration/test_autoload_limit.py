"""An autoload is part of an open, and bounded as one, behind a real mount.

Opening a node whose driver is not loaded loads its module. An INIT that
never ends (tests/modules/slowinit, loaded with no properties) held the
loader's lock for ever: every later modload, modunload and autoload
waited, and the opener waited in the kernel's FUSE wait, where not even
SIGKILL ends it. Now the autoload is cancelled at its limit
(``AUTOLOAD_FACTOR`` times ``--entry-timeout``) and undone as a cancelled
modload is: the open fails with ``ETIMEDOUT``, nothing of the module is
left (no modstat row, no driver, no host, no cgroup, nothing in the state
directory), the lock is free, and the next open tries again. Openers of
the same driver wait for one autoload and share its outcome; an opener's
signal ends its own open with ``EINTR``, and the load goes on to its end
or limit. Every test runs in process and with ``--isolate``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devfsd.cdevsw import makedev
from devfsd.control.client import Client
from devfsd.specfs import AUTOLOAD_FACTOR
from devfsd.testing.mount import DevfsdMount, wait_for
from tests.integration.test_control_hangup import (
    assert_nothing_remembered,
    attached,
    gone,
    isolated,
    modstat_names,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

MODS = Path(__file__).resolve().parent.parent / "modules"
#: --entry-timeout, small to keep the tests fast; an autoload's limit.
ENTRY = 1.0
LIMIT = AUTOLOAD_FACTOR * ENTRY
#: Bound on every other wait (a tool, a log line, a host's end).
WAIT = 20.0
#: Past the limit, the time to undo the load and answer the open.
SLACK = 3.0
CANCELLED = f"autoload of slowinit cancelled: not loaded within {LIMIT:g} s"
#: Opens its argument; prints the errno's name (or 0) and the seconds open(2) took.
OPENER = """\
import errno, os, sys, time
t = time.monotonic()
try:
    os.close(os.open(sys.argv[1], os.O_RDONLY))
    e = 0
except OSError as x:
    e = x.errno
print(errno.errorcode.get(e, e), time.monotonic() - t)
"""


def daemon(tmp_path: Path, isolate: bool, entry: float) -> DevfsdMount:
    """A daemon with ``--entry-timeout entry`` whose modules run in process,
    or each in a host of its own (``--isolate``; with a memory limit, so a
    cgroup where the machine has one)."""
    args = ["--debug", "--entry-timeout", f"{entry:g}"]
    args += ["--isolate", "--host-memlimit", "300m"] if isolate else []
    return DevfsdMount(tmp_path / "d", modpath=[MODS], args=args)


@pytest.fixture(params=["in-process", "isolated"])
def mnt(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DevfsdMount]:
    with daemon(tmp_path, request.param == "isolated", ENTRY) as m:
        yield m


def client(m: DevfsdMount) -> Client:
    return Client(m.control, timeout=WAIT)


def slowinit_node(m: DevfsdMount, tmp_path: Path) -> Path:
    """A node of slowinit's major, its driver not loaded: opening it autoloads
    slowinit with no properties, whose INIT never ends."""
    c = client(m)
    c.modload("slowinit", {"hold": str(tmp_path / "no-such-file")})  # INIT returns at once
    maj = {n: mj for n, mj, _ in c.drivers()}["slowinit"]
    c.modunload("slowinit")  # the name keeps its major
    node = m.path / "slow"
    os.mknod(node, stat.S_IFCHR | 0o666, makedev(maj, 0))
    return node


@contextlib.contextmanager
def opening(m: DevfsdMount, argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` (which opens a node of ``m``) running; at the end, killed if
    it still runs. One stuck in the kernel's FUSE wait dies only when the
    daemon does: the daemon is stopped then, so no test waits for ever."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield p
    finally:
        if p.poll() is None:
            p.kill()
            try:
                p.wait(WAIT)
            except subprocess.TimeoutExpired:
                m.stop()
                p.wait(WAIT)
        for f in (p.stdout, p.stderr):
            if f is not None:
                f.close()


def opener(m: DevfsdMount, node: Path) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    return opening(m, [sys.executable, "-c", OPENER, str(node)])


def result(p: subprocess.Popen[bytes]) -> tuple[str, float]:
    """The opener's errno name and the seconds its open(2) took."""
    out, err = p.communicate(timeout=WAIT)
    assert (p.returncode, err) == (0, b"")
    name, secs = out.split()
    return name.decode(), float(secs)


def waiting(m: DevfsdMount, openers: int) -> None:
    """Wait until ``openers`` opens wait for the autoload (each a sleeper;
    isolated, the host's LOAD is one more: INIT runs)."""
    n = openers + isolated(m)
    wait_for(lambda: client(m).status()["sleepers"] >= n, WAIT, f"{openers} opener(s) to wait")


def since(m: DevfsdMount, offset: int) -> str:
    return m.log_text()[offset:]


def hosts(log: str) -> list[int]:
    """The process ids of slowinit's hosts started in ``log``."""
    return [int(p) for p in re.findall(r"module slowinit: host (\d+) started", log)]


def timed_out(m: DevfsdMount, node: Path) -> None:
    """One open of ``node``: ``ETIMEDOUT`` at the limit, plus the time to undo."""
    with opener(m, node) as p:
        name, secs = result(p)
    assert name == "ETIMEDOUT"
    assert LIMIT <= secs < LIMIT + SLACK


def test_an_autoload_past_its_limit_fails_the_open_and_leaves_nothing(
    mnt: DevfsdMount, tmp_path: Path
) -> None:
    node = slowinit_node(mnt, tmp_path)
    off = len(mnt.log_text())
    timed_out(mnt, node)
    log = since(mnt, off)
    assert log.count(CANCELLED) == 1
    assert "slowinit" not in modstat_names(mnt)
    assert not attached(mnt, "slowinit")
    if isolated(mnt):
        [pid] = hosts(log)
        assert gone(pid), "the host outlived its cancelled autoload"  # reaped before the open's answer
        cg = re.search(rf"module slowinit: host {pid}: memory limit \d+ bytes by cgroup v\d (\S+)", log)
        if cg is not None:
            assert not Path(cg[1]).exists(), "the host's cgroup outlived it"
    # The loader's lock is free: another module loads, and unloads, at once.
    c = client(mnt)
    t0 = time.monotonic()
    c.modload("msgq")
    c.modunload("msgq")
    assert time.monotonic() - t0 < LIMIT
    # The next open tries again (a new load, a new host), and costs its opener the limit too.
    timed_out(mnt, node)
    log = since(mnt, off)
    assert log.count(CANCELLED) == 2
    if isolated(mnt):
        first, second = hosts(log)
        assert first != second and gone(second)
    assert "slowinit" not in modstat_names(mnt)
    assert_nothing_remembered(mnt)


def test_openers_of_one_driver_share_its_autoload(mnt: DevfsdMount, tmp_path: Path) -> None:
    node = slowinit_node(mnt, tmp_path)
    off = len(mnt.log_text())
    with opener(mnt, node) as a:
        waiting(mnt, 1)
        with opener(mnt, node) as b:
            waiting(mnt, 2)
            results = [result(a), result(b)]
    assert [name for name, _ in results] == ["ETIMEDOUT", "ETIMEDOUT"]
    assert all(secs < LIMIT + SLACK for _, secs in results)
    log = since(mnt, off)
    assert log.count(CANCELLED) == 1  # one load, cancelled once
    if isolated(mnt):
        [pid] = hosts(log)
        assert gone(pid)
    assert client(mnt).status()["sleepers"] == 0


@pytest.mark.parametrize("isolate", [False, True], ids=["in-process", "isolated"])
def test_the_opener_s_signal_ends_its_open_and_not_the_load(tmp_path: Path, isolate: bool) -> None:
    # A limit of 6 s: the signal (seen within 0.4 s) comes well before it.
    entry = 3.0
    cancelled = f"autoload of slowinit cancelled: not loaded within {AUTOLOAD_FACTOR * entry:g} s"
    with daemon(tmp_path, isolate, entry) as m:
        node = slowinit_node(m, tmp_path)
        off = len(m.log_text())
        with opening(m, ["cat", str(node)]) as p:
            waiting(m, 1)
            p.send_signal(signal.SIGINT)
            assert p.wait(WAIT) == -signal.SIGINT
            # Its open ended before the load did: EINTR, then the signal.
            assert cancelled not in since(m, off)
            assert p.stderr is not None and p.stderr.read() == b""
        # Its wait is over; the load goes on to its limit, and is undone then.
        wait_for(lambda: cancelled in since(m, off), AUTOLOAD_FACTOR * entry + SLACK, "the autoload's cancel")
        assert "slowinit" not in modstat_names(m)
        assert client(m).status()["sleepers"] == 0
        client(m).modload("msgq")


@pytest.mark.parametrize("isolate", [False, True], ids=["in-process", "isolated"])
def test_with_no_limit_the_daemon_s_end_still_ends_the_autoload(tmp_path: Path, isolate: bool) -> None:
    # --entry-timeout 0: no entry-point limit, so no autoload limit either;
    # an INIT that never ends then holds the lock until the daemon stops,
    # which cancels it (it used to wait for it, until systemd's SIGKILL).
    with daemon(tmp_path, isolate, 0) as m:
        node = slowinit_node(m, tmp_path)
        off = len(m.log_text())
        with opener(m, node) as p:
            waiting(m, 1)
            assert m.proc is not None
            m.proc.send_signal(signal.SIGTERM)
            assert m.proc.wait(WAIT) == 0
            name, _ = result(p)
        assert name in ("ENXIO", "ENOTCONN")  # woken at the end, or its mount gone first
        log = since(m, off)
        assert "autoload of slowinit cancelled: devfsd is stopping" in log
        assert all(gone(pid) for pid in hosts(log))
