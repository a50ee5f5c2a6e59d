"""Isolated modules (``modload -I``) behind a real mount.

Each module runs in a host process of its own: its nodes work as in
process, and when the host dies (a segfault, ``os._exit``, SIGKILL, a
hang) only its own calls fail, promptly; the daemon and other drivers go
on, the log says what happened, and the module comes back (up to the
restart limit). tests/modules/crashy does the dying.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devfsd.cdevsw import makedev
from devfsd.errors import ControlError
from devfsd.testing.mount import DevfsdMount, run, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

MODS = Path(__file__).resolve().parent.parent / "modules"
#: Bound on every wait for a blocked call or a restart.
WAIT = 20.0


@pytest.fixture
def mnt(tmp_path: Path) -> Iterator[DevfsdMount]:
    # A limit of 2 s: the heartbeat must not strike on a loaded machine.
    args = ["--debug", "--entry-timeout", "2", "--host-restarts", "2"]
    with DevfsdMount(tmp_path, modpath=[MODS], args=args) as m:
        yield m


def node(m: DevfsdMount, driver: str, unit: int, name: str | None = None) -> Path:
    maj = {n: mj for n, mj, _ in m.client().drivers()}[driver]
    p = m.path / (name or f"{driver}{unit}")
    os.mknod(p, stat.S_IFCHR | 0o666, makedev(maj, unit))
    return p


def flags(m: DevfsdMount, name: str) -> str | None:
    for row in m.client().modstat()["modules"]:
        if row["name"] == name:
            return str(row["flags"])
    return None


def call_in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run ``fn`` in a thread; the list gets its result or the exception."""
    out: list[object] = []

    def body() -> None:
        try:
            out.append(fn())
        except Exception as exc:
            out.append(exc)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t, out


def errno_of(fn: Callable[[], object]) -> int:
    with pytest.raises(OSError) as ei:
        fn()
    assert ei.value.errno is not None
    return ei.value.errno


def host_pid(p: Path) -> int:
    with open(p, "rb", buffering=0) as f:
        return int(f.read(32))


# -- nodes work as in process -----------------------------------------------------


def test_mm_isolated(mnt: DevfsdMount) -> None:
    r = run(["modload", "-I", "mm"], env=mnt.env)
    assert (r.returncode, r.stderr) == (0, b"")
    zero, null, full = node(mnt, "mm", 12, "zero"), node(mnt, "mm", 2, "null"), node(mnt, "mm", 11, "full")
    with open(zero, "rb", buffering=0) as f:
        assert f.read(1) == b"\0"
        assert f.read(128 * 1024) == bytes(128 * 1024)
    with open(null, "r+b", buffering=0) as f:
        assert f.write(b"gone") == 4
        assert f.read(10) == b""
    with open(full, "wb", buffering=0) as f:
        assert errno_of(lambda: f.write(b"x")) == errno.ENOSPC
    out = run(["modstat", "mm"], env=mnt.env).stdout.decode()
    assert re.search(r"^mm\s+driver\s+filesys\s+i\s", out, re.M), out


def test_crandom_isolated(mnt: DevfsdMount) -> None:
    mnt.client().modload("crandom", {"maxlen": 64}, isolated=True)
    p = node(mnt, "crandom", 0)
    with open(p, "wb", buffering=0) as f:
        f.write(b"hello world")
    with open(p, "rb", buffering=0) as f:
        assert sorted(f.read(100)) == sorted(b"hello world")
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert sorted(os.read(fd, 100)) == sorted(b"hello world")
        assert errno_of(lambda: os.read(fd, 3)) == errno.EINVAL  # shorter than the string
    finally:
        os.close(fd)
    with open(p, "wb", buffering=0) as f:
        assert errno_of(lambda: f.write(b"x" * 65)) == errno.EFBIG  # maxlen reached the host


def test_blocking_read_woken_by_write(mnt: DevfsdMount) -> None:
    mnt.client().modload("msgq", isolated=True)
    q = node(mnt, "msgq", 0)
    with open(q, "rb", buffering=0) as reader:
        t, got = call_in_thread(lambda: reader.read(10))
        wait_for(lambda: mnt.client().call("status")["sleepers"] >= 1, WAIT, "the reader to block")
        assert got == []
        with open(q, "wb", buffering=0) as w:
            w.write(b"one")
        t.join(WAIT)
    assert got == [b"one"]
    mnt.client().modunload("msgq")


def test_nonblocking_read_and_poll(mnt: DevfsdMount) -> None:
    mnt.client().modload("msgq", isolated=True)
    q = node(mnt, "msgq", 0)
    fd = os.open(q, os.O_RDWR | os.O_NONBLOCK)
    try:
        assert errno_of(lambda: os.read(fd, 10)) == errno.EAGAIN
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        assert poller.poll(0) == []
        t, out = call_in_thread(lambda: poller.poll(WAIT * 1000))
        wait_for(lambda: mnt.client().call("status")["sleepers"] == 0, WAIT, "status")
        with open(q, "wb", buffering=0) as w:
            w.write(b"two")
        t.join(WAIT)
        assert out == [[(fd, select.POLLIN)]]
        assert os.read(fd, 10) == b"two"
    finally:
        os.close(fd)


def test_ioctl_reaches_the_host(mnt: DevfsdMount) -> None:
    import base64
    import struct

    mnt.client().modload("msgq", isolated=True)
    q = node(mnt, "msgq", 0)
    with open(q, "wb", buffering=0) as w:
        w.write(b"a")
        w.write(b"b")
    count = 0x40046D01  # MSGQ_COUNT: _IOR('m', 1, uint32)
    out = mnt.client().call("ioctl", path=str(q), cmd=count, data="")
    assert struct.unpack("<I", base64.b64decode(out)) == (2,)


# -- a host dies ------------------------------------------------------------------


def crash(how: str, m: DevfsdMount) -> None:
    pid = host_pid(node(m, "crashy", 2, "pid") if not (m.path / "pid").exists() else m.path / "pid")
    if how == "sigkill":
        os.kill(pid, signal.SIGKILL)
        return
    with open(m.path / "cmd", "wb", buffering=0) as f:
        f.write(how.encode())  # the host dies under this write: EIO, or no answer at all


@pytest.mark.parametrize(
    ("how", "said"),
    [
        ("segv", "killed by signal 11 (SIGSEGV)"),
        ("exit", "exited with status 3"),
        ("sigkill", "killed by signal 9 (SIGKILL)"),
    ],
)
def test_host_death_costs_only_its_module(mnt: DevfsdMount, how: str, said: str) -> None:
    c = mnt.client()
    c.modload("crashy", isolated=True)
    c.modload("msgq")  # in process: must not notice
    node(mnt, "crashy", 0, "cmd")
    sleeper_node = node(mnt, "crashy", 1)
    q = node(mnt, "msgq", 0)
    old = open(mnt.path / "cmd", "rb", buffering=0)  # noqa: SIM115 - closed below
    # A poller the driver remembered (epoll_ctl polls once: nothing queued,
    # selrecord): the host's death must wake it, and it then sees POLLERR.
    pfd = os.open(sleeper_node, os.O_RDONLY | os.O_NONBLOCK)
    ep = select.epoll()
    try:
        ep.register(pfd, select.EPOLLIN)
        assert ep.poll(0) == []
        assert old.read(10) == b"ok\n"
        with open(sleeper_node, "rb", buffering=0) as s:
            t, out = call_in_thread(lambda: s.read(10))
            wait_for(lambda: c.call("status")["sleepers"] >= 1, WAIT, "the sleeper")
            start = time.monotonic()
            if how == "sigkill":
                crash(how, mnt)
            else:
                assert errno_of(lambda: crash(how, mnt)) == errno.EIO
            t.join(WAIT)
            assert not t.is_alive()
            assert time.monotonic() - start < 5
        assert isinstance(out[0], OSError) and out[0].errno == errno.EIO
        events = ep.poll(WAIT)
        assert events and events[0][0] == pfd and events[0][1] & select.EPOLLERR, events
        # Another driver goes on.
        with open(q, "r+b", buffering=0) as f:
            f.write(b"still")
            assert f.read(10) == b"still"
        # The log says which module, how it died, and (for a crash) where.
        wait_for(lambda: said in mnt.log_text(), WAIT, "the death in the log")
        log = mnt.log_text()
        assert re.search(rf"module crashy: host \d+ {re.escape(said)}", log), log
        if how == "segv":
            assert "Fatal Python error: Segmentation fault" in log
            assert "in segv" in log  # faulthandler's traceback names the function
        # Restarted: a new open works; the file opened before stays dead.
        wait_for(lambda: _reads_ok(mnt.path / "cmd"), WAIT, "the restart")
        assert errno_of(lambda: old.read(10)) == errno.ENXIO
        assert flags(mnt, "crashy") == "i"
    finally:
        old.close()
        ep.close()
        os.close(pfd)


def _reads_ok(p: Path) -> bool:
    try:
        with open(p, "rb", buffering=0) as f:
            return f.read(10) == b"ok\n"
    except OSError:
        return False


def hosts_of(m: DevfsdMount) -> list[int]:
    """The pids of the daemon's module hosts."""
    assert m.proc is not None
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == m.proc.pid and b"devfsd.isolate.host" in cmd:
            out.append(int(pid))
    return out


def test_a_restart_runs_init_with_the_same_properties(mnt: DevfsdMount) -> None:
    mnt.client().modload("crandom", {"maxlen": 64}, isolated=True)
    p = node(mnt, "crandom", 0)
    (pid,) = hosts_of(mnt)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: hosts_of(mnt) not in ([], [pid]), WAIT, "a new host")

    def writes(data: bytes) -> bool:
        try:
            with open(p, "wb", buffering=0) as f:
                return f.write(data) == len(data)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO until the new host's INIT is done
                raise
            return False

    wait_for(lambda: writes(b"x" * 64), WAIT, "the restart")
    with open(p, "wb", buffering=0) as f:
        assert errno_of(lambda: f.write(b"x" * 65)) == errno.EFBIG  # maxlen again


@pytest.mark.parametrize("what", ["child", "orphan"])
@pytest.mark.parametrize("how", ["sigkill", "unload"])
def test_the_hosts_children_end_with_it(mnt: DevfsdMount, how: str, what: str) -> None:
    # A driver that started a process (crashy's "child": sleep 600; its
    # "orphan": a double fork, a grandchild in a session of its own whose
    # parent is gone, holding the host's pipes and shared buffer): when its
    # host dies or its module unloads, the process goes too. The orphan
    # left the host's process group: before the ninth session it outlived
    # the host, unload and restart alike (a host's cgroup now holds it).
    c = mnt.client()
    c.modload("crashy", isolated=True)
    node(mnt, "crashy", 0, "cmd")
    with open(mnt.path / "cmd", "wb", buffering=0) as f:
        f.write(what.encode())
    child = host_pid(node(mnt, "crashy", 3, "child"))
    assert child > 0 and alive(child)
    try:
        if how == "sigkill":
            crash("sigkill", mnt)
        else:
            c.modunload("crashy")
        wait_for(lambda: not alive(child), WAIT, "the host's child to go")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)  # (a failed test leaves no sleep 600)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_an_init_that_never_ends_on_restart_holds_up_nothing_else(mnt: DevfsdMount, tmp_path: Path) -> None:
    # The restart's INIT waits (for ever, but for this file): meanwhile other
    # modules load and unload, and this one unloads, which ends that INIT.
    hang = tmp_path / "hang"
    c = mnt.client()
    c.modload("crashy", {"inithang": str(hang)}, isolated=True)
    node(mnt, "crashy", 0, "cmd")
    pid = host_pid(node(mnt, "crashy", 2, "pid"))
    hang.touch()
    try:
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: f"INIT waits while {hang} exists" in mnt.log_text(), WAIT, "the restart's INIT")
        (new,) = hosts_of(mnt)

        def within(fn: Callable[[], object]) -> list[object]:
            t, out = call_in_thread(fn)
            t.join(WAIT)
            assert not t.is_alive(), "held up by the restart's INIT"
            return out

        assert within(lambda: c.modload("mm")) == [None]
        assert within(lambda: mnt.client().modunload("mm")) == [None]
        assert within(lambda: mnt.client().modunload("crashy")) == [None]
        assert flags(mnt, "crashy") is None
        wait_for(lambda: not Path(f"/proc/{new}").exists(), WAIT, "the restarting host to go")
    finally:
        hang.unlink()


def test_restart_limit_keeps_it_down_until_modload(mnt: DevfsdMount) -> None:
    c = mnt.client()
    c.modload("crashy", isolated=True)
    node(mnt, "crashy", 0, "cmd")
    for _ in range(3):  # --host-restarts 2: the third death in a row is the last
        wait_for(lambda: _reads_ok(mnt.path / "cmd"), WAIT, "the host")
        crash("sigkill", mnt)
        wait_for(lambda: not _reads_ok(mnt.path / "cmd"), WAIT, "the death")
    wait_for(lambda: flags(mnt, "crashy") == "id", WAIT, "modstat to show it down")
    log = mnt.log_text()
    assert "module crashy: 3 deaths in a row: stays down" in log
    # The backoff: 0.1 s before the first restart, doubling for each death in a row.
    for delay, n in (("0.1", 1), ("0.2", 2)):
        assert f"module crashy: restarting in {delay} s (death {n} in a row)" in log
    assert "(death 3 in a row)" not in log
    assert errno_of(lambda: os.open(mnt.path / "cmd", os.O_RDONLY)) == errno.ENXIO
    # A plain modload, as modload(8) and the README's tour have it, starts it
    # afresh isolated as it was, not in the daemon (where its next crash
    # would take every node with it).
    r = run(["modload", "crashy"], env=mnt.env)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    assert _reads_ok(mnt.path / "cmd")
    assert flags(mnt, "crashy") == "i"
    r = run(["modload", "crashy"], env=mnt.env)  # once up, loaded is loaded
    assert (r.returncode, r.stderr) == (1, b"modload: crashy: File exists\n")


def test_init_that_kills_its_host_fails_modload(mnt: DevfsdMount) -> None:
    r = run(["modload", "-I", "-b", "initcrash=true", "crashy"], env=mnt.env)
    assert r.returncode == 1
    assert r.stderr.decode() == "modload: crashy: Owner died\n"  # EOWNERDEAD
    assert flags(mnt, "crashy") is None
    assert [a for n, _, a in mnt.client().drivers() if n == "crashy"] in ([], [False])
    assert "killed by signal 11 (SIGSEGV) during load" in mnt.log_text()
    mnt.client().modload("crashy", isolated=True)  # and nothing was left to get in the way
    assert flags(mnt, "crashy") == "i"


def test_hung_host_times_out_then_is_killed_and_restarted(mnt: DevfsdMount) -> None:
    c = mnt.client()
    c.modload("crashy", isolated=True)
    node(mnt, "crashy", 0, "cmd")
    start = time.monotonic()
    assert errno_of(lambda: crash("stop", mnt)) == errno.ETIMEDOUT
    assert time.monotonic() - start < 10
    wait_for(lambda: "has not answered" in mnt.log_text() and "killed" in mnt.log_text(), WAIT, "the kill")
    wait_for(lambda: _reads_ok(mnt.path / "cmd"), WAIT, "the restart")


def test_a_host_that_stops_halfway_through_a_message_is_timed_out_then_restarted(mnt: DevfsdMount) -> None:
    # hostile's minor 17 writes the first half of a message, then goes on
    # as an honest host: its reply and its heartbeat's answers all fall
    # inside that message's body, so nothing more of it reaches the daemon.
    # Its read gets ETIMEDOUT (1.5 x --entry-timeout), the host is killed
    # (2 x) and restarted; meanwhile an in-process node and another host's
    # answer, each at once.
    c = mnt.client()
    c.modload("hostile", isolated=True)
    (pid,) = hosts_of(mnt)
    c.modload("crashy", isolated=True)
    zero, other = node(mnt, "mm", 12, "zero"), node(mnt, "crashy", 0, "ok")
    half, fast = node(mnt, "hostile", 17, "half"), node(mnt, "hostile", 0, "fast")
    start = time.monotonic()

    def read_half() -> object:
        with open(half, "rb", buffering=0) as f:
            return f.read(64)

    t, out = call_in_thread(read_half)
    with open(zero, "rb", buffering=0) as z, open(other, "rb", buffering=0) as o:
        while t.is_alive() and time.monotonic() - start < WAIT:
            began = time.monotonic()
            assert z.read(1) == b"\0"
            assert o.read(10) == b"ok\n"
            assert time.monotonic() - began < 1.0
    t.join(WAIT)
    assert len(out) == 1 and isinstance(out[0], OSError) and out[0].errno == errno.ETIMEDOUT, out
    assert time.monotonic() - start < 10
    wait_for(lambda: f"host {pid} has not answered" in mnt.log_text(), WAIT, "the kill")
    wait_for(lambda: _fast_ok(fast) and pid not in hosts_of(mnt), WAIT, "the restart")


def _fast_ok(p: Path) -> bool:
    try:
        with open(p, "rb", buffering=0) as f:
            return f.read(10) == b"fast\n"
    except OSError:
        return False


@pytest.mark.parametrize("unit", [18, 19], ids=["fini", "autounload"])
def test_a_host_that_never_answers_its_autounload_holds_up_nothing(tmp_path: Path, unit: int) -> None:
    # hostile's minor 18 makes its FINI never end (19: its AUTOUNLOAD),
    # while its host answers its heartbeat. Autoloaded, it is offered
    # autounload once quiet: its FINI ran under the loader's lock, which
    # nobody could interrupt, and every modload, modunload and autoload of
    # the daemon waited for ever; its AUTOUNLOAD held up the autounload of
    # every other module. Now a host gets 2 x --entry-timeout to answer:
    # past it FINI's host is killed (the module goes), AUTOUNLOAD is a veto.
    args = ["--debug", "--isolate", "--autotime", "0.5", "--entry-timeout", "1"]
    with DevfsdMount(tmp_path, modpath=[MODS], args=args) as m:
        c = m.client()
        c.modload("hostile")  # (its major, for the node; then an autoload)
        p = node(m, "hostile", unit, "arm")
        c.modunload("hostile")
        with open(p, "rb", buffering=0) as f:  # autoloads it
            assert f.read(10) == b"armed\n"
        assert flags(m, "hostile") == "ai"
        (pid,) = hosts_of(m)
        if unit == 18:
            wait_for(lambda: flags(m, "hostile") is None, WAIT, "the autounload")
            assert f"host {pid} did not answer FINI in 2 s: killed" in m.log_text()
            wait_for(lambda: pid not in hosts_of(m), WAIT, "the host to go")
            c.modload("crashy")  # the loader's lock is free
            assert flags(m, "crashy") == "i"
        else:
            with open(node(m, "mm", 12, "zero"), "rb", buffering=0) as f:  # autoloads mm
                assert f.read(1) == b"\0"
            wait_for(lambda: flags(m, "mm") is None, WAIT, "mm's autounload")
            assert flags(m, "hostile") == "ai"  # (it vetoed)


def test_a_caller_whose_host_ignores_its_signal_is_let_go(mnt: DevfsdMount) -> None:
    # hostile's minor 12 sleeps again after every EINTR, and its host
    # answers its heartbeat: the daemon gives up on the interrupted call
    # after 2 * --entry-timeout (4 s), else cat would wait in the kernel for ever.
    # The reader (cat's SIGINT disposition) says when its open is done: until
    # then the open's own call into the host is a sleeper too, and a SIGINT
    # then would end the open, not the read.
    mnt.client().modload("hostile", isolated=True)
    p = node(mnt, "hostile", 12)
    pid = host_pid_of(mnt)
    cat = opened_reader(p)
    try:
        wait_for(lambda: mnt.client().call("status")["sleepers"] >= 1, WAIT, "the read to block")
        cat.send_signal(signal.SIGINT)
        assert cat.wait(WAIT) == -signal.SIGINT
        assert "did not answer an interrupted call in 4 s: given up (EINTR)" in mnt.log_text()
        with open(node(mnt, "hostile", 0, "fast"), "rb", buffering=0) as f:
            assert f.read(10) == b"fast\n"  # the same host goes on
        assert host_pid_of(mnt) == pid
    finally:
        cat.kill()
        cat.wait()
        if cat.stdout is not None:
            cat.stdout.close()


#: A reader that leaves SIGINT fatal (as cat does) and says when its open is done.
_OPEN_THEN_READ = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
fd = os.open(sys.argv[1], os.O_RDONLY)
os.write(1, b"opened\\n")
os.read(fd, 1)
"""


def opened_reader(path: Path) -> subprocess.Popen[bytes]:
    """A process that has opened ``path`` and is reading it (as cat would):
    once this returns, a sleeper of the daemon's is its read, not its open
    (an isolated open is a call into the host, and may sleep too)."""
    p = subprocess.Popen([sys.executable, "-c", _OPEN_THEN_READ, str(path)], stdout=subprocess.PIPE)
    assert p.stdout is not None
    if not (select.select([p.stdout], [], [], WAIT)[0] and p.stdout.readline() == b"opened\n"):
        p.kill()
        p.wait()
        p.stdout.close()
        raise AssertionError(f"{path}: the open did not end")
    return p


def host_pid_of(m: DevfsdMount) -> int:
    (pid,) = hosts_of(m)
    return pid


def test_python_spin_is_ended_by_the_hosts_watchdog(mnt: DevfsdMount) -> None:
    c = mnt.client()
    c.modload("crashy", isolated=True)
    node(mnt, "crashy", 0, "cmd")
    pid = host_pid(node(mnt, "crashy", 2, "pid"))
    start = time.monotonic()
    crash("spin", mnt)  # the write had taken its bytes: it succeeds, as in process
    assert time.monotonic() - start < 10
    assert "(devfsd_modules.crashy) has held the daemon for" in mnt.log_text()
    assert _reads_ok(mnt.path / "cmd")
    assert host_pid(mnt.path / "pid") == pid  # the same host: it recovered


def test_memlimit_caps_the_host(tmp_path: Path) -> None:
    # RLIMIT_AS (no cgroup); a cgroup's limit: test_isolation_confine.
    with DevfsdMount(tmp_path, modpath=[MODS], args=["--debug", "--host-cgroup", "none"]) as mnt:
        c = mnt.client()
        c.modload("crashy", {"memlimit": 600 << 20}, isolated=True)
        node(mnt, "crashy", 0, "cmd")
        pid = host_pid(node(mnt, "crashy", 2, "pid"))
        with open(f"/proc/{pid}/limits") as f:
            assert re.search(r"Max address space\s+629145600\s+629145600", f.read())
        assert errno_of(lambda: crash("hog", mnt)) == errno.EIO  # MemoryError in the driver
        assert "MemoryError" in mnt.log_text()
        assert _reads_ok(mnt.path / "cmd")


def test_memlimit_and_user_as_modload_8_takes_them(mnt: DevfsdMount) -> None:
    """modload(8): a memlimit of 0 or less, or not an integer, is EINVAL; so
    is memlimit, user or caps without -I (in process they would cap or
    confine nothing); user may be a uid. Nothing is loaded by a refusal."""
    for argv in (
        ["-I", "-i", "memlimit=0"],
        ["-I", "-i", "memlimit=-5"],
        ["-I", "-s", "memlimit=1g"],
        ["-I", "-b", "memlimit=true"],
        ["-i", "memlimit=512m"],
        ["-s", "user=nobody"],
        ["-s", "caps=net_raw"],
    ):
        r = run(["modload", *argv, "crashy"], env=mnt.env)
        assert (r.returncode, r.stdout, r.stderr) == (1, b"", b"modload: crashy: Invalid argument\n"), argv
        assert flags(mnt, "crashy") is None, argv
    # modload(8)'s example, by path: a memlimit with -I, which INIT does not see.
    r = run(["modload", "-I", "-i", "memlimit=512m", str(MODS / "crashy")], env=mnt.env)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    with open(f"/proc/{host_pid(node(mnt, 'crashy', 2, 'pid'))}/status") as f:
        assert re.search(r"^Uid:\t0\t", f.read(), re.M)
    assert ok_unload(mnt, "crashy")
    r = run(["modload", "-I", "-s", "user=65534", "crashy"], env=mnt.env)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    with open(f"/proc/{host_pid(mnt.path / 'pid')}/status") as f:
        assert re.search(r"^Uid:\t65534\t65534\t65534\t65534$", f.read(), re.M)


def ok_unload(m: DevfsdMount, name: str) -> bool:
    r = run(["modunload", name], env=m.env)
    return (r.returncode, r.stdout, r.stderr) == (0, b"", b"")


def test_an_isolated_modules_requirements_are_its_hosts(mnt: DevfsdMount) -> None:
    """modstat(8): an isolated module's REQUIRES is ``-``, and what it
    requires is not listed: it loaded privately in its host."""
    r = run(["modload", "-I", "needsmsgq"], env=mnt.env)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    out = run(["modstat"], env=mnt.env).stdout.decode().splitlines()
    assert len(out) == 2, out
    assert re.fullmatch(r"needsmsgq        misc     filesys  i        0 +\d+ -", out[1]), out
    r = run(["modload", "msgq"], env=mnt.env)  # the daemon's own msgq: none was loaded
    assert (r.returncode, r.stderr) == (0, b"")


def test_unload_stops_the_host(mnt: DevfsdMount) -> None:
    c = mnt.client()
    c.modload("crashy", isolated=True)
    pid = host_pid(node(mnt, "crashy", 2, "pid"))
    c.modunload("crashy")
    assert flags(mnt, "crashy") is None
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), WAIT, "the host to go")
    with pytest.raises(ControlError) as ei:
        c.modunload("crashy")
    assert ei.value.errno == errno.ENOENT


def test_daemon_option_isolates_every_module(tmp_path: Path) -> None:
    with DevfsdMount(tmp_path, modpath=[MODS], args=["--isolate"]) as m:
        m.client().modload("mm")
        m.client().modload("msgq")
        assert (flags(m, "mm"), flags(m, "msgq")) == ("i", "i")
        with open(node(m, "mm", 12, "zero"), "rb", buffering=0) as f:
            assert f.read(3) == b"\0\0\0"


def test_what_isolate_loaded_stays_isolated_without_it(tmp_path: Path) -> None:
    """devfsd(8), --isolate: a module it loaded is remembered as isolated, as
    after modload -I, until modunload; a module unloaded meanwhile is not."""
    with DevfsdMount(tmp_path, modpath=[MODS], args=["--isolate"]) as m:
        m.client().modload("mm")
        m.client().modload("msgq")
        m.client().modunload("msgq")
    with DevfsdMount(tmp_path, modpath=[MODS], args=["--reload-modules"]) as m:
        assert flags(m, "mm") == "i"
        m.client().modload("msgq")
        assert flags(m, "msgq") == "-"


def test_modules_conf_minus_i_loads_isolated(tmp_path: Path) -> None:
    conf = tmp_path / "modules.conf"
    conf.write_text("msgq -I\nmm\n")
    os.chmod(conf, 0o644)
    with DevfsdMount(tmp_path, modpath=[MODS], args=["--modules-conf", str(conf)]) as m:
        assert (flags(m, "msgq"), flags(m, "mm")) == ("i", "-")
        q = node(m, "msgq", 0)
        with open(q, "r+b", buffering=0) as f:
            f.write(b"conf")
            assert f.read(10) == b"conf"


def test_isolation_is_remembered(tmp_path: Path) -> None:
    with DevfsdMount(tmp_path, modpath=[MODS], args=["--debug"]) as m:
        m.client().modload("crashy", isolated=True)
        node(m, "crashy", 0, "cmd")
    # Autoload of its node loads it isolated again.
    with DevfsdMount(tmp_path, modpath=[MODS], args=["--debug"]) as m:
        assert _reads_ok(m.path / "cmd")
        assert flags(m, "crashy") == "ai"
    # So does --reload-modules.
    with DevfsdMount(tmp_path, modpath=[MODS], args=["--debug", "--reload-modules"]) as m:
        assert flags(m, "crashy") == "i"


def test_a_refused_load_reply_records_no_driver_name(tmp_path: Path) -> None:
    # hostile's INIT answers LOAD itself (tests/modules/hostile): 500
    # drivers, then a good name before one with a line break. Each fails
    # the modload, and the state directory records neither "j0" nor "ok":
    # the next daemon on it knows only the honest load's name.
    lie = '{"name": "hostile", "cls": 3, "majors": [["ok", 300], ["evil\\nline", 301]]}'
    with DevfsdMount(tmp_path, modpath=[MODS], args=["--debug"]) as m:
        before = m.client().drivers()
        cases: list[tuple[dict[str, str | int | bool], int]] = [
            ({"names": 500}, errno.E2BIG),
            ({"reply": lie}, errno.EINVAL),
        ]
        for props, err in cases:
            with pytest.raises(ControlError) as ei:
                m.client().modload("hostile", props, isolated=True)
            assert ei.value.errno == err
            assert m.client().drivers() == before
            assert flags(m, "hostile") is None
        m.client().modload("hostile", isolated=True)
        with open(node(m, "hostile", 0), "rb", buffering=0) as f:
            assert f.read(64) == b"fast\n"
    with DevfsdMount(tmp_path, modpath=[MODS], args=["--debug"]) as m:
        names = {n for n, _, _ in m.client().drivers()}
        assert "hostile" in names
        assert not names & {"j0", "ok", "evil\nline"}
