"""An installed devfsd, away from any source tree (issue 12, point 1).

The wheel is built from this tree (``pip wheel``), checked for what it
carries and what it must not, installed into a fresh venv under a
temporary directory and run from ``/``: the README's tour with its
built-in crandom, the man pages where ``man -M PREFIX/share/man`` finds
them, and a third-party driver that is nothing but an installed
distribution declaring the entry point ``devfsd.modules``: ``pip install``
it, ``modload`` it by name.

The venv gets devfsd and the little driver with ``--no-deps``; a ``.pth``
file lends it this venv's site-packages for trio, pyfuse3 and the rest, so
that the test needs no download of them (.ci/run installs the wheel with
its dependencies from the index, in a venv of its own).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

from devfsd.testing.mount import is_mounted, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

ROOT: Final = Path(__file__).resolve().parents[2]

GREETING: Final = b"hello from a pip-installed driver\n"
HELLO_PYPROJECT: Final = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "devfsd-hello"
version = "1.0"

[project.entry-points."devfsd.modules"]
hello = "devfsd_hello"
"""

HELLO_DRIVER: Final = '''\
"""hello: every read is one greeting (a third-party driver, packaged)."""

from devfsd.cdevsw import Cdevsw, devsw_attach, devsw_detach, nullclose, nullopen
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo

from .text import GREETING

MODULE = ModuleInfo(name="hello", cls=ModuleClass.DRIVER)


async def hello_read(dev, uio, ioflag):
    uio.uiomove(GREETING[: uio.resid])


hello_cdevsw = Cdevsw(d_open=nullopen, d_close=nullclose, d_read=hello_read)


async def modcmd(cmd, props):
    if cmd == ModCmd.INIT:
        devsw_attach("hello", hello_cdevsw, -1)
    elif cmd == ModCmd.FINI:
        devsw_detach(hello_cdevsw)
'''


def _pip(*args: str, python: str = sys.executable) -> None:
    r = subprocess.run(
        [python, "-m", "pip", "-q", *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture(scope="module")
def wheel() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as out:
        _pip("wheel", "--no-deps", str(ROOT), "-w", out)
        (whl,) = Path(out).glob("devfsd-*.whl")
        yield whl


@pytest.fixture(scope="module")
def venv(wheel: Path) -> Iterator[Path]:
    """A fresh venv (0755, under /tmp) with the wheel and devfsd-hello installed."""
    with tempfile.TemporaryDirectory(prefix="devfsd-venv-", dir="/tmp") as d:
        os.chmod(d, 0o755)
        v = Path(d) / "venv"
        python = os.path.realpath(sys.executable)
        subprocess.run([python, "-m", "venv", "--without-pip", str(v)], check=True, timeout=120)
        site = Path(sysconfig.get_path("purelib", vars={"base": str(v), "platbase": str(v)}))
        ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
        (site / "deps.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
        _pip("--python", str(v / "bin" / "python"), "install", "--no-deps", str(wheel))
        hello = Path(d) / "hello"
        (hello / "devfsd_hello").mkdir(parents=True)
        (hello / "pyproject.toml").write_text(HELLO_PYPROJECT)
        (hello / "devfsd_hello" / "__init__.py").write_text(HELLO_DRIVER)
        (hello / "devfsd_hello" / "text.py").write_text(f"GREETING = {GREETING!r}\n")
        _pip("--python", str(v / "bin" / "python"), "install", "--no-deps", str(hello))
        shutil.rmtree(hello)
        yield v


def test_wheel_contents(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    data = "devfsd-0.1.0.data/data/share/man"
    for must in (
        "devfsd/daemon.py",
        "devfsd/modules/crandom/__init__.py",
        "devfsd/modules/mm/__init__.py",
        "devfsd/modules/tunwg/__init__.py",
        "devfsd/modules/tunwg/wg/__init__.py",
        "devfsd/testing/plugin.py",
        "devfsd/testing/harness.py",
        f"{data}/man8/devfsd.8",
        f"{data}/man8/modload.8",
        f"{data}/man4/crandom.4",
        f"{data}/man9/devfsd-module.9",
    ):
        assert must in names, must
    for mustnt in ("devfsd/testing/netns.py", "devfsd/testing/tunwg.py", "devfsd/testing/benchinfo.py"):
        assert mustnt not in names
    tops = {n.split("/")[0] for n in names}
    assert tops == {"devfsd", "devfsd-0.1.0.dist-info", "devfsd-0.1.0.data"}  # no modules/, tests/, bench/


def _run(v: Path, *argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(v / "bin" / argv[0]), *argv[1:]], cwd="/", env=env, capture_output=True, timeout=60, check=False
    )


def test_tour_from_the_installed_wheel(venv: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="devfsd-inst-", dir="/tmp"))
    dev = base / "dev"
    dev.mkdir()
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "DEVFSD_CONTROL": str(base / "ctl")}
    try:
        r = _run(venv, "devfsd", "--state", f"{base}/state", "--log", f"{base}/log", str(dev), env=env)
        assert r.returncode == 0, r.stderr
        for argv in (("modload", "crandom"), ("devfs-mknod", f"{dev}/crandom", "c", "crandom", "0")):
            r = _run(venv, *argv, env=env)
            assert (r.returncode, r.stderr) == (0, b"")
        (dev / "crandom").write_bytes(b"hello")
        with open(dev / "crandom", "rb") as f:
            assert sorted(f.read(5)) == sorted(b"hello")
        r = _run(venv, "modstat", "crandom", env=env)
        assert r.stdout.split(b"\n")[1].split()[:2] == [b"crandom", b"driver"]
        log = (base / "log").read_text()
        site = next(venv.glob("lib/python3*/site-packages"))
        assert f"loaded module crandom from {site}/devfsd/modules/crandom/__init__.py" in log

        # A third-party driver: an installed distribution with the entry point.
        for argv in (("modload", "hello"), ("devfs-mknod", f"{dev}/hello", "c", "hello", "0")):
            r = _run(venv, *argv, env=env)
            assert (r.returncode, r.stderr) == (0, b""), (base / "log").read_text()[-2000:]
        fd = os.open(dev / "hello", os.O_RDONLY)
        try:
            assert os.read(fd, 100) == GREETING
        finally:
            os.close(fd)
        assert f"loaded module hello from {site}/devfsd_hello/__init__.py" in (base / "log").read_text()
        r = _run(venv, "modload", "nosuch", env=env)
        assert r.stderr == b"modload: nosuch: No such file or directory\n"
    finally:
        subprocess.run(["umount", str(dev)], capture_output=True, timeout=30, check=False)
        wait_for(lambda: not is_mounted(dev), 10, "unmount")
        shutil.rmtree(base, ignore_errors=True)


def test_man_finds_the_installed_pages(venv: Path) -> None:
    if shutil.which("man") is None:
        pytest.skip("needs man")
    for page, section in (("devfsd", "8"), ("modload", "8"), ("crandom", "4"), ("devfsd-module", "9")):
        r = subprocess.run(
            ["man", "-M", str(venv / "share" / "man"), "-w", page], capture_output=True, text=True, timeout=30
        )
        assert r.stdout.strip() == f"{venv}/share/man/man{section}/{page}.{section}", r.stderr
    # With the venv's bin on PATH, plain `man devfsd` finds them (man-db looks
    # beside each PATH directory, in ../share/man).
    env = {"PATH": f"{venv}/bin:/usr/bin:/bin"}
    r = subprocess.run(["man", "-w", "devfsd"], capture_output=True, text=True, timeout=30, env=env)
    assert r.stdout.strip() == f"{venv}/share/man/man8/devfsd.8", r.stderr
