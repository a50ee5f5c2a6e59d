"""The state directory through real daemons: one daemon per directory, a
refused database, writes that fail on a full or immutable disk, a rename
just before kill -9, and a module that crashed the daemon quarantined."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import textwrap
from typing import TYPE_CHECKING

import pytest

from devfsd.cdevsw import makedev
from devfsd.state import DB_NAME
from devfsd.testing.mount import DevfsdMount, run, wait_for
from tests.integration.test_state import MODS, listing
from tests.reliability.test_load import daemon_usage

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

AT_FDCWD = -100
RENAME_EXCHANGE = 2


def renameat2(old: Path, new: Path, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(AT_FDCWD, bytes(old), AT_FDCWD, bytes(new), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(old))


def kill_9(m: DevfsdMount) -> None:
    assert m.proc is not None
    m.proc.kill()
    m.proc.wait(10)
    m.stop()


@contextlib.contextmanager
def small_fs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``where``, unmounted at the end."""
    where.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "devfsd-test", str(where)], check=True
    )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def report(what: str, before: tuple[int, int], after: tuple[int, int]) -> None:
    """Print the daemon's (VmRSS kB, fds) around an attack; no descriptor may leak."""
    print(f"\n{what}: daemon (VmRSS kB, fds) before {before}, after {after}")
    assert after[1] <= before[1] + 1, (before, after)


def chattr(flag: str, *paths: Path) -> None:
    subprocess.run(["chattr", flag, *[str(p) for p in paths if p.exists()]], check=True, capture_output=True)


# -- 6 (issue 18): the last change before kill -9 is a rename -----------------------


def test_a_rename_is_committed_before_its_reply(tmp_path: Path) -> None:
    """Each rename is the very last call before kill -9: a rename whose state
    write were skipped (or deferred to the next change) comes back undone."""
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        os.mknod(m.path / "a", stat.S_IFCHR | 0o600, makedev(2, 2))
        (m.path / "d").mkdir()
        os.mknod(m.path / "x", stat.S_IFCHR | 0o600, makedev(2, 3))
        os.mknod(m.path / "y", stat.S_IFIFO | 0o600)
        os.rename(m.path / "a", m.path / "b")
        kill_9(m)
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        assert sorted(os.listdir(m.path)) == ["b", "d", "x", "y"]
        os.rename(m.path / "b", m.path / "d" / "c")  # to another directory
        kill_9(m)
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        assert sorted(os.listdir(m.path)) == ["d", "x", "y"] and os.listdir(m.path / "d") == ["c"]
        os.rename(m.path / "d" / "c", m.path / "x")  # over another node
        kill_9(m)
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        assert sorted(os.listdir(m.path)) == ["d", "x", "y"] and os.listdir(m.path / "d") == []
        assert os.getxattr(m.path / "x", "user.devfsd.minor") == b"2"
        renameat2(m.path / "x", m.path / "y", RENAME_EXCHANGE)
        kill_9(m)
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        assert stat.S_ISFIFO(os.lstat(m.path / "x").st_mode)
        assert os.getxattr(m.path / "y", "user.devfsd.minor") == b"2"


# -- 3: one daemon per state directory ------------------------------------------------


def test_a_second_daemon_on_the_same_state_is_refused(tmp_path: Path) -> None:
    first = DevfsdMount(tmp_path / "one", modpath=[MODS])
    second = DevfsdMount(tmp_path / "two", modpath=[MODS])
    second.state = first.state
    with first:
        os.mknod(first.path / "n", stat.S_IFCHR | 0o600, makedev(2, 2))
        before = listing(first.path)
        usage = daemon_usage(first)
        with pytest.raises(RuntimeError) as ei:
            second.start()
        text = str(ei.value)
        assert "devfsd exited with 1" in text
        assert f"devfsd: {first.state}: in use by another devfsd (pid {first.proc.pid})" in text  # type: ignore[union-attr]
        assert not os.path.ismount(second.path)
        # The first goes on, and its state too.
        assert listing(first.path) == before
        os.mknod(first.path / "m", stat.S_IFCHR | 0o600, makedev(2, 3))
        first.client().ping()
        report("second daemon", usage, daemon_usage(first))
    with DevfsdMount(tmp_path / "one", modpath=[MODS]) as again:
        assert sorted(os.listdir(again.path)) == ["m", "n"]


# -- 4: a database that is not a valid tree -------------------------------------------


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate", "the database is empty (0 bytes)"),
        ("UPDATE entries SET name = x'612f62'", "invalid name"),
        ("UPDATE entries SET name = x'2e2e'", "invalid name"),
        ("UPDATE inodes SET mode = 'abc' WHERE ino != 1", "invalid mode"),
        ("PRAGMA user_version = 7", "schema version 7"),
        # A driver name with a terminal's escape sequences (modstat, mknod -l
        # would print them): refused, and said escaped.
        ("INSERT INTO majors VALUES ('\x1b[2J\x1b[31mred', 300)", "invalid major row '\\x1b[2J\\x1b[31mred'"),
        ("INSERT INTO majors VALUES ('big', 512)", "invalid major row 'big': 512 (major 512 out of range"),
    ],
)
def test_a_damaged_database_is_refused_at_start(tmp_path: Path, damage: str, message: str) -> None:
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        os.mknod(m.path / "n", stat.S_IFCHR | 0o600, makedev(2, 2))
    db = m.state / DB_NAME
    if damage == "truncate":
        os.truncate(db, 0)
    else:
        c = sqlite3.connect(db, isolation_level=None)
        c.execute(damage)
        c.close()
    with pytest.raises(RuntimeError) as ei:
        DevfsdMount(tmp_path, modpath=[MODS]).start()
    assert "devfsd exited with 1" in str(ei.value)
    assert f"devfsd: {m.state}: {DB_NAME}: " in str(ei.value) and message in str(ei.value)
    assert "\x1b" not in str(ei.value)
    assert not os.path.ismount(m.path)


# -- 1: state writes that fail ---------------------------------------------------------


def test_an_immutable_state_fails_calls_with_eio_and_changes_nothing(tmp_path: Path) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("needs chattr")
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        d = m.path
        os.mknod(d / "kept", stat.S_IFCHR | 0o600, makedev(2, 2))
        (d / "dir").mkdir()
        before = listing(d)
        files = [m.state / n for n in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm")]
        try:
            chattr("+i", *files)
        except subprocess.CalledProcessError:
            pytest.skip("chattr +i is not supported here")
        usage = daemon_usage(m)
        try:
            calls: list[Callable[[], object]] = [
                lambda: os.mknod(d / "new", stat.S_IFCHR | 0o600, makedev(2, 2)),
                lambda: os.mkdir(d / "newdir"),
                lambda: os.symlink("kept", d / "l"),
                lambda: os.rename(d / "kept", d / "dir" / "moved"),
                lambda: os.unlink(d / "kept"),
                lambda: os.chmod(d / "kept", 0o644),
                lambda: os.link(d / "kept", d / "hard"),
            ]
            for call in calls:
                with pytest.raises(OSError) as ei:
                    call()
                assert ei.value.errno == errno.EIO
                assert listing(d) == before  # in memory: nothing of the call
            r = run(["modload", "crandom"], env=m.env)
            assert r.returncode == 1 and b"modload: crandom: " in r.stderr, r
            assert m.client().modstat()["modules"] == []  # not loaded: nothing half-done
            assert m.proc is not None and m.proc.poll() is None
            report("immutable state, 7 calls and a modload refused", usage, daemon_usage(m))
        finally:
            chattr("-i", *files)
        os.rename(d / "kept", d / "dir" / "moved")  # writable again: calls work
        after = listing(d)
        log = m.log_text()
        assert "cannot rollback" not in log
        # Logged once for the stretch of failed calls, not once per call.
        assert log.count("the call is undone") == 1 and "state writes succeed again" in log
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        assert listing(m.path) == after


def test_a_full_state_disk_fails_calls_with_enospc(tmp_path: Path) -> None:
    with small_fs(tmp_path / "small", "512k") as small:
        m = DevfsdMount(tmp_path, modpath=[MODS])
        m.state = small / "state"
        with m:
            d = m.path
            os.mknod(d / "first", stat.S_IFCHR | 0o600, makedev(2, 2))
            usage = daemon_usage(m)
            with open(small / "filler", "wb") as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            made = []
            err = None
            for i in range(5000):
                name = f"n{i:04d}" + "x" * 200
                try:
                    os.mknod(d / name, stat.S_IFCHR | 0o600, makedev(2, 2))
                except OSError as exc:
                    err = exc
                    break
                made.append(name)
            assert err is not None and err.errno == errno.ENOSPC, err
            assert not (d / name).exists()
            before = listing(d)
            assert sorted(before) == sorted(["first", *made])
            # The daemon goes on: reads work, every write fails whole.
            with pytest.raises(OSError) as ei:
                os.mkdir(d / ("y" * 200))
            assert ei.value.errno == errno.ENOSPC
            r = run(["modload", "crandom"], env=m.env)
            loaded = [x["name"] for x in m.client().modstat()["modules"]]
            assert (r.returncode, loaded) in ((1, []), (0, ["crandom"])), r
            assert listing(d) == before
            report(f"full state disk, ENOSPC after {len(made)} nodes", usage, daemon_usage(m))
            (small / "filler").unlink()
            os.mknod(d / "later", stat.S_IFCHR | 0o600, makedev(2, 2))
            after = listing(d)
            assert "cannot rollback" not in m.log_text()
        with m:
            assert listing(m.path) == after


def test_a_read_only_state_is_refused_at_start(tmp_path: Path) -> None:
    with small_fs(tmp_path / "small", "1m") as small:
        m = DevfsdMount(tmp_path, modpath=[MODS])
        m.state = small / "state"
        with m:
            os.mknod(m.path / "n", stat.S_IFCHR | 0o600, makedev(2, 2))
        subprocess.run(["mount", "-o", "remount,ro", str(small)], check=True)
        with pytest.raises(RuntimeError) as ei:
            m.start()
        assert f"devfsd: {m.state / 'lock'}: Read-only file system" in str(ei.value)
        assert not os.path.ismount(m.path)
        subprocess.run(["mount", "-o", "remount,rw", str(small)], check=True)
        with m:
            assert os.listdir(m.path) == ["n"]


# -- 5: quarantine --------------------------------------------------------------------

CRASHER = textwrap.dedent(
    '''
    """crasher: segfaults the daemon from a thread INIT starts, when the
    file named by $CRASHER_ARM exists."""
    import ctypes
    import os
    import threading

    from devfsd.cdevsw import Cdevsw, devsw_attach, devsw_detach, nullopen
    from devfsd.kern import ModCmd, ModuleClass, ModuleInfo

    MODULE = ModuleInfo(name="crasher", cls=ModuleClass.DRIVER)
    cdevsw = Cdevsw(d_open=nullopen)
    ARM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "armed")


    async def modcmd(cmd, props):
        if cmd == ModCmd.INIT:
            devsw_attach("crasher", cdevsw)
            if os.path.exists(ARM):
                t = threading.Thread(target=ctypes.string_at, args=(0,))
                t.start()
                t.join()
            if os.path.exists(ARM + "-late"):  # after INIT has returned
                threading.Timer(0.3, ctypes.string_at, args=(0,)).start()
        elif cmd == ModCmd.FINI:
            devsw_detach(cdevsw)
    '''
)


def test_a_module_that_crashed_the_daemon_is_quarantined(tmp_path: Path) -> None:
    mods = tmp_path / "mods"
    (mods / "crasher").mkdir(parents=True)
    (mods / "crasher" / "__init__.py").write_text(CRASHER)
    args = ["--reload-modules"]
    with DevfsdMount(tmp_path, modpath=[mods, MODS], args=args) as m:
        c = m.client()
        c.modload("msgq")
        c.modload("crasher")  # harmless while not armed
    (mods / "crasher" / "armed").touch()
    # The next start reloads it, and it kills the daemon.
    with pytest.raises(RuntimeError) as ei:
        DevfsdMount(tmp_path, modpath=[mods, MODS], args=args).start()
    assert f"exited with -{signal.SIGSEGV}" in str(ei.value)
    # The start after that leaves it out, says so, and serves the rest.
    with DevfsdMount(tmp_path, modpath=[mods, MODS], args=args) as m:
        assert [r["name"] for r in m.client().modstat()["modules"]] == ["msgq"]
        log = m.log_text()
        assert "module crasher (crasher) was loading when devfsd last died: quarantined" in log
        wait_for(lambda m=m: "module crasher is quarantined: not reloaded" in m.log_text(), 5, "the log")
        # A fresh modload of an armed module crashes it again: quarantined again.
        assert m.proc is not None
        run(["modload", "crasher"], env=m.env, timeout=20)
        m.proc.wait(10)
        assert m.proc.returncode == -signal.SIGSEGV
        m.stop()
    (mods / "crasher" / "armed").unlink()
    with DevfsdMount(tmp_path, modpath=[mods, MODS], args=args) as m:
        assert [r["name"] for r in m.client().modstat()["modules"]] == ["msgq"]
        # modunload lifts the quarantine (its row goes) and says nothing.
        r = run(["modunload", "crasher"], env=m.env)
        assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
        r = run(["modunload", "crasher"], env=m.env)
        assert r.returncode == 1 and b"modunload: crasher: No such file or directory" in r.stderr
    with DevfsdMount(tmp_path, modpath=[mods, MODS], args=args) as m:
        assert [r["name"] for r in m.client().modstat()["modules"]] == ["msgq"]
        assert "quarantined" not in m.log_text().split("serving")[-1]
        m.client().modload("crasher")  # loads again once lifted (and disarmed)
    with DevfsdMount(tmp_path, modpath=[mods, MODS], args=args) as m:
        assert sorted(r["name"] for r in m.client().modstat()["modules"]) == ["crasher", "msgq"]


def test_a_crash_just_after_init_returned_is_quarantined_too(tmp_path: Path) -> None:
    mods = tmp_path / "mods"
    (mods / "crasher").mkdir(parents=True)
    (mods / "crasher" / "__init__.py").write_text(CRASHER)
    (mods / "crasher" / "armed-late").touch()
    with DevfsdMount(tmp_path, modpath=[mods, MODS]) as m:
        assert m.proc is not None
        r = run(["modload", "crasher"], env=m.env, timeout=20)
        assert r.returncode == 0, r  # INIT returned; its thread crashes 0.3 s later
        m.proc.wait(10)
        assert m.proc.returncode == -signal.SIGSEGV
        m.stop()
    (mods / "crasher" / "armed-late").unlink()
    with DevfsdMount(tmp_path, modpath=[mods, MODS], args=["--reload-modules"]) as m:
        assert m.client().modstat()["modules"] == []
        assert "module crasher (crasher) was loading when devfsd last died: quarantined" in m.log_text()
        m.client().modload("msgq")
    # A clean stop within the grace leaves no mark: nothing quarantined.
    with DevfsdMount(tmp_path, modpath=[mods, MODS], args=["--reload-modules"]) as m:
        assert [r["name"] for r in m.client().modstat()["modules"]] == ["msgq"]
        assert "was loading when devfsd last died" not in m.log_text().split("devfsd stopped")[-1]
