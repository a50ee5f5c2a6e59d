"""Module trust through a real daemon and the real tools (issue 12 point 5, issue 13 points 6 and 9).

- a refused module: ``modload`` says why in one line (path, owner or mode);
- ``modload ./drv`` is the caller's ``./drv``, not the daemon's;
- the RENAME_EXCHANGE race of issue 13 (a user swapping a package directory
  for their own while root loads it) runs no code of theirs;
- the trees a newcomer has: a ``git archive`` extraction (files 0664,
  directories 0775, root's), a clone owned by an ordinary user run as root.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devfsd.control.protocol import Explained
from devfsd.kern import trust
from devfsd.testing.mount import DevfsdMount, run, tool

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MODS = ROOT / "tests" / "modules"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def base() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="devfsd-trust-", dir="/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _module(d: Path, name: str, body: str = "") -> Path:
    pkg = d / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "from devfsd.kern import ModuleClass, ModuleInfo\n"
        f"{body}\n"
        f"MODULE = ModuleInfo(name={name!r}, cls=ModuleClass.MISC)\n"
        "async def modcmd(cmd, props):\n"
        "    return 0\n"
    )
    return pkg


def _not_root_words() -> str:
    return "not root" if trust.devfsd_owner() == 0 else "not root or devfsd's owner"


def test_modload_says_why_code_is_refused(base: Path) -> None:
    mods = base / "mods"
    pkg = _module(mods, "theirs")
    os.chown(pkg / "__init__.py", 65534, 65534)
    with DevfsdMount(base / "d", modpath=[mods]) as m:
        r = run(["modload", "theirs"], env=m.env)
        assert r.returncode == 1
        assert r.stderr.decode() == (
            f"modload: theirs: {pkg}/__init__.py: owned by uid 65534, {_not_root_words()}\n"
        )
        os.chown(pkg / "__init__.py", 0, 0)
        os.chmod(mods, 0o777)
        r = run(["modload", "theirs"], env=m.env)
        assert r.stderr.decode() == f"modload: theirs: {mods}: mode 0777, writable by others\n"
        os.chmod(mods, 0o755)
        r = run(["modload", "theirs"], env=m.env)
        assert (r.returncode, r.stderr) == (0, b"")
        assert run(["modunload", "theirs"], env=m.env).returncode == 0
        os.chmod(mods, 0o777)
        r = run(["modload", "-I", "theirs"], env=m.env)  # isolated: checked before the host too
        assert r.stderr.decode() == f"modload: theirs: {mods}: mode 0777, writable by others\n"
        r = run(["modload", "nosuch"], env=m.env)  # other errors keep NetBSD's form
        assert r.stderr.decode() == "modload: nosuch: No such file or directory\n"


def test_a_relative_path_is_the_callers(base: Path) -> None:
    where = base / "here"
    _module(where, "drva")
    _module(where, "drvb")
    with DevfsdMount(base / "d") as m:
        assert Path(f"/proc/{m.proc.pid}/cwd").resolve() != where  # type: ignore[union-attr]
        r = subprocess.run(
            [tool("modload"), "./drva"],
            cwd=where,
            env=m.env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert (r.returncode, r.stderr) == (0, b"")
        # A client that sends the relative path as it is: the daemon joins it
        # to the caller's directory (/proc/PID/cwd), not its own.
        code = f"from devfsd.control.client import Client; Client({m.control!r}).modload('./drvb', {{}})"
        r = subprocess.run(
            [sys.executable, "-c", code], cwd=where, capture_output=True, timeout=60, check=False
        )
        assert r.returncode == 0, r.stderr
        assert [row["name"] for row in m.client().modstat()["modules"]] == ["drva", "drvb"]


ATTACKER = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
RENAME_EXCHANGE = 2
a, b, stop = (s.encode() for s in sys.argv[1:4])
swaps = 0
deadline = time.monotonic() + 60
while not os.path.exists(stop) and time.monotonic() < deadline:
    if libc.renameat2(-100, a, -100, b, RENAME_EXCHANGE) == 0:
        swaps += 1
print(swaps)
"""


def test_rename_exchange_race_runs_no_foreign_code(base: Path) -> None:
    """Issue 13, point 6: nobody swaps their package with root's while root loads it.

    Before, five tries were enough to run the attacker's code as root. Now
    the module directory, writable by others, fails the rule: every load is
    refused, naming it, and the attacker's code never runs.
    """
    mods = base / "mods"
    mods.mkdir()
    _module(mods, "good")
    pwned = base / "pwned"
    evil = _module(mods, "evil", f"open({str(pwned)!r}, 'w').close()")
    (evil / "__init__.py").write_text((evil / "__init__.py").read_text().replace("'evil'", "'good'"))
    for p in (evil, evil / "__init__.py"):
        os.chown(p, 65534, 65534)
    os.chmod(mods, 0o777)  # no sticky bit: anyone may rename in it
    stop = base / "stop"
    attacker = subprocess.Popen(
        [*NOBODY, os.path.realpath(sys.executable), "-c", ATTACKER, "mods/good", "mods/evil", str(stop)],
        cwd=base,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        with DevfsdMount(base / "d", modpath=[mods]) as m:
            why = f"{mods}: mode 0777, writable by others"
            for _ in range(5):  # five tries were enough before
                r = run(["modload", "good"], env=m.env)
                assert (r.returncode, r.stderr.decode()) == (1, f"modload: good: {why}\n")
            for _ in range(100):
                with pytest.raises(Explained) as ei:
                    m.client().modload("good", {})
                assert (ei.value.errno, ei.value.why) == (errno.EPERM, why)
            assert m.client().modstat()["modules"] == []
        stop.touch()
        out, err = attacker.communicate(timeout=30)
        assert int(out) > 0, err  # the attacker did swap, all along
    finally:
        stop.touch()
        if attacker.poll() is None:
            attacker.kill()
            attacker.wait(10)
    assert not pwned.exists()


#: Not copied from a tree that is not a git checkout (a ``git archive`` tarball).
_UNTRACKED = {".git", ".venv", "__pycache__", "build", "mutants", ".mypy_cache", ".ruff_cache"}
_UNTRACKED |= {".pytest_cache", ".hypothesis"}


def _tracked() -> list[str]:
    """This checkout's tracked files (also in a clone another user owns:
    git refuses such a repository to root without ``safe.directory``), or
    every file of a tree that is no checkout but caches and the venv."""
    argv = ["git", "-c", f"safe.directory={ROOT}", "ls-files", "-z"]
    files = subprocess.run(argv, cwd=ROOT, capture_output=True, check=False, timeout=30)
    if files.returncode == 0:
        return files.stdout.decode().split("\0")
    found = []
    for d, dirs, names in os.walk(ROOT):
        dirs[:] = [x for x in dirs if x not in _UNTRACKED and not x.endswith(".egg-info")]
        found += [os.path.relpath(os.path.join(d, n), ROOT) for n in names]
    return found


def _copy_tree(dst: Path) -> Path:
    """The tracked files of this checkout, as ``git archive | tar -x`` as root leaves them."""
    for rel in _tracked():
        if not rel or not (ROOT / rel).is_file():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / rel, dst / rel)
        os.chmod(dst / rel, 0o775 if os.access(ROOT / rel, os.X_OK) else 0o664)
    for d, _, _ in os.walk(dst):
        os.chmod(d, 0o775)
    return dst


def _modload_from(tree: Path, base: Path, mp: pytest.MonkeyPatch) -> subprocess.CompletedProcess[bytes]:
    """Start the daemon from ``tree``'s code (``PYTHONPATH``), ``modload crandom``."""
    mp.setenv("PYTHONPATH", str(tree))
    with DevfsdMount(base / "d") as m:
        r = run(["modload", "crandom"], env=m.env)
        if r.returncode == 0:  # the tree's own built-in driver, not this checkout's
            assert f"loaded module crandom from {tree}/modules/crandom/__init__.py" in m.log_text()
        return r


def test_git_archive_tree(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = _copy_tree(base / "tree")
    r = _modload_from(tree, base, monkeypatch)
    assert (r.returncode, r.stderr) == (0, b"")


def test_clone_owned_by_a_user_run_as_root(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = _copy_tree(base / "tree")
    subprocess.run(["chown", "-R", "1000:1000", str(tree)], check=True, timeout=30)
    subprocess.run(["chmod", "-R", "go-w", str(tree)], check=True, timeout=30)
    r = _modload_from(tree, base, monkeypatch)
    assert (r.returncode, r.stderr) == (0, b"")
    # Another user's driver in it is not devfsd's owner's: refused, and said why.
    os.chown(tree / "modules" / "crandom" / "crandom.py", 1001, 1001)
    r = _modload_from(tree, base, monkeypatch)
    why = f"{tree}/modules/crandom/crandom.py: owned by uid 1001, not root or devfsd's owner"
    assert r.stderr.decode() == f"modload: crandom: {why}\n"
    # And a group that is not root's, able to write it: refused.
    os.chown(tree / "modules" / "crandom" / "crandom.py", 1000, 1000)
    os.chmod(tree / "modules", 0o775)
    r = _modload_from(tree, base, monkeypatch)
    assert r.stderr.decode() == f"modload: crandom: {tree}/modules: mode 0775, writable by group 1000\n"
