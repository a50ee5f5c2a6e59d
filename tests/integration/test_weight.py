"""What the daemon carries: numpy and randomgen only with crandom, and a
module's import never holds up other FUSE requests."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devfsd.cdevsw import makedev
from devfsd.testing.mount import DevfsdMount, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

MODS = Path(__file__).resolve().parent.parent / "modules"
ROOT = Path(__file__).resolve().parent.parent.parent
#: crandom's, not the daemon's.
HEAVY = ("numpy", "randomgen")


def _mapped(pid: int) -> set[str]:
    """Which of ``HEAVY`` have a shared object mapped in process ``pid``."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {h for h in HEAVY if f"/{h}/" in maps}


def _node(m: DevfsdMount, driver: str, unit: int, name: str) -> Path:
    c = m.client()
    maj = {n: mj for n, mj, _ in c.drivers()}[driver]
    p = m.path / name
    os.mknod(p, stat.S_IFCHR | 0o666, makedev(maj, unit))
    return p


def test_devfsd_imports_no_heavy_library() -> None:
    # Every module of the devfsd package (the daemon, tools, driver API,
    # test kit), imported in a fresh interpreter.
    code = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        import devfsd
        for info in pkgutil.walk_packages(devfsd.__path__, "devfsd."):
            if info.name != "devfsd.__main__":
                importlib.import_module(info.name)
        print(" ".join(sorted({m.split(".")[0] for m in sys.modules} & {"numpy", "randomgen"})))
        """
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "\n"


@pytest.mark.fuse
@pytest.mark.slow
def test_a_daemon_maps_numpy_only_once_crandom_loads(tmp_path: Path) -> None:
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        assert m.proc is not None
        pid = m.proc.pid
        c = m.client()
        c.modload("mm")
        c.modload("tunwg")
        with open(_node(m, "mm", 12, "zero"), "rb", buffering=0) as f:
            assert f.read(2) == b"\0\0"
        assert _mapped(pid) == set()
        c.modload("crandom")
        assert _mapped(pid) == set(HEAVY)  # what the check above would see


@pytest.fixture
def slow_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    d = tmp_path / "slowimport"
    d.mkdir()
    monkeypatch.setenv("DEVFSD_TEST_SLOWIMPORT", str(d))
    try:
        yield d
    finally:
        (d / "go").touch()  # never leave the daemon's import waiting


@pytest.mark.fuse
@pytest.mark.slow
def test_a_modules_import_does_not_hold_up_fuse(tmp_path: Path, slow_dir: Path) -> None:
    with DevfsdMount(tmp_path / "m", modpath=[MODS]) as m:
        c = m.client()
        c.modload("mm")
        zero = _node(m, "mm", 12, "zero")
        errors: list[BaseException] = []

        def load() -> None:
            try:
                m.client().modload("slowimport")
            except BaseException as exc:
                errors.append(exc)

        loader = threading.Thread(target=load)
        loader.start()
        try:
            wait_for((slow_dir / "started").exists, 10, "slowimport's import to start")
            # The import waits for "go"; meanwhile the mount answers.
            answered: list[bytes] = []

            def use() -> None:
                os.stat(zero)
                with open(zero, "rb", buffering=0) as f:
                    answered.append(f.read(3))
                answered.append(b"%d" % len(c.modstat()["modules"]))

            user = threading.Thread(target=use, daemon=True)
            t0 = time.monotonic()
            user.start()
            user.join(5)
            assert answered == [b"\0\0\0", b"1"], "the mount stood still while a module imported"
            assert time.monotonic() - t0 < 5
            assert loader.is_alive()  # still importing
        finally:
            (slow_dir / "go").touch()
            loader.join(30)
        assert not loader.is_alive() and errors == []
        with open(_node(m, "slowimport", 0, "slow0"), "rb", buffering=0) as f:
            assert f.read(10) == b"loaded\n"
