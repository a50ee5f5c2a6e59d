"""Nothing lost: nodes, majors and (when asked) modules survive restarts and kill -9."""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from devfsd.cdevsw import makedev
from devfsd.testing.mount import DevfsdMount, wait_for

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

MODS = Path(__file__).resolve().parent.parent / "modules"


def listing(root: Path) -> dict[str, tuple[int, int, int, int, bytes]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            x = (
                os.getxattr(p, "user.devfsd.minor", follow_symlinks=False)
                if stat.S_ISREG(st.st_mode)
                else b""
            )
            out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_nlink, x)
    return out


def test_nodes_survive_a_clean_restart_and_kill_9(tmp_path: Path) -> None:
    m = DevfsdMount(tmp_path, modpath=[MODS])
    with m:
        d = m.path
        (d / "sub").mkdir()
        os.mknod(d / "sub" / "c", stat.S_IFCHR | 0o640, makedev(420, 7))
        os.chown(d / "sub" / "c", 65534, 65534)
        os.mkfifo(d / "fifo", 0o600)
        os.symlink("sub/c", d / "link")
        os.link(d / "sub" / "c", d / "hard")
        os.mknod(d / "tmp", stat.S_IFCHR | 0o666, makedev(2, 2))
        os.rename(d / "tmp", d / "renamed")
        os.mknod(d / "gone", stat.S_IFCHR | 0o666, makedev(2, 2))
        os.unlink(d / "gone")
        os.chmod(d, 0o751)
        before = listing(d)
        root_mode = os.stat(d).st_mode
    with DevfsdMount(tmp_path, modpath=[MODS]) as m2:
        assert listing(m2.path) == before
        assert os.stat(m2.path).st_mode == root_mode
        assert os.readlink(m2.path / "link") == "sub/c"
        assert m2.proc is not None
        m2.proc.kill()  # no clean shutdown at all
        m2.proc.wait(10)
    with DevfsdMount(tmp_path, modpath=[MODS]) as m3:
        assert listing(m3.path) == before


def test_majors_persist_and_modules_reload_only_when_asked(tmp_path: Path) -> None:
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        c = m.client()
        c.modload("msgq")
        c.modload("crandom", {"oneshot": True})
        msgq_major = {n: mj for n, mj, _ in c.drivers()}["msgq"]
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        assert m.client().modstat()["modules"] == []
        # msgq's dynamic major is remembered: devfs-mknod resolves it unloaded.
        assert {n: mj for n, mj, _ in m.client().drivers()}["msgq"] == msgq_major
    with DevfsdMount(tmp_path, modpath=[MODS], args=["--reload-modules"]) as m:
        rows = {r["name"]: r for r in m.client().modstat()["modules"]}
        assert set(rows) == {"msgq", "crandom"}
        assert {n: mj for n, mj, _ in m.client().drivers()}["msgq"] == msgq_major
        # crandom came back with its property: one permutation per open.
        os.mknod(m.path / "c", stat.S_IFCHR | 0o666, makedev(420, 0))
        (m.path / "c").write_bytes(b"abc")
        assert sorted((m.path / "c").read_bytes()) == sorted(b"abc")
        m.client().modunload("crandom")
    with DevfsdMount(tmp_path, modpath=[MODS], args=["--reload-modules"]) as m:
        assert [r["name"] for r in m.client().modstat()["modules"]] == ["msgq"]


WORKER = textwrap.dedent(
    """
    import os, stat, sys
    root, log = sys.argv[1], sys.argv[2]
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    i = 0
    while i < 100000:
        a, b = f"{root}/n{i}", f"{root}/r{i}"
        os.mknod(a, stat.S_IFCHR | 0o600, os.makedev(420, i % 256))
        os.write(fd, f"mknod {i}\\n".encode())
        if i % 3 == 0:
            os.rename(a, b)
            os.write(fd, f"rename {i}\\n".encode())
        i += 1
    """
)


def test_kill_9_at_random_points_loses_no_completed_call(tmp_path: Path) -> None:
    """Many kill -9s while a process makes and renames nodes: after each
    restart every call that returned is there, and no node is half-made."""
    rng = random.Random(1234)
    log = tmp_path / "ops.log"
    for _round in range(8):
        m = DevfsdMount(tmp_path, modpath=[MODS])
        m.start()
        try:
            # The worker resumes numbering after what the last rounds made.
            work = m.path / f"w{_round}"
            work.mkdir()
            w = subprocess.Popen(
                [sys.executable, "-c", WORKER, str(work), str(log)], stderr=subprocess.DEVNULL
            )
            target = rng.randint(5, 200)
            wait_for(
                lambda w=w, target=target: (
                    (log.exists() and log.read_text().count("\n") >= target) or w.poll() is not None
                ),
                30,
                "the worker to make nodes",
                interval=0.001,
            )
            assert m.proc is not None
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait(10)
            w.wait(10)
        finally:
            m.stop()
        ops = log.read_text().splitlines()
        log.unlink()
        with DevfsdMount(tmp_path, modpath=[MODS]) as m2:
            names = set(os.listdir(m2.path / f"w{_round}"))
            made = {int(op.split()[1]) for op in ops if op.startswith("mknod")}
            moved = {int(op.split()[1]) for op in ops if op.startswith("rename")}
            for i in made:
                want = f"r{i}" if i in moved else None
                if want is not None:
                    assert want in names and f"n{i}" not in names
                else:
                    # Renamed or not, once: the rename may have committed
                    # just before the kill, unlogged.
                    assert (f"n{i}" in names) != (f"r{i}" in names)
            # Nothing beyond the last logged call but possibly that one call.
            extra = {n for n in names if int(n[1:]) not in made}
            assert len(extra) <= 1
            for n in names:
                st = (m2.path / f"w{_round}" / n).lstat()
                assert stat.S_IMODE(st.st_mode) == 0o600 and stat.S_ISREG(st.st_mode)
