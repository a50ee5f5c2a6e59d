"""What an isolated module's host can reach, and its memory limit (issue 14).

Behind a real mount, with tests/modules/probe in the host trying things
from inside: the host starts with a clean environment, ``/`` as its
working directory, ``no_new_privs``, and no open file of the daemon's but
its socket pair and its stderr pipe; run as ``nobody``
(``-s user=nobody``, root's alone) it cannot open the state database or
connect to the control socket, nor signal or ptrace the daemon, even
where every directory on the way is open to it. ``memlimit`` puts the
host in a memory cgroup of its own where the machine has one: a driver
that allocates past it is OOM-killed alone, reported, restarted, and its
cgroup removed; ``--host-cgroup none`` falls back to ``RLIMIT_AS``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import pwd
import re
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devfsd.cdevsw import makedev
from devfsd.errors import ControlError, DevfsdError
from devfsd.isolate import confine
from devfsd.state import DB_NAME
from devfsd.testing.mount import DevfsdMount, tool, wait_for
from tests.integration.test_isolation import alive, host_pid, node, opened_reader
from tests.nobody import tool_as_nobody

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

MODS = Path(__file__).resolve().parent.parent / "modules"
WAIT = 20.0
NOBODY = pwd.getpwnam("nobody")
MEMBER = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _nobody_runs_devfsd() -> bool:
    """Whether nobody may run this checkout's interpreter and import devfsd
    (not from a checkout under /root, whose 0700 keeps every other user out:
    there a host as nobody cannot start, test_isolate_start's EACCES)."""
    r = subprocess.run([*MEMBER, sys.executable, "-P", "-c", "import devfsd"], cwd="/", capture_output=True)
    return r.returncode == 0


#: For the tests that run a host, or a tool, as nobody.
needs_nobody = pytest.mark.skipif(
    not _nobody_runs_devfsd(), reason="nobody cannot run this checkout's interpreter (under /root?)"
)


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory every user may enter (unlike pytest's 0700 tmp_path):
    only the socket's and the database's own modes keep nobody out."""
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="isosec-") as d:
        os.chmod(d, 0o755)
        yield Path(d)


@pytest.fixture
def mnt(base: Path) -> Iterator[DevfsdMount]:
    with DevfsdMount(base, modpath=[MODS], args=["--debug", "--entry-timeout", "5"]) as m:
        yield m


def probe_node(m: DevfsdMount, unit: int = 0) -> Path:
    p = m.path / f"probe{unit}"
    if not p.exists():
        maj = {n: mj for n, mj, _ in m.client().drivers()}["probe"]
        os.mknod(p, stat.S_IFCHR | 0o666, makedev(maj, unit))
    return p


def ask(m: DevfsdMount, cmd: str) -> str:
    """Run ``cmd`` in the probe's host; its outcome."""
    p = probe_node(m)
    with open(p, "wb", buffering=0) as f:
        f.write(cmd.encode())
    with open(p, "rb", buffering=0) as f:
        return f.read(100).decode()


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in f)}


def open_files(pid: int) -> dict[int, str]:
    d = f"/proc/{pid}/fd"
    out = {}
    for fd in os.listdir(d):
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile
            out[int(fd)] = os.readlink(f"{d}/{fd}")
    return out


_SYS_KCMP = {"x86_64": 312, "aarch64": 272}.get(os.uname().machine)
_KCMP_FILE = 0


def same_file(pid1: int, fd1: int, pid2: int, fd2: int) -> bool:
    """Whether two descriptors are one open file description (kcmp(2))."""
    if _SYS_KCMP is None:
        pytest.skip("kcmp(2)'s number unknown on this machine")
    libc = ctypes.CDLL(None, use_errno=True)
    rv = libc.syscall(_SYS_KCMP, pid1, pid2, _KCMP_FILE, fd1, fd2)
    if rv < 0 and ctypes.get_errno() == errno.EBADF:  # closed meanwhile
        return False
    assert rv >= 0, os.strerror(ctypes.get_errno())
    return bool(rv == 0)


def daemon_pid(m: DevfsdMount) -> int:
    assert m.proc is not None
    return m.proc.pid


# -- what the host starts with ----------------------------------------------------


def test_host_starts_with_its_socket_a_clean_environment_and_no_new_privileges(mnt: DevfsdMount) -> None:
    mnt.client().modload("probe", isolated=True)
    pid = int(ask(mnt, "pid"))
    # As root, it may open the database: what nobody is refused below is the user's doing.
    assert ask(mnt, f"open {mnt.state / DB_NAME}") == "ok"
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if v)
    assert set(env) <= {b"PATH", b"LANG", b"PYTHONPATH", b"DEVFSD_PUBLIC_ONLY"}, env
    assert b"DEVFSD_CONTROL" not in env and b"HOME" not in env
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    assert proc_status(pid)["NoNewPrivs"] == "1"
    # No open file of the daemon's (kcmp: the same open file description),
    # but its stderr pipe and the shared buffer for large reads (a sealed
    # memfd): the socket pair's ends are two sockets.
    mine, theirs = open_files(pid), open_files(daemon_pid(mnt))
    shared = {mine[a] for a in mine for b in theirs if same_file(pid, a, daemon_pid(mnt), b)}
    assert shared <= {mine[2], "/memfd:devfsd-host (deleted)"}, shared
    assert mine[0] == "/dev/null"
    assert mine[2].startswith("pipe:") and mine[1] == mine[2]
    assert "/dev/fuse" not in mine.values()
    assert not any(str(mnt.base) in t for t in mine.values()), mine


@needs_nobody
def test_host_as_nobody_reaches_nothing_of_the_daemons(mnt: DevfsdMount) -> None:
    r = subprocess.run(
        [tool("modload"), "-I", "-s", "user=nobody", "probe"], env=mnt.env, capture_output=True, timeout=60
    )
    assert (r.returncode, r.stderr) == (0, b""), mnt.log_text()
    pid = int(ask(mnt, "pid"))
    st = proc_status(pid)
    assert st["Uid"].split() == [str(NOBODY.pw_uid)] * 4
    assert st["Gid"].split() == [str(NOBODY.pw_gid)] * 4
    assert sorted(int(g) for g in st["Groups"].split()) == sorted(
        set(os.getgrouplist("nobody", NOBODY.pw_gid))
    )
    assert (st["NoNewPrivs"], st["CapEff"], st["CapPrm"]) == ("1", "0" * 16, "0" * 16)
    assert st["State"][0] in "SR"  # serving
    # The daemon's state, its control socket, the daemon itself: out of reach.
    assert ask(mnt, f"open {mnt.state / DB_NAME}") == "EACCES"
    assert ask(mnt, f"connect {mnt.control}") == "EACCES"
    assert ask(mnt, f"kill {daemon_pid(mnt)}") == "EPERM"
    assert ask(mnt, f"ptrace {daemon_pid(mnt)}") == "EPERM"
    assert ask(mnt, "open /etc/shadow") == "EACCES"
    # Its nodes work as ever.
    with open(probe_node(mnt), "rb", buffering=0) as f:
        assert f.read(10) == b"EACCES"
    # A restarted host runs as the same user.
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: ask_ok(mnt) and int(ask(mnt, "pid")) != pid, WAIT, "the restart")
    assert proc_status(int(ask(mnt, "pid")))["Uid"].split() == [str(NOBODY.pw_uid)] * 4


@needs_nobody
def test_host_as_nobody_still_sees_its_callers_signals(mnt: DevfsdMount) -> None:
    """A host run as nobody still ends a sleep when its caller gets a
    signal (the daemon passes it on, INTERRUPT): a reader asleep in the
    host dies of SIGINT within a second."""
    import time

    mnt.client().modload("msgq", {"user": "nobody"}, isolated=True)
    q = mnt.path / "q"
    os.mknod(q, stat.S_IFCHR | 0o666, makedev({n: mj for n, mj, _ in mnt.client().drivers()}["msgq"], 0))
    cat = opened_reader(q)  # (cat's own open may be the sleeper seen)
    try:
        wait_for(lambda: mnt.client().status()["sleepers"] >= 1, WAIT, "the read to block")
        t0 = time.monotonic()
        cat.send_signal(signal.SIGINT)
        assert cat.wait(5) == -signal.SIGINT
        assert time.monotonic() - t0 < 1.0
    finally:
        cat.kill()
        cat.wait()
        if cat.stdout is not None:
            cat.stdout.close()


def test_host_user_must_reach_the_code(mnt: DevfsdMount) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="isosec-") as d:  # 0700, root's
        mod = Path(d) / "mine.py"
        mod.write_text((MODS / "probe" / "__init__.py").read_text())
        with pytest.raises(ControlError) as ei:
            mnt.client().modload(str(mod), {"user": "nobody"}, isolated=True)
        assert ei.value.errno == errno.EACCES, mnt.log_text()
        assert mnt.client().modstat()["modules"] == []
        mnt.client().modload(str(mod), isolated=True)  # root's host reaches it


def test_user_is_roots_alone_and_only_isolated(base: Path) -> None:
    with DevfsdMount(base, modpath=[MODS], args=["--control-group", "65534"]) as m:
        member, env = tool_as_nobody(base / "nobody", "modload")  # nobody may not read the checkout

        def modload(*argv: str) -> tuple[int, str, str]:
            r = subprocess.run(
                [*member, *argv],
                env={**env, "DEVFSD_CONTROL": m.control},
                capture_output=True,
                text=True,
                timeout=60,
            )
            return r.returncode, r.stdout, r.stderr

        assert modload("-I", "-s", "user=nobody", "probe") == (
            1,
            "",
            "modload: probe: Operation not permitted\n",
        )
        assert "may not give property user: root's alone" in m.log_text()
        # -I itself and memlimit are not root's alone (modload(8)).
        assert modload("-I", "-i", "memlimit=300m", "probe") == (0, "", "")
        c = m.client()
        assert [(row["name"], row["flags"]) for row in c.modstat()["modules"]] == [("probe", "i")]
        c.modunload("probe")
        with pytest.raises(ControlError) as ei:
            c.modload("probe", {"user": "nobody"})  # in process: no host to run as anyone
        assert ei.value.errno == errno.EINVAL
        with pytest.raises(ControlError) as ei:
            c.modload("probe", {"user": "no-such-user-here"}, isolated=True)
        assert ei.value.errno == errno.EINVAL
        assert c.modstat()["modules"] == []


# -- module_load from INIT in a host -----------------------------------------------


def test_module_load_from_init_loads_into_the_host(mnt: DevfsdMount) -> None:
    c = mnt.client()
    c.modload("probe", {"load": "msgq"}, isolated=True)
    with open(probe_node(mnt, 1), "rb", buffering=0) as f:
        assert f.read(10) == b"ok"
    # Loaded inside the host, privately: not in the daemon's list, but the
    # majors attached during the INIT are served through the host.
    assert [r["name"] for r in c.modstat()["modules"]] == ["probe"]
    majors = {n: (mj, a) for n, mj, a in c.drivers()}
    assert majors["msgq"][1] is True
    q = mnt.path / "q"
    os.mknod(q, stat.S_IFCHR | 0o666, makedev(majors["msgq"][0], 0))
    with open(q, "r+b", buffering=0) as f:
        f.write(b"in the host")
        assert f.read(20) == b"in the host"
    with pytest.raises(ControlError) as ei:  # the host holds msgq's major
        c.modload("msgq")
    assert ei.value.errno == errno.EEXIST
    c.modunload("probe")
    c.modload("msgq")  # the host gone, the daemon may load its own
    c.modload("probe", {"load": "no_such_module"}, isolated=True)
    with open(probe_node(mnt, 1), "rb", buffering=0) as f:
        assert f.read(10) == b"ENOENT"


# -- memory ---------------------------------------------------------------------------


def _cgroup_line(m: DevfsdMount) -> re.Match[str] | None:
    pattern = r"module probe: host (\d+): memory limit (\d+) bytes by cgroup v(\d) (\S+)"
    return re.search(pattern, m.log_text())


def _memory_cgroups() -> bool:
    got = confine._daemon_dir()
    if isinstance(got, str):
        return False
    confine._remove_daemon_dir(got[0])
    return got[1] == 1 or confine._v2_memory(got[0])


needs_cgroup = pytest.mark.skipif(not _memory_cgroups(), reason="no usable memory cgroup")


def _readable(p: Path) -> bool:
    try:
        with open(p, "rb", buffering=0) as f:
            return f.read(10) == b"ok"
    except OSError:
        return False


@needs_cgroup
def test_driver_past_its_cgroup_limit_dies_alone_and_its_cgroup_goes(mnt: DevfsdMount) -> None:
    c = mnt.client()
    c.modload("probe", {"memlimit": 200 << 20}, isolated=True)
    c.modload("mm", isolated=True)  # another host
    c.modload("msgq")  # in process
    line = _cgroup_line(mnt)
    assert line is not None, mnt.log_text()
    pid, cg = int(line[1]), Path(line[4])
    assert int(ask(mnt, "pid")) == pid
    assert str(pid) in (cg / "cgroup.procs").read_text().split()
    limit = "memory.max" if line[3] == "2" else "memory.limit_in_bytes"
    assert int((cg / limit).read_text()) == 200 << 20
    with open(f"/proc/{pid}/limits") as f:  # the cgroup, not RLIMIT_AS
        assert re.search(r"Max address space\s+unlimited", f.read())
    assert ask(mnt, "eat 1000000") == "ok"
    with pytest.raises(OSError) as ei:
        ask(mnt, f"eat {400 << 20}")
    assert ei.value.errno == errno.EIO
    wait_for(lambda: "by the OOM killer" in mnt.log_text(), WAIT, "the death in the log")
    assert re.search(
        rf"module probe: host {pid} killed by signal 9 \(SIGKILL\) by the OOM killer"
        rf" \(its cgroup's limit: {200 << 20} bytes\)",
        mnt.log_text(),
    ), mnt.log_text()
    wait_for(lambda: not cg.exists(), WAIT, "the dead host's cgroup to go")
    # The others serve on; the module is back, in a cgroup of its own.
    zero = mnt.path / "zero"
    os.mknod(zero, stat.S_IFCHR | 0o666, makedev({n: mj for n, mj, _ in c.drivers()}["mm"], 12))
    with open(zero, "rb", buffering=0) as f:
        assert f.read(4) == b"\0" * 4
    q = mnt.path / "q"
    os.mknod(q, stat.S_IFCHR | 0o666, makedev({n: mj for n, mj, _ in c.drivers()}["msgq"], 0))
    with open(q, "r+b", buffering=0) as f:
        f.write(b"still")
        assert f.read(10) == b"still"
    wait_for(lambda: ask_ok(mnt) and int(ask(mnt, "pid")) != pid, WAIT, "the restart")
    new = int(ask(mnt, "pid"))
    assert str(new) in (cg.parent / f"h{new}" / "cgroup.procs").read_text().split()
    c.modunload("probe")
    wait_for(lambda: not (cg.parent / f"h{new}").exists(), WAIT, "the unloaded host's cgroup to go")
    # mm's host, with no limit, has a cgroup too (what its driver starts
    # dies with it): the daemon's directory goes with that last host.
    assert [p.name for p in cg.parent.glob("h*")] != []
    c.modunload("mm")
    wait_for(lambda: not cg.parent.exists(), WAIT, "the daemon's cgroup directory to go with its last host")


def ask_ok(m: DevfsdMount) -> bool:
    try:
        return ask(m, "pid").isdigit()
    except OSError:
        return False


@pytest.fixture
def own_cgroup() -> Iterator[Path]:
    """A memory cgroup directory of this test's for ``--host-cgroup``, so
    that no other daemon on the machine sweeps what the test's leave."""
    base = Path(confine._candidates()[0]) / f"isosec-test-{os.getpid()}"
    base.mkdir()
    try:
        yield base
    finally:
        for d in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                d.rmdir()
        base.rmdir()


@needs_cgroup
def test_cgroups_of_a_killed_host_and_a_killed_daemon_are_removed(base: Path, own_cgroup: Path) -> None:
    args = ["--debug", "--host-cgroup", str(own_cgroup)]
    with DevfsdMount(base, modpath=[MODS], args=args) as m:
        m.client().modload("probe", {"memlimit": 100 << 20}, isolated=True)
        line = _cgroup_line(m)
        assert line is not None
        pid, cg = int(line[1]), Path(line[4])
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not cg.exists(), WAIT, "the killed host's cgroup to go")
        wait_for(lambda: ask_ok(m), WAIT, "the restart")
        new = int(ask(m, "pid"))
        mine = cg.parent
        assert (mine / f"h{new}").is_dir()
        assert m.proc is not None
        m.proc.kill()  # the daemon: its hosts die with it, their cgroups stay
        m.proc.wait(WAIT)
        wait_for(lambda: not Path(f"/proc/{new}").exists(), WAIT, "the host to die with the daemon")
        assert mine.exists()
    with DevfsdMount(base, modpath=[MODS], args=args) as m:  # a new daemon removes them at start
        assert not mine.exists()
        assert mine.parent == own_cgroup / "devfsd"
        assert f"removed cgroup {mine} of a devfsd that is gone" in m.log_text()


@pytest.mark.parametrize(
    ("where", "why"),
    [("none", "devfsd --host-cgroup none"), ("/nonexistent", "/nonexistent: not a cgroup")],
)
def test_without_cgroups_memlimit_is_rlimit_as(base: Path, where: str, why: str) -> None:
    # The daemon's --host-memlimit, for a module without the property; a
    # --host-cgroup that is no cgroup is no cgroup, said per host (devfsd(8)).
    with DevfsdMount(base, modpath=[MODS], args=["--host-cgroup", where, "--host-memlimit", "300m"]) as m:
        m.client().modload("probe", isolated=True)
        pid = int(ask(m, "pid"))
        assert (
            f"module probe: host {pid}: memory limit {300 << 20} bytes by RLIMIT_AS (no memory cgroup: {why})"
            in (m.log_text())
        )
        with open(f"/proc/{pid}/limits") as f:
            assert re.search(rf"Max address space\s+{300 << 20}\s+{300 << 20}", f.read())
        with pytest.raises(OSError) as ei:  # MemoryError in the driver: EIO, the host lives
            ask(m, f"eat {400 << 20}")
        assert ei.value.errno == errno.EIO
        assert int(ask(m, "pid")) == pid


def test_a_host_without_a_limit_says_its_cgroup_only_with_debug(base: Path) -> None:
    """devfsd(8): the log says what holds a host without a memory limit only
    with -d; --host-cgroup naming no cgroup leaves it its process group."""
    for debug in ([], ["--debug"]):
        with DevfsdMount(base, modpath=[MODS], args=["--host-cgroup", "/nonexistent", *debug]) as m:
            m.client().modload("probe", isolated=True)
            pid = int(ask(m, "pid"))
            said = f"module probe: host {pid}: no cgroup (/nonexistent: not a cgroup): only its"
            assert (said in m.log_text()) == bool(debug), m.log_text()
            assert "memory limit" not in m.log_text()


def _cgroup2_mounts() -> list[str]:
    return [p for p, t, _ in confine._mounts() if t == "cgroup2" and os.access(p, os.W_OK)]


@contextlib.contextmanager
def _own_cgroup2() -> Iterator[Path]:
    """A cgroup2 directory of this test's (what is left in it is killed and removed)."""
    own = Path(_cgroup2_mounts()[0]) / f"isosec-v2-{os.getpid()}"
    own.mkdir()
    try:
        yield own
    finally:
        for d in [*sorted((p for p in own.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)), own]:
            for pid in (d / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            wait_for(lambda d=d: not (d / "cgroup.procs").read_text(), WAIT, f"{d} to empty")
            d.rmdir()


@pytest.mark.skipif(os.geteuid() != 0 or not _cgroup2_mounts(), reason="no cgroup2 hierarchy")
def test_a_cgroup2_hierarchy_holds_what_a_driver_starts_and_it_ends_with_the_host(base: Path) -> None:
    """cgroup v2 (here the hierarchy without the memory controller these
    machines have, where the memory controller is v1's; with it, the limit
    is the cgroup's): the host's cgroup holds the grandchild its driver left
    in a session of its own; killing the host ends it and removes the
    cgroup (``cgroup.kill``); the limit without the memory controller is
    the host's ``RLIMIT_AS``, said with the cgroup it is in."""
    with _own_cgroup2() as own:
        memory = confine._v2_memory(str(own))
        args = ["--debug", "--host-cgroup", str(own), "--host-memlimit", "300m"]
        with DevfsdMount(base, modpath=[MODS], args=args) as m:
            m.client().modload("crashy", isolated=True)
            host = host_pid(node(m, "crashy", 2, "pid"))
            cg = own / "devfsd" / f"d{daemon_pid(m)}" / f"h{host}"
            if memory:
                said = f"module crashy: host {host}: memory limit {300 << 20} bytes by cgroup v2 {cg}"
            else:
                said = (
                    f"module crashy: host {host}: memory limit {300 << 20} bytes by RLIMIT_AS,"
                    f" in cgroup v2 {cg} (no memory controller)"
                )
                with open(f"/proc/{host}/limits") as f:
                    assert re.search(rf"Max address space\s+{300 << 20}\s+{300 << 20}", f.read())
            assert said in m.log_text(), m.log_text()
            with open(node(m, "crashy", 0, "cmd"), "wb", buffering=0) as f:
                f.write(b"orphan")
            child = host_pid(node(m, "crashy", 3, "child"))
            try:
                assert alive(child)
                assert str(child) in (cg / "cgroup.procs").read_text().split()
                with open(f"/proc/{child}/stat") as f:  # a session not the host's: its group is not it
                    assert int(f.read().rsplit(")", 1)[1].split()[3]) != host
                os.kill(host, signal.SIGKILL)
                wait_for(lambda: not alive(child), WAIT, "the driver's grandchild to end with its host")
                wait_for(lambda: not cg.exists(), WAIT, "the killed host's cgroup to go")
                new = own / "devfsd" / f"d{daemon_pid(m)}"
                wait_for(lambda: len(list(new.glob("h*"))) == 1, WAIT, "the restart's cgroup")
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
        assert not (own / "devfsd").exists()  # the daemon's directory went with its last host


# -- the host's own trust check --------------------------------------------------


@needs_nobody
def test_host_as_another_user_trusts_the_daemons_user_not_its_own() -> None:
    """The daemon checks a module's code before it starts a host, and the
    host checks it again as it reads it; as nobody, the host must not take
    code of nobody's for trusted (as the daemon's own user is)."""
    import trio

    from devfsd.isolate import protocol as P
    from devfsd.isolate.hostproc import HostProcess

    async def load(spec: str) -> int:
        h = HostProcess("mine", None, user=confine.resolve_user("nobody"))
        async with trio.open_nursery() as n:
            await h.start(n)
            req = {"spec": spec, "props": {}, "modpath": [], "majors": {}, "daemon_uid": os.geteuid()}
            try:
                with trio.fail_after(WAIT):
                    await h.call(P.Kind.LOAD, P.encode_json(req))
                err = 0
            except DevfsdError as exc:
                err = exc.errno
            h.close()
            await h.reap()
            n.cancel_scope.cancel()
        return err

    with tempfile.TemporaryDirectory(dir="/tmp", prefix="isosec-") as d:
        os.chmod(d, 0o755)
        mod = Path(d) / "mine.py"
        mod.write_text(
            "from devfsd.kern import ModuleInfo\n"
            'MODULE = ModuleInfo(name="mine")\n'
            "async def modcmd(cmd, props):\n"
            "    pass\n"
        )
        os.chmod(mod, 0o644)
        assert trio.run(load, str(mod)) == 0  # root's: loads
        os.chown(mod, NOBODY.pw_uid, NOBODY.pw_gid)
        assert trio.run(load, str(mod)) == errno.EPERM  # nobody's: refused, even by a host as nobody
